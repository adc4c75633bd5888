"""The console's runs area: runs and their manifests and reports, replays, the rejects
browser, drift and quality per pipeline; API and pages.

A real drop-folder run (`lgw batch run`) over a generated card file with rejects of every
kind, one of them on the pii field TXN-PAN, against a real SQLite state store; the app is
the real ops app (gateway.console.app.build_ops_app) driven by Starlette's TestClient with
bearer tokens of a tokens file of the test's own. The replay goes through a real `lgw run`
process and its ops address."""

from __future__ import annotations

import contextlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.cli import main
from gateway.config import example_dropfolder_config, load_config
from gateway.console.app import build_ops_app
from gateway.console.auth import add_to_tokens_file
from gateway.console.context import build_console
from gateway.exit_codes import EXIT_REJECTS
from gateway.governance.audit_sql import ActionLog
from gateway.governance.audit_tables import ensure_tables
from gateway.ops_http import Readiness
from gateway.state import StateStore
from schemas.examples import contract_path, generate_card_file
from tests.lgw_processes import LgwProcess

RECORDS = 300
BAD_PAN = "4921XXSECRET0042"  # a PAN that fails its pattern: a reject on a pii field
PAN_RECORD = 50  # the detail record (1-based) whose PAN is damaged


@dataclass
class World:
    root: Path
    config: Path
    tokens: dict[str, str]
    run_id: str
    clear_pans: list[str]  # PANs of the file in clear: none may appear in any answer


def write_world(root: Path) -> tuple[Path, dict[str, str]]:
    cfg = example_dropfolder_config(f"sqlite:///{root / 'state.db'}", fmt="jsonl", batch_size=100)
    tokens_file = root / "console-tokens.yaml"
    cfg["console"] = {"tokens_file": str(tokens_file)}
    cfg["pipelines"]["card_stream"] = {  # a streaming pipeline: its rejects go to a DLQ the console cannot read
        "contract": str(contract_path("card_txn")), "model": "fraud",
        "source": {"type": "kafka", "topics": ["cards.in"], "group_id": "g", "dlq_topic": "cards.dlq",
                   "result_topic": "cards.out"}}
    cfg["kafka"] = {"bootstrap_servers": "127.0.0.1:9"}
    root.mkdir(parents=True, exist_ok=True)
    config = root / "gateway.yaml"
    config.write_text(json.dumps(cfg), encoding="utf-8")
    tokens = {role: add_to_tokens_file(tokens_file, f"t-{role}", [role])
              for role in ("viewer", "operator", "reviewer")}
    return config, tokens


def card_file(path: Path) -> list[str]:
    """A card file with rejects every 100 records and a damaged PAN; its PANs in clear."""
    generate_card_file(path, records=RECORDS, seed=11, bad_every=100)
    data = bytearray(path.read_bytes())
    start = PAN_RECORD * 120 + 13
    data[start:start + 16] = BAD_PAN.encode("cp037")
    path.write_bytes(bytes(data))
    text = bytes(data).decode("cp037")
    return sorted({text[k * 120 + 13: k * 120 + 29] for k in range(1, RECORDS + 1)} - {BAD_PAN})


@pytest.fixture
def world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> World:
    config, tokens = write_world(tmp_path)
    pans = card_file(tmp_path / "drop" / "inbox" / "CARDTXN.DAT")
    assert main(["batch", "run", "card_txn", "--config", str(config)]) == EXIT_REJECTS
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["rejected"] == 4
    return World(tmp_path, config, tokens, summary["run"], pans)


@contextlib.contextmanager
def console_client(world: World) -> Iterator[TestClient]:
    """The real ops app of `lgw console` over the world's config and state store."""
    cfg = load_config(world.config)
    with StateStore(cfg.state.url) as state:
        console = build_console(cfg, state, process="console")
        assert console is not None
        with TestClient(build_ops_app(Readiness(), console), base_url="http://127.0.0.1") as c:
            yield c


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with console_client(world) as c:
        yield c


def auth(world: World, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.tokens[role]}"}


def no_pii(world: World, text: str) -> None:
    assert BAD_PAN not in text
    leaked = [p for p in world.clear_pans if p in text]
    assert not leaked, f"PANs in clear: {leaked[:3]}"


# --------------------------------------------------------------------------- runs
def test_runs_are_listed_newest_first_with_their_counts_and_filters(world: World, client: TestClient) -> None:
    r = client.get("/api/v1/runs", headers=auth(world, "viewer"))
    assert r.status_code == 200, r.text
    [run] = r.json()
    assert run["run_id"] == world.run_id and run["pipeline"] == "card_txn" and run["status"] == "done"
    assert (run["records_in"], run["records_out"], run["rejected"]) == (RECORDS, RECORDS - 4, 4)
    assert client.get("/api/v1/runs?status=failed", headers=auth(world, "viewer")).json() == []
    assert len(client.get("/api/v1/runs?pipeline=card_txn&status=done&limit=1",
                          headers=auth(world, "viewer")).json()) == 1
    assert client.get("/api/v1/runs?pipeline=card_stream", headers=auth(world, "viewer")).json() == []
    for bad, status in (("limit=0", 422), ("limit=501", 422), ("status=burning", 422), ("pipeline=a%20b", 422),
                        ("pipeline=nope", 404), ("limit=x", 422)):
        assert client.get(f"/api/v1/runs?{bad}", headers=auth(world, "viewer")).status_code == status, bad
    assert client.get("/api/v1/runs").status_code == 401


def test_a_run_comes_with_its_manifest_and_pii_stays_masked(world: World, client: TestClient) -> None:
    r = client.get(f"/api/v1/runs/{world.run_id}", headers=auth(world, "viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    m = body["manifest"]
    assert body["run"]["run_id"] == world.run_id and body["manifest_note"] is None
    assert m["run_id"] == world.run_id and m["counts"]["rejected"] == 4
    assert m["pii"] == {"TXN_PAN": "mask"} and m["quality"]["reject_rate"] > 0
    assert {"timeline", "examples", "outputs"} <= set(m)
    no_pii(world, r.text)
    assert client.get("/api/v1/runs/card_txn.nope", headers=auth(world, "viewer")).status_code == 404
    assert client.get("/api/v1/runs/a%20b", headers=auth(world, "viewer")).status_code == 422


def test_a_runs_report_is_its_page_with_a_csp_that_lets_the_console_frame_it(world: World,
                                                                             client: TestClient) -> None:
    from gateway.governance.report import CSP

    r = client.get(f"/api/v1/runs/{world.run_id}/report", headers=auth(world, "viewer"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP + "; frame-ancestors 'self'"
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    assert r.headers["x-content-type-options"] == "nosniff"  # the middleware's other headers are still there
    assert world.run_id in r.text and "<script" not in r.text
    no_pii(world, r.text)
    assert client.get("/api/v1/runs/card_txn.nope/report", headers=auth(world, "viewer")).status_code == 404
    assert client.get(f"/api/v1/runs/{world.run_id}/report").status_code == 401


# --------------------------------------------------------------------------- rejects
def test_rejects_are_listed_with_filters_and_the_pii_field_withheld(world: World, client: TestClient) -> None:
    r = client.get("/api/v1/rejects", headers=auth(world, "viewer"))
    assert r.status_code == 200, r.text
    page = r.json()
    no_pii(world, r.text)
    items = page["items"]
    assert len(items) == 4 and page["more"] is False and {i["run_id"] for i in items} == {world.run_id}
    by_field = {i["field"].rsplit(".", 1)[-1]: i for i in items}
    assert set(by_field) == {"TXN_PAN", "COUNTRY", "CASHBACK_AMOUNT", "BALANCE"}
    pan = by_field["TXN_PAN"]
    assert pan["raw"] is None and pan["raw_withheld"] == "pii" and "withheld" in pan["reason"]
    assert pan["record"] == PAN_RECORD + 1 and pan["offset"] == PAN_RECORD * 120 + 13
    assert by_field["COUNTRY"]["raw"] == "A4A2" and by_field["COUNTRY"]["reason_class"] == "validation"
    assert by_field["BALANCE"]["reason_class"] == "decode"
    sources = {s["pipeline"]: s for s in page["sources"]}
    assert sources["card_txn"]["readable"] and sources["card_txn"]["kind"] == "file"
    assert not sources["card_stream"]["readable"] and "cards.dlq" in sources["card_stream"]["note"]

    def get(query: str) -> dict[str, Any]:
        resp = client.get(f"/api/v1/rejects?{query}", headers=auth(world, "viewer"))
        assert resp.status_code == 200, (query, resp.text)
        doc: dict[str, Any] = resp.json()
        return doc

    assert [i["field"] for i in get("reason=decode")["items"]] == ["CARD_TXN.CASHBACK_AMOUNT", "CARD_TXN.BALANCE"]
    assert [i["record"] for i in get("field=COUNTRY")["items"]] == [101]
    assert [i["record"] for i in get("field=card_txn.txn-pan")["items"]] == [PAN_RECORD + 1]
    assert get(f"run={world.run_id}&pipeline=card_txn&reason=validation")["items"][0]["field"] == "CARD_TXN.TXN_PAN"
    assert get("run=card_txn.other")["items"] == []
    first, second = get("limit=3"), get("limit=3&offset=3")
    assert len(first["items"]) == 3 and first["more"] and len(second["items"]) == 1 and not second["more"]
    assert [i["record"] for i in first["items"] + second["items"]] == [i["record"] for i in items]
    stream = get("pipeline=card_stream")
    assert stream["items"] == [] and [s["readable"] for s in stream["sources"]] == [False]
    for bad, status in (("limit=501", 422), ("limit=0", 422), ("offset=-1", 422), ("reason=cosmic", 422),
                        ("field=%3Cscript%3E", 422), ("run=..%2F..%2Fetc", 422), ("pipeline=nope", 404)):
        assert client.get(f"/api/v1/rejects?{bad}", headers=auth(world, "viewer")).status_code == status, bad


def test_a_pii_fields_bytes_in_a_rejects_line_are_withheld_again(world: World, client: TestClient) -> None:
    """Should a rejects line ever carry a pii field's bytes, the console still withholds them."""
    path = world.root / "drop" / "outbox" / "CARDTXN.DAT.rejects.jsonl"
    planted = {"record": 7, "record_offset": 840, "field": "CARD_TXN.TXN_PAN", "field_offset": 13, "offset": 853,
               "length": 16, "raw": BAD_PAN.encode("cp037").hex().upper(),
               "reason": f"does not match the pattern: '{BAD_PAN}'"}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(planted) + "\n")
    r = client.get("/api/v1/rejects?field=TXN_PAN", headers=auth(world, "viewer"))
    assert r.status_code == 200
    assert planted["raw"] not in r.text and BAD_PAN not in r.text
    assert [(i["record"], i["raw"], i["raw_withheld"]) for i in r.json()["items"]] == [(51, None, "pii"),
                                                                                       (7, None, "pii")]


# --------------------------------------------------------------------------- drift and quality
def test_drift_and_quality_of_a_batch_and_a_streaming_pipeline(world: World, client: TestClient) -> None:
    r = client.get("/api/v1/pipelines/card_txn/drift", headers=auth(world, "viewer"))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["kind"] == "batch" and d["run_id"] == world.run_id and d["source"] == f"run {world.run_id}"
    assert d["quality"]["reject_rate"] == d["reject_ratio"] > 0
    assert d["drift"] is None and "no drift reference" in d["note"]
    s = client.get("/api/v1/pipelines/card_stream/drift", headers=auth(world, "viewer")).json()
    assert s["kind"] == "stream" and s["source"] == "none" and s["note"].startswith("no figures")
    assert client.get("/api/v1/pipelines/nope/drift", headers=auth(world, "viewer")).status_code == 404
    assert client.get("/api/v1/pipelines/a%20b/drift", headers=auth(world, "viewer")).status_code == 422


# --------------------------------------------------------------------------- replay
def test_replay_needs_an_operator_and_a_process_that_runs_the_pipeline(world: World, client: TestClient) -> None:
    url = f"/api/v1/runs/{world.run_id}/replay"
    assert client.post(url, json={"reason": "INC-1"}).status_code == 401
    r = client.post(url, json={"reason": "INC-1"}, headers=auth(world, "viewer"))
    assert r.status_code == 403 and "token:t-viewer may not operate" in r.json()["detail"]
    assert client.post(url, json={"reason": "INC-1"}, headers=auth(world, "reviewer")).status_code == 403
    r = client.post(url, json={"reason": "INC-1"}, headers=auth(world, "operator"))
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert "lgw console" in detail and "lgw run" in detail and "\n" not in detail
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 501}, {"reason": "x", "extra": 1},
                 {"reason": "INC\x001"}, {"reason": "two\nlines"}):
        assert client.post(url, json=body, headers=auth(world, "operator")).status_code == 422, body
    assert client.post("/api/v1/runs/card_txn.nope/replay", json={"reason": "x"},
                       headers=auth(world, "operator")).status_code == 404


def post_json(url: str, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def get_json(url: str, token: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.integration
def test_an_operator_replays_a_run_through_lgw_run_and_it_is_audited(world: World, lgw_cmd: list[str],
                                                                      lgw_processes: list[LgwProcess]) -> None:
    gw = LgwProcess(lgw_cmd, ["run", "--config", str(world.config)], world.root)
    lgw_processes.append(gw)
    base = gw.url
    viewer, operator = world.tokens["viewer"], world.tokens["operator"]
    status, body = post_json(f"{base}/api/v1/runs/{world.run_id}/replay", {"reason": "INC-7 rerun"}, viewer)
    assert status == 403, body
    status, body = post_json(f"{base}/api/v1/runs/{world.run_id}/replay", {"reason": "INC-7 rerun"}, operator)
    assert status == 202, body
    assert body["replay_of"] == world.run_id and body["pipeline"] == "card_txn" and body["status"] == "started"

    def replayed() -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = get_json(f"{base}/api/v1/runs?pipeline=card_txn&status=done", viewer)
        return [r for r in runs if r["replay_of"] == world.run_id]

    gw.wait_for(lambda: bool(replayed()), "the replay's run is done")
    [again] = replayed()
    assert again["records_in"] == RECORDS and again["rejected"] == 4
    page = get_json(f"{base}/api/v1/rejects?run={again['run_id']}", viewer)
    assert len(page["items"]) == 4
    assert gw.stop() == 0
    with StateStore(load_config(world.config).state.url) as state:
        ensure_tables(state)
        [action] = ActionLog(state).actions(pipeline="card_txn", action_prefix="batch.replay")
    assert (action.actor, action.target, action.reason) == ("token:t-operator", world.run_id, "INC-7 rerun")


# --------------------------------------------------------------------------- pages
def test_the_runs_pages_render_for_a_viewer_and_an_operator(world: World, client: TestClient) -> None:
    page = client.get("/console/runs?pipeline=card_txn&status=done", headers=auth(world, "viewer"))
    assert page.status_code == 200 and f'href="/console/runs/{world.run_id}"' in page.text
    assert client.get("/console/runs?status=&pipeline=", headers=auth(world, "viewer")).status_code == 200
    assert client.get("/console/runs?status=burning", headers=auth(world, "viewer")).status_code == 422

    run = client.get(f"/console/runs/{world.run_id}", headers=auth(world, "viewer"))
    assert run.status_code == 200
    assert re.search(rf'<iframe sandbox [^>]*src="/api/v1/runs/{re.escape(world.run_id)}/report"', run.text)
    assert "frame-src 'self'" in run.headers["content-security-policy"]
    assert "Replay" not in run.text  # a viewer sees no replay form
    no_pii(world, run.text)
    op = client.get(f"/console/runs/{world.run_id}", headers=auth(world, "operator")).text
    assert "lgw batch replay" in op  # this process cannot replay: it says where to
    assert client.get("/console/runs/card_txn.nope", headers=auth(world, "viewer")).status_code == 404

    r = client.post(f"/console/runs/{world.run_id}/replay", data={"reason": "INC-2"},
                    headers=auth(world, "operator"), follow_redirects=False)
    assert r.status_code == 303 and "lgw%20run" in r.headers["location"]
    assert client.post(f"/console/runs/{world.run_id}/replay", data={"reason": "INC-2"},
                       headers=auth(world, "viewer")).status_code == 403
    r = client.post(f"/console/runs/{world.run_id}/replay", data={"reason": "INC\x002"},
                    headers=auth(world, "operator"), follow_redirects=False)
    assert r.status_code == 303 and "one%20line" in r.headers["location"]

    rejects = client.get(f"/console/rejects?pipeline=card_txn&run={world.run_id}&reason=&field=",
                         headers=auth(world, "viewer"))
    assert rejects.status_code == 200 and rejects.text.count("<tr>") == 1 + 4
    assert "withheld (pii)" in rejects.text and "cards.dlq" not in rejects.text  # card_txn's only
    no_pii(world, rejects.text)
    only = client.get("/console/rejects?reason=decode", headers=auth(world, "viewer")).text
    assert only.count("<tr>") == 1 + 2 and "card_stream: rejects go to Kafka topic cards.dlq" in only
    assert client.get("/console/rejects?reason=cosmic", headers=auth(world, "viewer")).status_code == 422

    drift = client.get("/console/partials/drift/card_txn", headers={**auth(world, "viewer"),
                                                                    "X-Console-Partial": "1"})
    assert drift.status_code == 200 and world.run_id in drift.text and "<html" not in drift.text
    full = client.get("/console/pipelines/card_stream/drift", headers=auth(world, "viewer"))
    assert full.status_code == 200 and "no figures" in full.text
    assert 'data-refresh="/console/partials/drift/card_stream"' in full.text
    assert client.get("/console/partials/drift/card_txn", headers={"X-Console-Partial": "1"}).status_code == 401


def test_a_page_without_a_login_goes_to_the_login_page(world: World, client: TestClient) -> None:
    r = client.get("/console/rejects", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")


def test_a_failed_runs_manifest_and_rejects_are_found_in_the_failed_folder(
        world: World, client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    path = world.root / "drop" / "inbox" / "SHORT.DAT"
    generate_card_file(path, records=RECORDS, seed=12, bad_every=100)
    data = bytearray(path.read_bytes())
    data[-120 + 1: -120 + 10] = f"{RECORDS - 1:09d}".encode("cp037")  # the trailer's count is one short
    path.write_bytes(bytes(data))
    main(["batch", "run", "card_txn", "--config", str(world.config)])
    failed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert failed["status"] == "failed"
    runs = client.get("/api/v1/runs?status=failed", headers=auth(world, "viewer")).json()
    assert [r["run_id"] for r in runs] == [failed["run"]] and "count" in runs[0]["message"]
    detail = client.get(f"/api/v1/runs/{failed['run']}", headers=auth(world, "viewer")).json()
    assert detail["manifest"]["status"] == "failed" and detail["manifest"]["run_id"] == failed["run"]
    assert client.get(f"/api/v1/runs/{failed['run']}/report", headers=auth(world, "viewer")).status_code == 200
    page = client.get(f"/api/v1/rejects?run={failed['run']}", headers=auth(world, "viewer")).json()
    assert len(page["items"]) == 3 and {i["run_id"] for i in page["items"]} == {failed["run"]}
    both = client.get("/api/v1/rejects", headers=auth(world, "viewer")).json()["items"]
    assert [i["run_id"] for i in both] == [failed["run"]] * 3 + [world.run_id] * 4  # newest run first


def test_drift_of_a_run_against_its_reference_and_of_a_streams_last_window(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.console.views_runs import drift_of
    from gateway.meters import drift_window

    reference = world.root / "REFERENCE.DAT"
    generate_card_file(reference, records=2_000, seed=1)
    profile = world.root / "card_txn.profile.json"
    assert main(["profile", "build", "--contract", str(contract_path("card_txn")), "--input", str(reference),
                 "--output", str(profile)]) == 0
    cfg = json.loads(world.config.read_text())
    cfg["pipelines"]["card_txn"]["drift"] = {"reference": str(profile)}
    world.config.write_text(json.dumps(cfg))
    generate_card_file(world.root / "drop" / "inbox" / "SHIFTED.DAT", records=2_000, seed=3, drift=0.5)
    main(["batch", "run", "card_txn", "--config", str(world.config)])
    shifted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run"]
    with console_client(world) as client:
        d = client.get("/api/v1/pipelines/card_txn/drift", headers=auth(world, "viewer")).json()
        assert d["run_id"] == shifted and d["note"] is None and d["drift"]["psi"]["amount"] > 0.25
        assert "psi:amount" in [b["signal"] for b in d["drift"]["breaches"]]
        partial = client.get("/console/partials/drift/card_txn", headers=auth(world, "viewer")).text
        assert re.search(r"<td>feature amount</td><td class=\"num bad\">", partial)
        assert "psi:amount" in partial

    # a stream's figures are its last window's, in the process that runs it (what gateway.meters sets)
    cfg_obj = load_config(world.config)
    with StateStore(cfg_obj.state.url) as state:
        assert drift_of(cfg_obj, state, "card_stream", live=True).note.startswith("no figures")  # type: ignore[union-attr]
        drift_window("card_stream", {"quality": {"reject_rate": 0.02},
                                     "drift": {"psi": {"amount": 0.4}, "score_psi": {"fraud_score": 0.1}}})
        live = drift_of(cfg_obj, state, "card_stream", live=True)
        assert live.source == "this process's last window" and live.reject_ratio == 0.02
        assert live.psi == {"feature.amount": 0.4, "score.fraud_score": 0.1}
        assert drift_of(cfg_obj, state, "card_stream", live=False).source == "none"  # `lgw console` runs no stream
