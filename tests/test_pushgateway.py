"""`lgw batch run` (a job that exits) pushes its metrics to a real Prometheus Pushgateway
(Debian's prometheus-pushgateway) when one is configured, and always writes its own
figures into the run's manifest."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics import REASON_CLASSES
from tests.helpers import unavailable
from tests.lgw_processes import parse_samples
from tests.model_servers import ModelServerProcess, started
from tests.test_batch import drop, manifest_of, write_config

PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
RECORDS = 1_200


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[ModelServerProcess]:
    """A Pushgateway of the test's own, on a free loopback port, in memory."""
    binary = shutil.which("prometheus-pushgateway") or PUSHGATEWAY
    if not Path(binary).exists():
        unavailable("prometheus-pushgateway is not installed (scripts/system-packages.sh installs it)")
    server = ModelServerProcess("pushgateway", lambda port: [binary, f"--web.listen-address=127.0.0.1:{port}"],
                                ready_paths=["/-/ready"], log_dir=tmp_path)
    with started(server):
        yield server


def pushed(base_url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """What the Pushgateway holds: {sample name: [(labels, value)]}."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        return parse_samples(response.read().decode("utf-8"))


def batch_run(lgw_cmd: list[str], config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*lgw_cmd, "batch", "run", "card_txn", "--config", str(config), "--no-progress", *extra],
                          capture_output=True, text=True, timeout=300)


def only(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    hits = [v for lbl, v in samples if all(lbl.get(k) == want for k, want in labels.items())]
    assert len(hits) == 1, f"expected one sample with {labels}, found {len(hits)}: {samples}"
    return hits[0]


def figures(manifest: dict[str, Any], name: str, label: str) -> dict[str, float]:
    return {s["labels"][label]: s["value"] for s in manifest["metrics"].get(name, [])}


def test_the_manifest_carries_the_runs_metrics_under_their_prometheus_names(tmp_path: Path,
                                                                           lgw_cmd: list[str]) -> None:
    config = write_config(tmp_path)
    drop(tmp_path, records=RECORDS, bad_every=100)
    done = batch_run(lgw_cmd, config)
    assert done.returncode == 1, done.stderr  # rejects
    manifest = manifest_of(tmp_path)
    counts, metrics = manifest["counts"], manifest["metrics"]
    assert metrics["lgw_records_in_total"] == [
        {"labels": {"pipeline": "card_txn", "source": "dropfolder"}, "value": counts["records_in"]}]
    assert figures(manifest, "lgw_records_out_total", "scored_by") == manifest["scored_by"]
    by_reason = figures(manifest, "lgw_records_rejected_total", "reason")
    assert sum(by_reason.values()) == counts["rejected"] > 0
    assert set(by_reason) <= set(REASON_CLASSES)
    assert figures(manifest, "lgw_batch_runs_total", "status") == {"rejects": 1}


def test_batch_run_pushes_its_series_to_a_real_pushgateway(tmp_path: Path, lgw_cmd: list[str],
                                                          pushgateway: ModelServerProcess) -> None:
    config = write_config(tmp_path)
    drop(tmp_path, records=RECORDS, bad_every=100)
    done = batch_run(lgw_cmd, config, "--pushgateway", pushgateway.base_url)
    assert done.returncode == 1, done.stderr
    manifest = manifest_of(tmp_path)
    series = pushed(pushgateway.base_url)
    group = {"job": "lgw_batch", "pipeline": "card_txn"}
    assert only(series["lgw_records_in_total"], **group) == manifest["counts"]["records_in"]
    for scored_by, n in manifest["scored_by"].items():
        assert only(series["lgw_records_out_total"], **group, scored_by=scored_by) == n
    for reason, n in figures(manifest, "lgw_records_rejected_total", "reason").items():
        assert only(series["lgw_records_rejected_total"], **group, reason=reason) == n
    assert only(series["lgw_batch_runs_total"], **group, status="rejects") == 1
    # the Pushgateway stamps each push: the alert rules read push_time_seconds for "no run lately"
    assert only(series["push_time_seconds"], **group) > 0


def test_pushgateway_from_the_config_and_a_second_pipeline_keeps_its_own_group(
        tmp_path: Path, lgw_cmd: list[str], pushgateway: ModelServerProcess) -> None:
    config = write_config(tmp_path)
    data = json.loads(config.read_text())
    data["pushgateway"] = {"url": pushgateway.base_url, "job": "nightly"}
    data["pipelines"]["other"] = {**data["pipelines"]["card_txn"],
                                  "source": {**data["pipelines"]["card_txn"]["source"],
                                             "inbox": "var/other/inbox", "outbox": "var/other/outbox"}}
    config.write_text(json.dumps(data))
    drop(tmp_path, records=300, bad_every=0)
    assert batch_run(lgw_cmd, config).returncode == 0
    other = subprocess.run([*lgw_cmd, "batch", "run", "other", "--config", str(config), "--no-progress"],
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr
    series = pushed(pushgateway.base_url)
    assert only(series["lgw_records_in_total"], job="nightly", pipeline="card_txn") == 300
    # the second pipeline's push (nothing in its inbox) did not replace the first one's group
    assert only(series["lgw_batch_runs_total"], job="nightly", pipeline="card_txn", status="ok") == 1
    assert any(lbl.get("pipeline") == "other" for lbl, _ in series["push_time_seconds"])


def test_an_unreachable_pushgateway_is_a_warning_and_the_exit_code_stays_the_runs(tmp_path: Path,
                                                                                  lgw_cmd: list[str]) -> None:
    from tests.model_servers import free_port

    config = write_config(tmp_path)
    drop(tmp_path, records=300, bad_every=0)
    url = f"http://127.0.0.1:{free_port()}"
    done = batch_run(lgw_cmd, config, "--pushgateway", url)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "Pushgateway" in line]
    assert len(lines) == 1 and url in lines[0] and "failed" in lines[0], done.stderr
    assert manifest_of(tmp_path)["counts"]["records_in"] == 300


def test_a_pushgateway_password_variable_that_is_not_set_is_one_error_line_before_the_run(
        tmp_path: Path, lgw_cmd: list[str]) -> None:
    config = write_config(tmp_path)
    data = json.loads(config.read_text())
    data["pushgateway"] = {"url": "http://127.0.0.1:9", "username": "lgw", "password_env": "LGW_TEST_PG_PASSWORD"}
    config.write_text(json.dumps(data))
    drop(tmp_path, records=300, bad_every=0)
    done = batch_run(lgw_cmd, config)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "lgw: error: pushgateway.password_env: expected variable LGW_TEST_PG_PASSWORD (or "
        "LGW_TEST_PG_PASSWORD_FILE) to hold the Pushgateway password, found neither set"]
    assert list((tmp_path / "drop" / "inbox").iterdir())  # nothing was taken
