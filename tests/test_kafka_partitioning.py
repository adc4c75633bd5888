"""The batch partitioner places every key where Kafka's default partitioner would (the
Java client's murmur2, as aiokafka implements it), for keys of any length and bytes."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.kafka.partitioning import key_partitions
from adapters.kafka.partitioning import murmur2 as batch_murmur2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=300))
def test_murmur2_matches_the_java_clients(keys: list[bytes]) -> None:
    assert batch_murmur2(keys).tolist() == [murmur2(k) for k in keys]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=24), min_size=1, max_size=200),
       st.lists(st.integers(0, 63), min_size=1, max_size=12, unique=True))
def test_key_partitions_match_the_default_partitioner(keys: list[bytes], partitions: list[int]) -> None:
    ordered = sorted(partitions)
    expected = [DefaultPartitioner()(k, ordered, ordered) for k in keys]
    assert key_partitions(keys, partitions).tolist() == expected


def test_known_values_of_the_java_client() -> None:
    # Kafka's own UtilsTest: murmur2 of these strings, as signed Java ints
    cases = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
             b"a-little-bit-longer-string": -1486304829,
             b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}
    got = batch_murmur2(list(cases)).astype("int64")
    assert [int(v) - (1 << 32) if v >= 1 << 31 else int(v) for v in got] == list(cases.values())
