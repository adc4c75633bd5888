"""The admin API's and the console's review queue, audit history and tokens
(gateway.console.api_review, pages_review, views_review): the real app (TestClient) on a
real state store (SQLite, and the real PostgreSQL for the decision path), review items
of decoded example card transactions with the pipeline's real PII policy applied, real
tokens from a tokens file of the test's own."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from gateway.config import GatewayConfig, example_dropfolder_config, load_config
from gateway.console.app import build_ops_app
from gateway.console.auth import add_to_tokens_file, console_tokens
from gateway.console.context import ConsoleContext, build_console
from gateway.console.security import SESSION_COOKIE
from gateway.governance.audit import open_audit
from gateway.governance.audit_model import DECISION_SCHEMA
from gateway.governance.pii import policy_for
from gateway.governance.review_queue import ReviewQueue, review_item_table
from gateway.ops_http import Readiness
from gateway.state import StateStore
from schemas.contract import load_contract
from schemas.examples import contract_path, generate_card_file
from tests.test_review import state_url_for

ROLES = ("viewer", "operator", "reviewer", "admin")


@dataclass
class Console:
    root: Path
    cfg: GatewayConfig
    state: StateStore
    client: TestClient
    tokens: dict[str, str]  # role -> bearer token (its name is the role)
    ids: list[int]  # review items queued, masked by the pipeline's policy
    pans: list[str]  # the card numbers in clear, which no response may contain
    console: ConsoleContext

    def as_(self, role: str | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}


def card_items(root: Path, records: int = 12) -> tuple[pa.Table, pa.Table]:
    """Decoded example transactions as a scorer leaves them (a score in the review band,
    provenance, source_record): (as queued, with the PII policy applied; in clear)."""
    contract = load_contract(contract_path("card_txn"))
    path = root / "CARDTXN.DAT"
    generate_card_file(path, records=records, seed=5)
    table = pa.concat_tables([dc.table for dc in contract.decode_file(path)])
    n = table.num_rows
    table = (table.append_column("fraud_score", pa.array(np.linspace(0.41, 0.59, n)))
             .append_column("scored_by", pa.array(["model"] * n))
             .append_column("model_name", pa.array(["fraud"] * n))
             .append_column("source_record", pa.array(np.arange(1, n + 1, dtype=np.int64))))
    return policy_for(contract).apply(table), table


def make_console(root: Path, state_url: str) -> Iterator[Console]:
    doc = example_dropfolder_config(state_url)
    doc["pipelines"]["card_txn"]["review"] = {"band": [0.4, 0.6]}
    tokens_file = root / "tokens.yaml"
    doc["console"] = {"tokens_file": str(tokens_file)}
    (root / "gateway.yaml").write_text(json.dumps(doc), encoding="utf-8")
    suffix = uuid.uuid4().hex[:8]  # the PostgreSQL store is shared with other tests: names of our own
    tokens = {role: add_to_tokens_file(tokens_file, f"{role}-{suffix}", [role]) for role in ROLES}
    cfg = load_config(str(root / "gateway.yaml"))
    state = StateStore(cfg.state.url)
    console = build_console(cfg, state, process="console")
    assert console is not None
    masked, clear = card_items(root)
    queue = ReviewQueue(state)
    first = {i.id for i in queue.list("card_txn", status="all", limit=100_000)}
    queue.enqueue("card_txn", f"CARDTXN-{suffix}", masked, ["band"] * masked.num_rows, score="fraud_score",
                  record_ids=[f"card_txn/{suffix}/{i}" for i in range(masked.num_rows)])
    ids = sorted({i.id for i in queue.list("card_txn", status="all", limit=100_000)} - first)
    pans = [str(p).strip() for p in clear.column("TXN_PAN").to_pylist()]
    with TestClient(build_ops_app(Readiness(), console), base_url="http://testserver") as client:
        yield Console(root, cfg, state, client, dict(tokens), ids, pans, console)
    with state.engine.begin() as conn:
        conn.execute(delete(review_item_table).where(review_item_table.c.id.in_(ids)))
        conn.execute(delete(console_tokens).where(console_tokens.c.name.like(f"%-{suffix}")))
    state.close()


@pytest.fixture
def sqlite_console(tmp_path: Path) -> Iterator[Console]:
    yield from make_console(tmp_path, state_url_for("sqlite", tmp_path))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def any_console(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Console]:
    yield from make_console(tmp_path, state_url_for(request.param, tmp_path))


def no_clear_pan(c: Console, text: str) -> None:
    leaked = [p for p in c.pans if p and p in text]
    assert not leaked, f"{len(leaked)} card numbers in clear"


# --------------------------------------------------------------------------- review
def test_the_queue_is_listed_masked_and_decided_by_reviewers_only(any_console: Console) -> None:
    c = any_console
    api = c.client
    assert api.get("/api/v1/review").status_code == 401

    listed = api.get("/api/v1/review", params={"pipeline": "card_txn", "limit": 1000}, headers=c.as_("viewer"))
    assert listed.status_code == 200, listed.text
    doc = listed.json()
    mine = [i for i in doc["items"] if i["id"] in c.ids]
    assert len(mine) == len(c.ids) and {i["status"] for i in mine} == {"pending"}
    assert doc["counts"]["card_txn"]["pending"] >= len(c.ids)
    assert all(re.fullmatch(r"\d{6}\*+\d{4}", i["data"]["TXN_PAN"]) for i in mine), mine[0]["data"]["TXN_PAN"]
    no_clear_pan(c, listed.text)

    first, second = c.ids[0], c.ids[1]
    one = api.get(f"/api/v1/review/{first}", headers=c.as_("viewer"))
    assert one.status_code == 200 and one.json()["score_name"] == "fraud_score"
    no_clear_pan(c, one.text)
    assert api.get("/api/v1/review/999999999", headers=c.as_("viewer")).status_code == 404
    assert api.get("/api/v1/review/0", headers=c.as_("viewer")).status_code == 422
    assert api.get("/api/v1/review", params={"status": "maybe"}, headers=c.as_("viewer")).status_code == 422

    decide = f"/api/v1/review/{first}/decision"
    body = {"approve": False, "override": 0.93, "reason": "confirmed with the cardholder, INC-4711"}
    for role in ("viewer", "operator"):
        refused = api.post(decide, json=body, headers=c.as_(role))
        assert refused.status_code == 403 and "may not review" in refused.json()["detail"]
    too_high = api.post(decide, json={**body, "override": 1.5}, headers=c.as_("reviewer"))
    assert too_high.status_code == 422 and "above its max" in too_high.json()["detail"]
    assert api.post(decide, json={**body, "reason": " "}, headers=c.as_("reviewer")).status_code == 422
    assert api.post(decide, json={**body, "extra": 1}, headers=c.as_("reviewer")).status_code == 422

    done = api.post(decide, json=body, headers=c.as_("reviewer"))
    assert done.status_code == 200, done.text
    decision = done.json()
    reviewer = f"token:reviewer-{_name(c, 'reviewer')}"
    assert (decision["status"], decision["final_score"], decision["decided_by"]) == ("overridden", 0.93, reviewer)
    # the correction went through the pipeline's sink, as `lgw review decide` sends it
    outbox = Path(decision["correction"])
    assert outbox.parent == c.root / "drop" / "outbox"
    [correction] = [json.loads(x) for x in outbox.read_text().splitlines()]
    assert (correction["review"], correction["fraud_score"], correction["reviewer"]) == ("overridden", 0.93, reviewer)
    assert correction["TXN_PAN"].count("*") >= 6

    again = api.post(decide, json={"approve": True, "reason": "again"}, headers=c.as_("admin"))
    assert again.status_code == 409 and "already overridden" in again.json()["detail"]
    assert api.post("/api/v1/review/999999999/decision", json=body, headers=c.as_("reviewer")).status_code == 404
    approved = api.post(f"/api/v1/review/{second}/decision", json={"approve": True, "reason": "known merchant"},
                        headers=c.as_("reviewer"))
    assert approved.status_code == 200 and approved.json()["status"] == "approved"

    audit = api.get("/api/v1/audit/actions", params={"pipeline": "card_txn", "action": "review.decide",
                                                     "limit": 1000}, headers=c.as_("viewer"))
    assert audit.status_code == 200
    entries = {a["target"]: a for a in audit.json() if a["actor"] == reviewer}
    item = one.json()
    entry = entries[item["record_id"]]
    assert (entry["new"], entry["reason"]) == ("overridden:0.93", body["reason"])
    assert entry["old"] == str(item["score"])


def _name(c: Console, role: str) -> str:
    """The suffix of a role's token name (names are `ROLE-SUFFIX`)."""
    who = c.client.get("/api/v1/whoami", headers=c.as_(role)).json()
    return str(who["name"]).split("-", 1)[1]


def test_a_pii_field_queued_in_clear_is_still_masked_in_every_response(sqlite_console: Console) -> None:
    """The queue stores what it is given; the view checks it against the contract's policy."""
    c = sqlite_console
    _, clear = card_items(c.root, records=3)
    queued = ReviewQueue(c.state).enqueue("card_txn", "LEAKY", clear.slice(0, 1), ["band"], score="fraud_score",
                                          record_ids=["card_txn/leaky/0"])
    leaky = max(i.id for i in ReviewQueue(c.state).list("card_txn", status="all", limit=100_000))
    pan = str(clear.column("TXN_PAN")[0].as_py()).strip()
    c.pans.append(pan)
    assert queued == 1 and ReviewQueue(c.state).get(leaky).data["TXN_PAN"].strip() == pan  # stored in clear
    shown = c.client.get(f"/api/v1/review/{leaky}", headers=c.as_("viewer"))
    assert shown.status_code == 200 and "*" in shown.json()["data"]["TXN_PAN"]
    no_clear_pan(c, shown.text)
    page = c.client.get("/console/review", headers=c.as_("viewer"))
    assert page.status_code == 200
    no_clear_pan(c, page.text)


# --------------------------------------------------------------------------- audit
def test_decision_records_of_one_record(sqlite_console: Console) -> None:
    c = sqlite_console
    record_id = "card-txn/0/41"  # topic/partition/offset: slashes in the path
    rows = {f.name: [None] for f in DECISION_SCHEMA}
    rows.update(run=["RUN1"], pipeline=["card_txn"], source=["card-txn"], record=[41], record_id=[record_id],
                input_hash=["ab" * 32], model_name=["fraud"], scored_by=["model"], score=[0.52],
                breaker_state=["closed"], review=["pending"], decided_at=[datetime.now(UTC)])
    log = open_audit(c.cfg, state=c.state)
    assert log is not None
    log.append_decisions(pa.table(rows, schema=DECISION_SCHEMA))

    found = c.client.get(f"/api/v1/audit/decisions/{record_id}", headers=c.as_("viewer"))
    assert found.status_code == 200, found.text
    [row] = found.json()
    assert (row["record_id"], row["scored_by"], row["score"], row["review"]) == (record_id, "model", 0.52, "pending")
    assert set(row) <= set(DECISION_SCHEMA.names)
    assert c.client.get("/api/v1/audit/decisions/card-txn/0/42", headers=c.as_("viewer")).status_code == 404
    assert c.client.get(f"/api/v1/audit/decisions/{record_id}").status_code == 401
    page = c.client.get("/console/audit", params={"record": record_id}, headers=c.as_("viewer"))
    assert page.status_code == 200 and "0.5200" in page.text


# --------------------------------------------------------------------------- tokens
def test_tokens_are_made_listed_and_revoked_by_admins_and_audited(any_console: Console) -> None:
    c = any_console
    api = c.client
    suffix = _name(c, "admin")
    admin = f"token:admin-{suffix}"
    assert api.get("/api/v1/tokens", headers=c.as_("operator")).status_code == 403
    assert api.post("/api/v1/tokens", json={"name": "x", "roles": ["viewer"]},
                    headers=c.as_("reviewer")).status_code == 403

    name = f"ci-bot-{suffix}"
    made = api.post("/api/v1/tokens", json={"name": name, "roles": ["operator"], "note": "CI pipeline"},
                    headers=c.as_("admin"))
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert made.json()["name"] == name and made.json()["roles"] == ["operator"] and token.startswith("lgw_")
    who = api.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}).json()
    assert (who["identity"], who["source"]) == (f"token:{name}", "store")

    listed = api.get("/api/v1/tokens", headers=c.as_("admin"))
    assert listed.status_code == 200
    by_name = {t["name"]: t for t in listed.json()}
    assert by_name[f"viewer-{suffix}"]["source"] == "file"
    assert (by_name[name]["source"], by_name[name]["created_by"], by_name[name]["revoked_at"]) == ("store", admin, None)
    assert token not in listed.text and "sha256" not in listed.text

    assert api.post("/api/v1/tokens", json={"name": name, "roles": ["viewer"]},
                    headers=c.as_("admin")).status_code == 409
    assert api.post("/api/v1/tokens", json={"name": f"viewer-{suffix}", "roles": ["viewer"]},
                    headers=c.as_("admin")).status_code == 409
    assert api.post("/api/v1/tokens", json={"name": "bad name", "roles": ["viewer"]},
                    headers=c.as_("admin")).status_code == 422
    assert api.post("/api/v1/tokens", json={"name": "x", "roles": ["root"]}, headers=c.as_("admin")).status_code == 422

    file_token = api.delete(f"/api/v1/tokens/viewer-{suffix}", headers=c.as_("admin"))
    assert file_token.status_code == 409 and "edit the tokens file" in file_token.json()["detail"]
    assert api.delete(f"/api/v1/tokens/{name}", headers=c.as_("operator")).status_code == 403
    assert api.delete(f"/api/v1/tokens/{name}", headers=c.as_("admin")).status_code == 204
    assert api.delete(f"/api/v1/tokens/{name}", headers=c.as_("admin")).status_code == 404  # revoked already
    assert api.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert api.delete(f"/api/v1/tokens/nobody-{suffix}", headers=c.as_("admin")).status_code == 404

    audit = api.get("/api/v1/audit/actions", params={"action": "token.", "limit": 1000}, headers=c.as_("viewer"))
    mine = [a for a in audit.json() if a["target"] == name]
    assert [(a["action"], a["actor"]) for a in mine] == [("token.revoke", admin), ("token.create", admin)]
    assert mine[1]["new"] == "operator" and mine[1]["reason"] == "CI pipeline"
    assert token not in audit.text


# --------------------------------------------------------------------------- pages
def test_the_review_page_decides_with_its_form(sqlite_console: Console) -> None:
    c = sqlite_console
    page = c.client.get("/console/review", params={"pipeline": "card_txn"}, headers=c.as_("reviewer"))
    assert page.status_code == 200
    first = c.ids[0]
    html = page.text
    form = html[html.index(f'action="/console/review/{first}"'):]
    form = form[:form.index("</form>")]
    assert f'<label for="reason-{first}">Reason</label>' in form and 'name="reason"' in form and "required" in form
    assert f'<label for="override-{first}">Override score</label>' in form and 'name="override"' in form
    assert '<button type="submit" name="approve" value="1">Approve</button>' in form
    assert '<button type="submit" name="approve" value="0">Override</button>' in form
    no_clear_pan(c, html)
    viewer_page = c.client.get("/console/review", headers=c.as_("viewer")).text
    assert "Deciding needs the reviewer role" in viewer_page and 'name="approve"' not in viewer_page

    no_reason = c.client.post(f"/console/review/{first}", data={"reason": "", "approve": "1"},
                              headers=c.as_("reviewer"), follow_redirects=False)
    assert no_reason.status_code == 303 and "needs%20a%20reason" in no_reason.headers["location"]
    refused = c.client.post(f"/console/review/{first}", data={"reason": "x", "approve": "1"},
                            headers=c.as_("operator"), follow_redirects=False)
    assert refused.status_code == 403

    done = c.client.post(f"/console/review/{first}", data={"reason": "chargeback filed", "override": "0.91",
                                                             "approve": "0"},
                         headers=c.as_("reviewer"), follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith("/console/review?msg=")
    shown = c.client.get(done.headers["location"], headers=c.as_("reviewer")).text
    assert f"review item {first} overridden" in shown
    item = ReviewQueue(c.state).get(first)
    assert (item.status, item.override_value, item.decided_by) == ("overridden", 0.91,
                                                                   f"token:reviewer-{_name(c, 'reviewer')}")
    twice = c.client.post(f"/console/review/{first}", data={"reason": "again", "approve": "1"},
                          headers=c.as_("reviewer"), follow_redirects=False)
    assert "already%20overridden" in twice.headers["location"]

    audit = c.client.get("/console/audit", params={"pipeline": "card_txn", "action": "review.decide"},
                         headers=c.as_("viewer"))
    assert audit.status_code == 200 and "chargeback filed" in audit.text and "overridden:0.91" in audit.text


def test_a_browser_session_decides_with_the_forms_csrf_token(sqlite_console: Console) -> None:
    c = sqlite_console
    who = c.client.get("/api/v1/whoami", headers=c.as_("reviewer")).json()
    principal = c.console.auth.bearer(c.tokens["reviewer"])
    assert principal is not None and principal.identity == who["identity"]
    cookie, _ = c.console.sessions.issue(principal)
    c.client.cookies.set(SESSION_COOKIE, cookie)
    try:
        page = c.client.get("/console/review")
        assert page.status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        item = c.ids[2]
        form = {"reason": "looks right", "override": "", "approve": "1"}
        forged = c.client.post(f"/console/review/{item}", data=form, follow_redirects=False)
        assert forged.status_code == 403 and ReviewQueue(c.state).get(item).status == "pending"
        done = c.client.post(f"/console/review/{item}", data={**form, "csrf": csrf.group(1)}, follow_redirects=False)
        assert done.status_code == 303, done.text
        assert ReviewQueue(c.state).get(item).status == "approved"
    finally:
        c.client.cookies.clear()


def test_the_tokens_page_shows_a_new_token_once(sqlite_console: Console) -> None:
    c = sqlite_console
    assert c.client.get("/console/tokens", headers=c.as_("reviewer")).status_code == 403
    name = f"tablet-{_name(c, 'admin')}"
    made = c.client.post("/console/tokens", data={"name": name, "roles": ["viewer", "reviewer"], "note": "night"},
                         headers=c.as_("admin"))
    assert made.status_code == 200
    token = re.search(r'value="(lgw_[A-Za-z0-9_-]{43})" data-new-token', made.text)
    assert token is not None
    later = c.client.get("/console/tokens", headers=c.as_("admin")).text
    assert token.group(1) not in later and name in later
    assert f'action="/console/tokens/{name}/revoke" data-confirm=' in later
    revoked = c.client.post(f"/console/tokens/{name}/revoke", headers=c.as_("admin"), follow_redirects=False)
    assert revoked.status_code == 303 and "revoked" in revoked.headers["location"]
    assert c.client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token.group(1)}"}).status_code == 401
