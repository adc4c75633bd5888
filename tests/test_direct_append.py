"""A run's output appended through O_DIRECT (adapters.files.direct): the same bytes as
through the page cache, the exact length durable at every sync, resumable inside a block,
and written the usual way where the file system refuses."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
from pathlib import Path
from typing import Any

import pytest

import adapters.files.direct as direct
from adapters.files.direct import ALIGN, STAGE
from adapters.files.sink import ResumableFile

SIZES = [0, 1, 17, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN + 5, STAGE - 7, STAGE, STAGE + ALIGN + 3, 123_457]


def _o_direct_on(file: ResumableFile) -> bool:
    assert file._fh is not None
    return bool(fcntl.fcntl(file._fh.fileno(), fcntl.F_GETFL) & os.O_DIRECT)


def _append_and_check(file: ResumableFile, expected: bytearray, rng: random.Random, pieces: int) -> None:
    for _ in range(pieces):
        data = rng.randbytes(rng.choice(SIZES))
        file.write(memoryview(data) if rng.random() < 0.5 else data)
        expected += data
        if rng.random() < 0.4:
            assert file.sync() == len(expected)
            assert file.path.stat().st_size == len(expected)  # exactly the length: no padding left
            assert file.path.read_bytes() == bytes(expected)


def test_pieces_of_any_size_synced_anywhere_are_the_bytes_appended(tmp_path: Path) -> None:
    rng = random.Random(7)
    file = ResumableFile(tmp_path / "out.partial", direct=True)
    file.open()
    assert _o_direct_on(file)  # this machine's file system takes O_DIRECT: the path under test is the direct one
    expected = bytearray()
    _append_and_check(file, expected, rng, 60)
    file.close()
    assert file.path.read_bytes() == bytes(expected)
    assert file.sha256 == hashlib.sha256(expected).hexdigest() and file.length == len(expected)


@pytest.mark.parametrize("cut", [0, 1, ALIGN - 1, ALIGN, 5 * ALIGN + 123])
def test_a_file_resumed_inside_a_block_goes_on_from_its_checkpointed_length(tmp_path: Path, cut: int) -> None:
    rng = random.Random(cut)
    path = tmp_path / "out.partial"
    first = ResumableFile(path, direct=True)
    first.open()
    before = rng.randbytes(cut + 3 * ALIGN + 77)
    first.write(before)
    first.sync()
    first.close()  # as a killed run leaves it: more on disk than the checkpoint says
    again = ResumableFile(path, direct=True)
    again.open(cut)
    assert _o_direct_on(again) and path.stat().st_size == cut
    expected = bytearray(before[:cut])
    _append_and_check(again, expected, rng, 20)
    again.close()
    assert path.read_bytes() == bytes(expected) and again.sha256 == hashlib.sha256(expected).hexdigest()


def test_a_refused_alignment_goes_on_through_the_page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a file system that takes the O_DIRECT flag but not 4 KiB alignments answers EINVAL on the write
    real = os.pwrite
    refused = []

    def picky(fd: int, data: Any, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(direct.os, "pwrite", picky)
    rng = random.Random(3)
    file = ResumableFile(tmp_path / "out.partial", direct=True)
    file.open()
    expected = bytearray()
    _append_and_check(file, expected, rng, 30)
    assert refused and not _o_direct_on(file)
    file.close()
    assert file.path.read_bytes() == bytes(expected)


def test_without_o_direct_the_file_is_written_the_usual_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct, "_O_DIRECT", 0)  # another platform, or a file system without it
    rng = random.Random(5)
    file = ResumableFile(tmp_path / "out.partial", direct=True)
    file.open()
    assert file._appender is None
    expected = bytearray()
    _append_and_check(file, expected, rng, 30)
    file.close()
    assert file.path.read_bytes() == bytes(expected)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_one_shot_output_keeps_no_digest_and_a_published_one_does(tmp_path: Path, fmt: str) -> None:
    """`lgw score`'s output (`OutboxSink.over`) has no manifest: its bytes are not hashed as
    they are written; a drop folder's output (`OutboxSink`) names its sha256 in the manifest."""
    import asyncio

    import numpy as np
    import pyarrow as pa

    from adapters.base import ScoredBatch, SourceBatch
    from adapters.files.sink import OutboxSink
    from schemas.safefiles import NewFile

    table = pa.table({"TXN_ID": ["a", "b,c", "d"], "fraud_score": [0.25, 0.5, 0.75]})

    async def write(sink: OutboxSink) -> dict[str, Any]:
        await sink.open()
        await sink.write([sink.prepare(ScoredBatch(table, np.arange(3), SourceBatch(table)))])
        done = await sink.finish()
        await sink.publish()
        return done

    one_shot = OutboxSink.over(NewFile(tmp_path / f"once.{fmt}", suffix=".partial"), fmt)
    published = OutboxSink(tmp_path / f"kept.{fmt}", fmt)
    published.start()
    once, kept = asyncio.run(write(one_shot)), asyncio.run(write(published))
    assert "sha256" not in once and once["records"] == 3 and once["bytes"] == (tmp_path / f"once.{fmt}").stat().st_size
    assert kept["sha256"] == hashlib.sha256((tmp_path / f"kept.{fmt}").read_bytes()).hexdigest()
    assert (tmp_path / f"once.{fmt}").read_bytes() == (tmp_path / f"kept.{fmt}").read_bytes() or fmt == "parquet"
