"""Kafka scale-out, shown with real processes: three `lgw serve` processes in one consumer
group on an input topic of six partitions (a Tansu broker, the bundled ONNX model in each
process). The load spreads over all three; one is SIGKILLed (its whole process group) in
the middle of a stream; the other two take over its partitions once the broker expires its
session; every input ends up in the result topic or the dead-letter topic.

Duplicates, and how they are bounded: a batch's offsets are committed only after its
results and dead letters are durable (gateway.drivers.stream: one write in flight, batch N
acked once N+1's write may start). So when a process dies, at most two of its micro-batches
were written without being committed: at most 2 x max_records records of the partitions it
held, all at or after the offsets the group had committed for them when it died; the new
owner reads them again from there. A survivor whose partitions are revoked by a rebalance
(aiokafka's eager protocol revokes all, and the range assignor moves some) can have its
own last two batches' commits left out (no commit while it rebalances) or refused: another
2 x max_records each time. So the duplicates are at most 2 x max_records x (1 + the
survivors' rebalances, from their logs), every one at or after the group's commit at the
kill. Nothing else is read twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import test_realtime_kafka as realtime_kafka
from tests.kafka_broker import TansuBroker
from tests.realtime_data import copybook_records, until
from tests.test_realtime_kafka import (
    Sent,
    ServeProcess,
    Topics,
    committed_offsets,
    config_dict,
    end_offsets,
    header_of,
    keyed,
    produce,
)

readers = realtime_kafka.readers  # fixtures of the real-time tests, used here too
serve_processes = realtime_kafka.serve_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 6
BATCH = 50  # max_records of each micro-batch
FIRST, STREAM = 900, 2100  # records before the kill, and a paced stream the kill lands in
SESSION_MS = 6000  # the victim's partitions move once the broker has expired its session


def with_malformed(records: list[bytes], prefix: str, every: int) -> list[tuple[bytes | None, bytes]]:
    """Keyed records, every `every`-th one cut a byte short (a decode error: a dead letter)."""
    items = keyed(records, prefix)
    for i in range(every // 2, len(items), every):
        key, value = items[i]
        assert key is not None
        items[i] = (b"bad-" + key, value[:-1])
    return items


def bad(sent: list[Sent]) -> set[str]:
    return {s.id for s in sent if s.key is not None and s.key.startswith(b"bad-")}


def kill_group(p: ServeProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.process.pid, signal.SIGKILL)
    p.process.wait(timeout=30)


async def test_three_processes_share_six_partitions_and_survive_one_killed(
        kafka_broker: TansuBroker, tmp_path: Path, readers: Any, lgw_cmd: list[str],
        serve_processes: list[ServeProcess]) -> None:
    bootstrap = kafka_broker.bootstrap
    t = Topics.create(kafka_broker, "scale", partitions=PARTITIONS)
    results, dlq = await readers(bootstrap, t.results), await readers(bootstrap, t.dlq)
    instances = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        doc = config_dict(tmp_path / name, bootstrap, {"cards": t.source(max_records=BATCH, payload="copybook")},
                          client_id=f"lgw-{name}", session_timeout_ms=SESSION_MS, heartbeat_interval_ms=1000)
        path = tmp_path / name / "gateway.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        instances.append(ServeProcess(lgw_cmd, path, name))
    serve_processes.extend(instances)

    def assignments(procs: list[ServeProcess]) -> list[set[int]]:
        for p in procs:
            p.check_alive()
        return [p.assigned(t.input) or set() for p in procs]

    def shared_by(procs: list[ServeProcess]) -> bool:
        """Every member has partitions, together all six, none twice."""
        sets = assignments(procs)
        return all(sets) and set().union(*sets) == set(range(PARTITIONS)) and sum(map(len, sets)) == PARTITIONS

    def rebalances(p: ServeProcess) -> int:
        """How many assignments of the input topic the process has logged."""
        return sum(1 for line in p.stderr.splitlines() if "assigned to partitions" in line and t.input in line)

    await until(lambda: shared_by(instances), 180, "the three processes to share the six partitions")
    held = dict(zip("abc", assignments(instances), strict=True))

    # ---- 1. a first load: every process takes its share (its own /metrics say so)
    first = await produce(bootstrap, t.input, with_malformed(copybook_records(0, FIRST), "first", 150))
    assert {s.partition for s in first} == set(range(PARTITIONS))
    await results.wait_for([s.id for s in first if s.id not in bad(first)], timeout=120)
    await dlq.wait_for(bad(first), header="lgw-source", timeout=120)

    def records_in(p: ServeProcess) -> float:
        return p.sample("lgw_records_in_total", pipeline="cards", source="kafka")

    await until(lambda: sum(records_in(p) for p in instances) == len(first), 60, "every record counted in")
    share = {p.name: records_in(p) for p in instances}
    for p in instances:
        # a process handles exactly the records of the partitions it holds (no rebalance yet)
        assert share[p.name] == sum(1 for s in first if s.partition in held[p.name]) > 0, (p.name, share, held)

    # ---- 2. a paced stream; one process dies in its middle (SIGKILL to its process group)
    victim, survivors = instances[0], instances[1:]
    stream = asyncio.create_task(produce(bootstrap, t.input, with_malformed(copybook_records(FIRST, STREAM),
                                                                            "stream", 150), pace_s=0.004))
    await until(lambda: len(results.ids()) >= len(first) + 300, 120, "the stream to be under way")
    victim_in = records_in(victim)
    rebalances_before = {p.name: rebalances(p) for p in survivors}
    kill_group(victim)
    answered_at_kill = len(results.ids()) + len(dlq.ids("lgw-source"))
    # what the group had committed when it died (its partitions move only after SESSION_MS)
    committed_at_kill = await committed_offsets(bootstrap, t.group, t.input, partitions=PARTITIONS)
    sent = first + await stream
    assert answered_at_kill < len(sent) - 300, "the victim was killed after the stream, not in its middle"

    good, dead = {s.id for s in sent} - bad(sent), bad(sent)
    await results.wait_for(good, timeout=240)
    await dlq.wait_for(dead, header="lgw-source", timeout=240)
    await until(lambda: shared_by(survivors), 120, "the two survivors to share the six partitions")
    after = assignments(survivors)
    assert held["a"] <= after[0] | after[1]  # the victim's partitions were taken over

    # every offset is committed once all is answered
    ends = end_offsets(sent, PARTITIONS)

    async def all_committed() -> bool:
        return await committed_offsets(bootstrap, t.group, t.input, partitions=PARTITIONS) == ends

    for _ in range(240):  # the last batches' commits follow their writes (after a rebalance: a re-read)
        if await all_committed():
            break
        await asyncio.sleep(0.5)
    committed = await committed_offsets(bootstrap, t.group, t.input, partitions=PARTITIONS)
    assert committed == ends, (committed, ends, [p.stderr[-2000:] for p in survivors])
    for p in survivors:
        p.check_alive()
        p.signal(signal.SIGTERM)
        assert await asyncio.to_thread(p.process.wait, 60) == 0, p.stderr[-3000:]

    # ---- 3. accounting: every input once at least, in results or dead letters, never both
    by_id, by_source = results.by_id(), dlq.by_id("lgw-source")
    assert set(by_id) == good, f"results for {len(good - set(by_id))} fewer / {len(set(by_id) - good)} other ids"
    assert set(by_source) == dead
    for recs in by_id.values():
        assert len({(r.key, r.value) for r in recs}) == 1  # a duplicate is the same result again
    for recs in by_source.values():
        assert len({(r.key, r.value, header_of(r, "lgw-error")) for r in recs}) == 1
        assert header_of(recs[0], "lgw-error") == "decode"
    src = {s.id: s for s in sent}
    copies = Counter({i: len(r) - 1 for i, r in {**by_id, **by_source}.items() if len(r) > 1})
    duplicates = sum(copies.values())
    assert len(results.records) + len(dlq.records) == len(sent) + duplicates

    # ---- 4. the duplicates are bounded by the batches left uncommitted
    for i in copies:  # read again from where the group's commit stood when the victim died
        assert src[i].offset >= committed_at_kill[src[i].partition], (i, committed_at_kill)
    # the victim's last two batches, and two of each survivor's each time a rebalance took
    # partitions from it (by the partitions each held before the kill, for the report)
    survived = {p.name: rebalances(p) - rebalances_before[p.name] for p in survivors}
    bound = 2 * BATCH * (1 + sum(survived.values()))
    assert duplicates <= bound, (copies, survived)
    on_victims = sum(n for i, n in copies.items() if src[i].partition in held["a"])
    on_survivors = {p.name: sum(n for i, n in copies.items() if src[i].partition in held[p.name])
                    for p in survivors}
    handled = [p.stats()["cards"] for p in survivors]
    survivors_in = sum(h["messages"] for h in handled)
    assert victim_in > share["a"]  # it was killed while it was reading the stream
    assert sum(h["results"] + h["dead_letters"] for h in handled) == survivors_in
    print(f"\nscale-out: held {held}; first load {share}; victim read {victim_in:.0f} before SIGKILL, "
          f"committed then {committed_at_kill}; survivors now hold {after}, read {survivors_in}; "
          f"{len(sent)} inputs ({len(dead)} dead letters), {duplicates} duplicates "
          f"({on_victims} on the victim's partitions, on the survivors' {on_survivors}; rebalances the survivors "
          f"went through {survived}: bound 2 x {BATCH} x (1 + {sum(survived.values())}) = {bound})")
