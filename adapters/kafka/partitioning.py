"""Kafka's default partitioner (the Java client's murmur2 of the key), for a whole batch of
keys at once: aiokafka's pure-Python murmur2 costs a few microseconds a record, a large
share of a micro-batch. Keys of one length are hashed together as a uint32 matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_SEED = np.uint32(0x9747B28C)
_M = np.uint32(0x5BD1E995)


def murmur2(keys: Sequence[bytes]) -> np.ndarray:
    """The Java client's Utils.murmur2 of every key, as uint32."""
    out = np.empty(len(keys), dtype=np.uint32)
    lengths = np.fromiter((len(k) for k in keys), dtype=np.int64, count=len(keys))
    with np.errstate(over="ignore"):
        for length in np.unique(lengths).tolist():
            rows = np.flatnonzero(lengths == length)
            out[rows] = _murmur2_same_length([keys[i] for i in rows.tolist()], length)
    return out


def _murmur2_same_length(keys: list[bytes], length: int) -> np.ndarray:
    data = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), length)
    h = np.full(len(keys), _SEED ^ np.uint32(length & 0xFFFFFFFF), dtype=np.uint32)
    whole = length // 4 * 4
    if whole:
        words = np.ascontiguousarray(data[:, :whole]).view("<u4")
        for j in range(words.shape[1]):
            k = words[:, j] * _M
            k ^= k >> np.uint32(24)
            k *= _M
            h *= _M
            h ^= k
    extra = length - whole
    if extra >= 3:
        h ^= data[:, whole + 2].astype(np.uint32) << np.uint32(16)
    if extra >= 2:
        h ^= data[:, whole + 1].astype(np.uint32) << np.uint32(8)
    if extra >= 1:
        h ^= data[:, whole].astype(np.uint32)
        h *= _M
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def key_partitions(keys: Sequence[bytes], partitions: Sequence[int]) -> np.ndarray:
    """The partition the default partitioner picks for each key (partitions sorted by id)."""
    table = np.asarray(sorted(partitions), dtype=np.int64)
    return table[(murmur2(keys) & np.uint32(0x7FFFFFFF)).astype(np.int64) % len(table)]
