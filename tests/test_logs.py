"""Structured logs: `--log-format json` (or LGW_LOG_FORMAT=json) makes stderr one JSON
object per line carrying the run's context, stdout keeps the command's own output, and
no pii value reaches a log line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config import example_dropfolder_config
from gateway.logs import ContextFilter, JsonFormatter, current_context, log_context
from schemas.examples import generate_card_file

INPUT = "CARDTXN.DAT"


@pytest.fixture
def drop_folder(tmp_path: Path) -> Path:
    """A drop-folder config (gateway.yaml) with one card file waiting in its inbox."""
    cfg = example_dropfolder_config(f"sqlite:///{tmp_path / 'state.db'}", fmt="jsonl", batch_size=500)
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps(cfg), encoding="utf-8")
    inbox = tmp_path / "drop" / "inbox"
    inbox.mkdir(parents=True)
    generate_card_file(inbox / INPUT, records=2_000, seed=5, bad_every=500)
    return config


def lgw(lgw_cmd: list[str], *args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "LGW_LOG_FORMAT"}
    return subprocess.run([*lgw_cmd, *args], capture_output=True, text=True, timeout=180, cwd=cwd,
                          env={**environ, **(env or {})})


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as a JSON object (an assertion error names the first that is not)."""
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


def test_json_logs_are_one_object_per_line_with_the_runs_context(drop_folder: Path, lgw_cmd: list[str]) -> None:
    done = lgw(lgw_cmd, "--log-format", "json", "batch", "run", "card_txn", "--config", str(drop_folder),
               cwd=drop_folder.parent)
    assert done.returncode == 1, done.stderr[-2000:]  # the file has bad records: rejected, not a failure to run
    summaries = json_lines(done.stdout)  # stdout: the command's summary lines, nothing logged
    assert [s["input"] for s in summaries] == [INPUT]
    run_id = summaries[0]["run"]

    entries = json_lines(done.stderr)
    assert entries, "the run logs its progress"
    for entry in entries:
        assert {"ts", "level", "logger", "message"} <= entry.keys(), entry
        assert entry["ts"].endswith("Z")
        assert datetime.fromisoformat(entry["ts"]).utcoffset() is not None
        assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    of_the_run = [e for e in entries if e.get("run") == run_id]
    assert of_the_run, entries
    assert all(e["pipeline"] == "card_txn" and e["input"] == INPUT for e in of_the_run)
    assert any(f"{INPUT} done" in e["message"] for e in of_the_run)


def test_no_pii_value_reaches_a_json_log_line(drop_folder: Path, lgw_cmd: list[str]) -> None:
    done = lgw(lgw_cmd, "--log-format", "json", "batch", "run", "card_txn", "--config", str(drop_folder),
               cwd=drop_folder.parent)
    assert done.returncode == 1, done.stderr[-2000:]
    scored = drop_folder.parent / "drop" / "outbox" / f"{INPUT}.scored.jsonl"
    pans = {json.loads(line)["TXN_PAN"] for line in scored.read_text(encoding="utf-8").splitlines()}
    assert len(pans) > 100
    assert not [pan for pan in pans if pan in done.stderr]


def test_the_environment_variable_selects_json(drop_folder: Path, lgw_cmd: list[str]) -> None:
    done = lgw(lgw_cmd, "batch", "run", "card_txn", "--config", str(drop_folder), env={"LGW_LOG_FORMAT": "json"},
               cwd=drop_folder.parent)
    assert done.returncode == 1, done.stderr[-2000:]
    entries = json_lines(done.stderr)
    assert any(e.get("pipeline") == "card_txn" and e.get("run") for e in entries)


def test_the_flag_wins_over_the_environment_variable(drop_folder: Path, lgw_cmd: list[str]) -> None:
    done = lgw(lgw_cmd, "--log-format", "text", "batch", "run", "card_txn", "--config", str(drop_folder),
               env={"LGW_LOG_FORMAT": "json"}, cwd=drop_folder.parent)
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert lines
    for line in lines:
        assert not line.startswith("{"), line
        assert " INFO lgw.batch: " in line or " WARNING " in line, line
    assert any(f"{INPUT} done" in line for line in lines)


def test_an_error_is_one_json_object_too(drop_folder: Path, lgw_cmd: list[str]) -> None:
    done = lgw(lgw_cmd, "--log-format", "json", "batch", "run", "no_such_pipeline", "--config", str(drop_folder),
               cwd=drop_folder.parent)
    assert done.returncode == 2
    [entry] = json_lines(done.stderr)
    assert entry["level"] == "ERROR" and entry["logger"] == "lgw"
    assert entry["message"].startswith("error: ") and "no_such_pipeline" in entry["message"]


def test_a_bad_environment_value_is_refused_in_plain_text(lgw_cmd: list[str], tmp_path: Path) -> None:
    done = lgw(lgw_cmd, "components", env={"LGW_LOG_FORMAT": "xml"}, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "lgw: error: LGW_LOG_FORMAT='xml': expected one of auto, text, json"


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines (with the log context) into a string."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("lgw.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def test_a_traceback_goes_in_the_exc_field_of_one_line(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = json_log
    with log_context(pipeline="card_txn", run="r1"):
        try:
            raise ValueError("broken")
        except ValueError:
            logger.exception("scoring failed", extra={"record": 7, "offset": 840})
    [entry] = json_lines(out.getvalue())
    assert entry["message"] == "scoring failed" and entry["level"] == "ERROR"
    assert (entry["pipeline"], entry["run"], entry["record"], entry["offset"]) == ("card_txn", "r1", 7, 840)
    assert entry["exc"].startswith("Traceback") and "ValueError: broken" in entry["exc"]


def test_the_context_nests_is_inherited_by_tasks_and_ends_with_its_block(
        json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = json_log

    async def one_pipeline(name: str) -> None:
        with log_context(pipeline=name):
            await asyncio.sleep(0)  # the other pipeline's task runs in between
            with log_context(run=f"{name}.1", input="A.DAT"):
                await asyncio.get_running_loop().create_task(asyncio.to_thread(logger.info, "in a thread"))
            logger.info("after the run")

    async def both() -> None:
        await asyncio.gather(one_pipeline("p1"), one_pipeline("p2"))

    asyncio.run(both())
    logger.info("outside")
    entries = json_lines(out.getvalue())
    seen = {(e["message"], e.get("pipeline"), e.get("run"), e.get("input")) for e in entries}
    assert seen == {("in a thread", "p1", "p1.1", "A.DAT"), ("in a thread", "p2", "p2.1", "A.DAT"),
                    ("after the run", "p1", None, None), ("after the run", "p2", None, None),
                    ("outside", None, None, None)}
    assert current_context() == {}


def test_log_context_refuses_a_field_it_does_not_know() -> None:
    with pytest.raises(TypeError, match="unknown fields"), log_context(pan="4921810001405133"):
        pass
