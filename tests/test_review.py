"""The human review queue (gateway.governance.review): selection on a real decoded and
scored batch of the example contract, the queue on SQLite and on the real PostgreSQL,
`lgw review`, and corrections published to a file outbox and to a real Kafka topic."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pwd
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sqlalchemy import delete, event

from gateway import cli
from gateway.config import example_dropfolder_config, load_config
from gateway.governance import review_cli
from gateway.governance.review import (
    REVIEW_STATUSES,
    ReviewConfig,
    ReviewError,
    cap_mask,
    check_review,
    hold_back,
    mark_review,
    review_reasons,
    select_for_review,
)
from gateway.governance.review_corrections import correction_line, publish_corrections
from gateway.governance.review_queue import ReviewDecision, ReviewQueue, review_item_table
from gateway.outputs import OutputSpec
from gateway.pipeline import Pipeline
from gateway.state import StateStore
from schemas.contract import Contract, load_contract
from schemas.errors import ConfigError, ContractError, InfrastructureError
from schemas.examples import contract_path, generate_card_file
from tests.helpers import unavailable
from tests.test_pipeline import guarded, onnx_model
from tests.test_state import POSTGRES_URL

SCORE = "fraud_score"
# who decides: the account the OS authenticated this process as, never $LOGNAME
ME = f"unix:{pwd.getpwuid(os.getuid()).pw_name}(uid={os.getuid()})@{socket.gethostname()}"
SPEC = OutputSpec(SCORE, "float", 0.0, 1.0)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(contract_path("card_txn"))


@pytest.fixture(scope="module")
def scored(contract: Contract, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """2,000 example card transactions decoded from EBCDIC and scored by the bundled ONNX
    model, as the batch driver hands them to a sink (with `source_record`)."""
    path = tmp_path_factory.mktemp("cards") / "CARDTXN.DAT"
    generate_card_file(path, records=2_000, seed=11)
    table = pa.concat_tables([dc.table for dc in contract.decode_file(path)])
    table = table.append_column("source_record", pa.array(np.arange(2, table.num_rows + 2, dtype=np.int64)))
    pipeline = Pipeline(contract, name="card_txn", model=guarded(onnx_model()))

    async def score() -> pa.Table:
        try:
            return (await pipeline.score(table)).table
        finally:
            assert pipeline.model is not None
            await pipeline.model.close()

    out = asyncio.run(score())
    assert out.num_rows == 2_000 and set(out.column("scored_by").to_pylist()) == {"model"}
    return out


def state_url_for(kind: str, root: Path) -> str:
    """A state store of `kind` (sqlite in `root`, or the local PostgreSQL) that answers."""
    if kind == "sqlite":
        return f"sqlite:///{root}/state.db"
    url = POSTGRES_URL + ("&" if "?" in POSTGRES_URL else "?") + "connect_timeout=3"
    try:
        with StateStore(url) as store:
            ReviewQueue(store).counts()
    except InfrastructureError as exc:
        unavailable(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return state_url_for(request.param, tmp_path)


@pytest.fixture
def pipeline(state_url: str) -> Iterator[str]:
    """A pipeline name no concurrent test run uses; its items are removed afterwards."""
    name = f"review-{uuid.uuid4().hex[:12]}"
    yield name
    with StateStore(state_url) as store, store.engine.begin() as conn:
        conn.execute(delete(review_item_table).where(review_item_table.c.pipeline == name))


@pytest.fixture
def queue(state_url: str) -> Iterator[ReviewQueue]:
    with StateStore(state_url) as store:
        yield ReviewQueue(store)


def scores(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column(SCORE).to_numpy(zero_copy_only=False), dtype=np.float64)


def fill(queue: ReviewQueue, pipeline: str, scored: pa.Table, cfg: ReviewConfig, run: str = "CARDTXN") -> int:
    why = review_reasons(scored, cfg)
    mask = pc.is_valid(why)
    return queue.enqueue(pipeline, run, scored.filter(mask), why.filter(mask), score=SCORE)


# --------------------------------------------------------------------------- selection
def test_the_band_selects_the_uncertain_scores_inclusive(scored: pa.Table) -> None:
    values = scores(scored)
    lo, hi = np.quantile(values, [0.4, 0.6], method="nearest")  # about a fifth of the batch; scores themselves
    mask = select_for_review(scored, ReviewConfig(band=(float(lo), float(hi)), score=SCORE))
    assert mask.type == pa.bool_() and mask.null_count == 0 and len(mask) == scored.num_rows
    want = (values >= lo) & (values <= hi)  # the band's ends are in it
    assert 300 < want.sum() < 500
    assert np.array_equal(np.asarray(mask.to_numpy(zero_copy_only=False)), want)
    # the default score is the contract's first output once the config is checked against it
    cfg = check_review(ReviewConfig(band=(float(lo), float(hi))), load_contract(contract_path("card_txn")))
    assert cfg.score == SCORE
    assert select_for_review(scored, cfg).equals(mask)


def test_a_rule_selects_high_risk_records_and_the_reasons_say_which(scored: pa.Table, contract: Contract) -> None:
    rule = "TXN_AMOUNT > 300 and CHANNEL == 'E'"
    cfg = check_review(ReviewConfig(band=(0.4, 0.6), when=rule), contract)
    why = review_reasons(scored, cfg)
    amount = np.asarray(pc.cast(scored.column("TXN_AMOUNT"), pa.float64()).to_numpy(zero_copy_only=False))
    ecom = np.asarray(scored.column("CHANNEL").to_numpy(zero_copy_only=False)) == "E"
    by_rule = (amount > 300) & ecom
    values = scores(scored)
    by_band = (values >= 0.4) & (values <= 0.6)
    assert by_rule.sum() > 10 and by_band.sum() > 10
    expected = np.where(by_band & by_rule, "band,rule", np.where(by_band, "band", np.where(by_rule, "rule", None)))
    assert why.to_pylist() == expected.tolist()
    # a rule may name the outputs and provenance too
    only_rule = check_review(ReviewConfig(when="fraud_score > 0.5 and scored_by == 'model'"), contract)
    assert np.array_equal(np.asarray(select_for_review(scored, only_rule).to_numpy(zero_copy_only=False)),
                          values > 0.5)


def test_mark_review_and_hold_back(scored: pa.Table) -> None:
    mask = select_for_review(scored, ReviewConfig(band=(0.3, 0.7), score=SCORE))
    n = int(pc.sum(mask).as_py())
    marked = mark_review(scored, mask)
    assert marked.column_names == [*scored.column_names, "review"]
    assert marked.column("review").to_pylist().count("pending") == n
    assert marked.column("review").null_count == scored.num_rows - n
    out, held = hold_back(scored, mask)
    assert (out.num_rows, held.num_rows) == (scored.num_rows - n, n)  # in = out + held
    assert set(held.column("source_record").to_pylist()).isdisjoint(out.column("source_record").to_pylist())
    assert cap_mask(mask, 3).to_pylist().count(True) == 3
    edges = pa.table({SCORE: pa.array([0.3, 0.7, 0.29, 0.71, None], pa.float32())})
    assert select_for_review(edges, ReviewConfig(band=(0.3, 0.7), score=SCORE)).to_pylist() == [
        True, True, False, False, False]  # the bounds as written are in the band; no score is not
    assert cap_mask(np.asarray(mask), 0).to_pylist().count(True) == 0


def test_review_config_problems_are_one_line_at_load(tmp_path: Path) -> None:
    def config_with(review: dict[str, Any]) -> Path:
        cfg = example_dropfolder_config(f"sqlite:///{tmp_path / 'state.db'}")
        cfg["pipelines"]["card_txn"]["review"] = review
        path = tmp_path / "gateway.yaml"
        path.write_text(json.dumps(cfg), encoding="utf-8")
        return path

    loaded = load_config(config_with({"band": [0.4, 0.6], "when": "TXN_AMOUNT > 5000", "hold": True}))
    review = loaded.pipelines["card_txn"].review
    assert review is not None and (review.band, review.score, review.hold) == ((0.4, 0.6), SCORE, True)
    cases = {
        "review.band: [0.6, 0.4] is not ordered": {"band": [0.6, 0.4]},
        "review.band: 1.5 is above fraud_score's max 1": {"band": [0.5, 1.5]},
        "review.band: -0.1 is below fraud_score's min 0": {"band": [-0.1, 0.5]},
        "review.score: 'risk' is not an output": {"band": [0.4, 0.6], "score": "risk"},
        "review.when": {"when": "NO_SUCH_FIELD > 3"},
        "review needs a `band`": {"hold": True},
        "review.colour: Extra inputs are not permitted": {"band": [0.4, 0.6], "colour": "red"},
    }
    for expected, review_cfg in cases.items():
        with pytest.raises(ConfigError) as err:
            load_config(config_with(review_cfg))
        line = str(err.value)
        assert "\n" not in line and "pipelines.card_txn.review" in line and expected in line, line
    with pytest.raises(ContractError, match="must be a condition"):
        check_review(ReviewConfig(when="TXN_AMOUNT + 1"), load_contract(contract_path("card_txn")))


# --------------------------------------------------------------------------- the queue
def test_enqueue_is_one_bulk_insert_and_list_show_count(queue: ReviewQueue, pipeline: str, scored: pa.Table) -> None:
    cfg = ReviewConfig(band=(0.4, 0.6), when="TXN_AMOUNT > 300 and CHANNEL == 'E'", score=SCORE)
    inserts: list[tuple[str, bool]] = []

    def count(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO REVIEW_ITEM"):
            inserts.append((statement, executemany))

    queue.store.list_kill_switches()  # the tables exist: only the enqueue's statements are counted
    event.listen(queue.store.engine, "before_cursor_execute", count)
    try:
        queued = fill(queue, pipeline, scored, cfg)
    finally:
        event.remove(queue.store.engine, "before_cursor_execute", count)
    expected = int(pc.sum(select_for_review(scored, cfg)).as_py())
    assert queued == expected > 20
    assert len(inserts) == 1, inserts  # one statement for the whole batch, not one per record
    assert queue.counts(pipeline) == {pipeline: {"pending": expected}}

    items = queue.list(pipeline, limit=1_000)
    assert len(items) == expected and [i.id for i in items] == sorted(i.id for i in items)
    assert {i.why for i in items} == {"band", "rule", "band,rule"}
    first = queue.get(items[0].id)
    row = scored.filter(pc.equal(scored.column("source_record"), first.source_record))
    assert first.record_id == f"{pipeline}/{first.source_record}" and first.run == "CARDTXN"
    assert first.score == pytest.approx(float(row.column(SCORE)[0].as_py()))
    assert (first.scored_by, first.model_name, first.model_version) == ("model", "fraud", "1")
    assert first.data["TXN_ID"] == row.column("TXN_ID")[0].as_py() and SCORE not in first.data
    assert first.provenance["contract"] == "card_txn" and "scored_by" not in first.data
    amount = json.loads(first.data_text, parse_float=Decimal)["TXN_AMOUNT"]
    assert amount == row.column("TXN_AMOUNT")[0].as_py()  # exact: the decimal as decoded
    assert queue.list(pipeline, status="approved") == []
    assert len(queue.list(pipeline, status="all", limit=5)) == 5
    with pytest.raises(ReviewError, match="no review item"):
        queue.get(10**12)
    with pytest.raises(ReviewError, match="not one of"):
        queue.list(pipeline, status="maybe")


def test_admit_keeps_the_queue_within_max_pending(queue: ReviewQueue, pipeline: str, scored: pa.Table) -> None:
    cfg = ReviewConfig(band=(0.3, 0.7), score=SCORE, max_pending=25)
    mask = select_for_review(scored, cfg)
    assert int(pc.sum(mask).as_py()) > 25
    admitted = queue.admit(pipeline, mask, cfg.max_pending)
    table = scored.filter(admitted)
    assert queue.enqueue(pipeline, "r1", table, ["band"] * table.num_rows, score=SCORE) == 25
    assert queue.admit(pipeline, mask, cfg.max_pending).to_pylist().count(True) == 0  # full
    assert queue.room(pipeline, 30) == 5


def test_records_marked_while_an_earlier_batch_waits_to_be_queued_count_against_max_pending(
        contract: Contract, state_url: str, pipeline: str, scored: pa.Table) -> None:
    """The batch driver scores batch N+1 while batch N is made durable, which is when N's
    marked records are queued: the cap holds across that overlap (it did not: a run of
    6,000 records capped at 40 queued 43 once its first batches were smaller), and every
    record marked pending in an output is on the queue."""
    from gateway.governance.run import RunGovernance

    inputs = scored.select(["source_record", *[c for c in scored.column_names if c.isupper()]])
    batches = [inputs.slice(lo, 400) for lo in range(0, inputs.num_rows, 400)]
    cfg = ReviewConfig(band=(0.3, 0.7), score=SCORE, max_pending=25)
    assert int(pc.sum(select_for_review(scored, cfg)).as_py()) > 25  # more than the cap would be marked
    pipe = Pipeline(contract, name=pipeline, model=guarded(onnx_model()), review=cfg)

    async def run() -> tuple[list[int], int]:
        with StateStore(state_url) as store:
            governance = RunGovernance.build(pipe, run="r1", source="CARDTXN", audit=None, drift=None,
                                             reference=None, monitor=False)
            governance.attach_review(store, "r1")

            async def queue(batch: pa.Table, out: pa.Table) -> None:
                rows = np.arange(out.num_rows, dtype=np.int64)
                await governance.write(governance.observe(batch.num_rows, batch, None, out, rows, []))

            try:
                outs: list[pa.Table] = []
                for i, batch in enumerate(batches):  # batch i is scored before batch i-1 is queued
                    outs.append((await pipe.score(batch)).table)
                    if i:
                        await queue(batches[i - 1], outs[i - 1])
                await queue(batches[-1], outs[-1])
                marked = [out.column("review").to_pylist().count("pending") for out in outs]
                return marked, ReviewQueue(store).counts(pipeline)[pipeline]["pending"]
            finally:
                assert pipe.model is not None
                await pipe.model.close()

    marked, pending = asyncio.run(run())
    assert len([m for m in marked if m]) > 1  # the cap was reached over several batches
    assert sum(marked) == pending == 25


def test_decide_approve_override_reason_and_finality(queue: ReviewQueue, pipeline: str, scored: pa.Table) -> None:
    fill(queue, pipeline, scored, ReviewConfig(band=(0.4, 0.6), score=SCORE))
    a, b, c, *_ = queue.list(pipeline)
    heard: list[ReviewDecision] = []

    approved = queue.decide(a.id, approve=True, reason="known merchant", on_decided=heard.append)
    assert (approved.status, approved.final_score, approved.reason) == ("approved", a.score, "known merchant")
    assert approved.actor == ME and approved.actor.startswith("unix:")
    assert "(uid=" in approved.actor and "@" in approved.actor
    assert heard == [approved]  # the audit log's hook

    overridden = queue.decide(b.id, approve=False, override="0.95", reason="confirmed fraud, INC-4711",
                              actor="unix:alice(uid=1001)@host", spec=SPEC, on_decided=heard.append)
    assert (overridden.status, overridden.final_score) == ("overridden", 0.95) and len(heard) == 2
    stored = queue.get(b.id)
    assert (stored.status, stored.decision, stored.override_value, stored.decision_reason, stored.decided_by) == (
        "overridden", "override", 0.95, "confirmed fraud, INC-4711", "unix:alice(uid=1001)@host")
    assert stored.decided_at is not None and stored.decided_at.tzinfo is not None
    assert queue.decision(b.id).final_score == 0.95

    for bad, match in (({"approve": True, "reason": "  "}, "needs a reason"),
                       ({"approve": False, "override": 1.5, "reason": "x", "spec": SPEC}, "above its max 1"),
                       ({"approve": False, "override": "high", "reason": "x", "spec": SPEC}, "must be a number"),
                       ({"approve": True, "override": 0.5, "reason": "x"}, "not both"),
                       ({"approve": False, "reason": "x"}, "either approves")):
        with pytest.raises(ReviewError, match=match):
            queue.decide(c.id, **bad)
    assert queue.get(c.id).status == "pending" and len(heard) == 2  # nothing was decided

    with pytest.raises(ReviewError, match="already approved"):
        queue.decide(a.id, approve=False, override=0.1, reason="second opinion", on_decided=heard.append)
    assert queue.get(a.id).status == "approved" and len(heard) == 2
    with pytest.raises(ReviewError, match="still pending"):
        queue.decision(c.id)
    counts = queue.counts(pipeline)[pipeline]
    assert (counts["approved"], counts["overridden"]) == (1, 1) and set(counts) <= set(REVIEW_STATUSES)


def test_two_reviewers_deciding_at_once_exactly_one_wins(state_url: str, pipeline: str, scored: pa.Table) -> None:
    with StateStore(state_url) as one, StateStore(state_url) as two:  # two engines: two connections
        first, second = ReviewQueue(one), ReviewQueue(two)
        fill(first, pipeline, scored, ReviewConfig(band=(0.4, 0.6), score=SCORE))
        items = first.list(pipeline, limit=10)
        for item in items:
            barrier = threading.Barrier(2)
            results: dict[str, Any] = {}

            def decide(name: str, q: ReviewQueue, item_id: int, gate: threading.Barrier,
                       out: dict[str, Any]) -> None:
                gate.wait()
                try:
                    out[name] = q.decide(item_id, approve=name == "alice", override=None if name == "alice" else 0.9,
                                         reason=f"{name} decided", actor=name)
                except ReviewError as exc:
                    out[name] = exc

            threads = [threading.Thread(target=decide, args=(name, q, item.id, barrier, results))
                       for name, q in (("alice", first), ("bob", second))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            won = [n for n, r in results.items() if isinstance(r, ReviewDecision)]
            lost = [n for n, r in results.items() if isinstance(r, ReviewError)]
            assert len(won) == 1 and len(lost) == 1, results
            assert "already" in str(results[lost[0]])
            stored = first.get(item.id)
            assert stored.decided_by == won[0] and stored.decision_reason == f"{won[0]} decided"


# --------------------------------------------------------------------------- corrections
def file_config(root: Path, state_url: str) -> Path:
    cfg = example_dropfolder_config(state_url)
    cfg["pipelines"]["card_txn"]["review"] = {"band": [0.4, 0.6]}
    path = root / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def lgw(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_lgw_review_round_trip_publishes_corrections_to_the_outbox(tmp_path: Path, scored: pa.Table) -> None:
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    config = str(file_config(tmp_path, state_url))
    with StateStore(state_url) as store:
        queue = ReviewQueue(store)
        masked = scored.set_column(scored.schema.get_field_index("TXN_PAN"), "TXN_PAN",
                                   pa.array(["************" + p[-4:] for p in scored.column("TXN_PAN").to_pylist()]))
        queued = fill(queue, "card_txn", masked, ReviewConfig(band=(0.4, 0.6), score=SCORE), run="CARDTXN")

    code, out, err = lgw("review", "list", "card_txn", "--config", config)
    assert code == 0, err
    listed = [json.loads(line) for line in out.splitlines()]
    assert len(listed) == queued and all(i["status"] == "pending" for i in listed)
    first, second = listed[0]["id"], listed[1]["id"]

    code, out, err = lgw("review", "show", str(first), "--config", config)
    shown = json.loads(out)
    assert code == 0 and shown["id"] == first and shown["data"]["TXN_PAN"].startswith("************")

    code, out, err = lgw("review", "decide", str(first), "--override", "1.5", "--reason", "too high",
                         "--config", config)
    assert code == 2 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("lgw: error: override: fraud_score 1.5 is above its max 1"), line

    code, out, err = lgw("review", "decide", str(first), "--approve", "--reason", "", "--config", config)
    assert code == 2 and "needs a reason" in err

    code, out, err = lgw("review", "decide", str(first), "--override", "0.97", "--reason", "confirmed", "--config",
                         config)
    assert code == 0, err
    decided = json.loads(out)
    assert (decided["status"], decided["final_score"], decided["decided_by"]) == (
        "overridden", 0.97, ME)
    path = Path(decided["correction"])
    assert path.parent == tmp_path / "drop" / "outbox"
    assert path.name.startswith("CARDTXN.review-corrections-") and path.name.endswith(".jsonl")
    [correction] = [json.loads(x) for x in path.read_text().splitlines()]
    item = shown
    assert correction["TXN_ID"] == item["data"]["TXN_ID"] and correction["TXN_PAN"] == item["data"]["TXN_PAN"]
    assert (correction["review"], correction[SCORE], correction["corrects"]) == ("overridden", 0.97, "review")
    assert correction["original_score"] == pytest.approx(item["score"])
    assert (correction["reviewer"], correction["review_reason"]) == (ME, "confirmed")
    assert correction["record_id"] == item["record_id"] and correction["scored_by"] == "model"
    assert correction["decided_at"] == decided["decided_at"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left

    code, out, err = lgw("review", "decide", str(first), "--approve", "--reason", "again", "--config", config)
    assert code == 2 and "already overridden" in err

    code, out, err = lgw("review", "decide", str(second), "--approve", "--reason", "fine", "--config", config)
    assert code == 0, err
    approved = json.loads(Path(json.loads(out)["correction"]).read_text())
    assert approved["review"] == "approved" and approved[SCORE] == pytest.approx(listed[1]["score"])

    code, out, err = lgw("review", "list", "--status", "all", "--state-url", state_url)
    assert code == 0 and [json.loads(x)["status"] for x in out.splitlines()][:2] == ["overridden", "approved"]
    code, out, err = lgw("review", "publish", str(first), "--config", config)  # again, e.g. after a sink failure
    assert code == 0 and json.loads(out)["final_score"] == 0.97


def test_the_table_view_on_a_terminal(tmp_path: Path, scored: pa.Table, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps to the terminal's width
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with StateStore(state_url) as store:
        fill(ReviewQueue(store), "card_txn", scored, ReviewConfig(band=(0.45, 0.5), score=SCORE))
    parser = cli.build_parser()
    out = Tty()
    assert review_cli.run(parser.parse_args(["review", "list", "--state-url", state_url]), out) == 0
    assert "pending" in out.getvalue() and "card_txn/" in out.getvalue()
    out = Tty()
    assert review_cli.run(parser.parse_args(["review", "show", "1", "--state-url", state_url]), out) == 0
    assert "data.TXN_ID" in out.getvalue()


def test_a_correction_keeps_the_records_exact_decimals(tmp_path: Path, scored: pa.Table) -> None:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        queue = ReviewQueue(store)
        fill(queue, "card_txn", scored, ReviewConfig(band=(0.0, 1.0), score=SCORE))
        trailing_zero = re.compile(r'"TXN_AMOUNT":-?[0-9]+[.][0-9]0,')
        item = next(i for i in queue.list("card_txn", limit=2_000) if trailing_zero.search(i.data_text))
        decision = queue.decide(item.id, approve=True, reason="ok", actor="tester")
    line = correction_line(decision).decode()
    amount = json.loads(item.data_text, parse_float=Decimal)["TXN_AMOUNT"]
    assert f'"TXN_AMOUNT":{amount}' in line  # the decimal text as decoded (483.80 stays 483.80)
    assert json.loads(line, parse_float=Decimal)["TXN_AMOUNT"] == amount


@pytest.mark.integration
async def test_corrections_of_a_kafka_pipeline_go_to_its_topic(kafka_broker: Any, tmp_path: Path,
                                                               scored: pa.Table) -> None:
    from tests.kafka_broker import unique_topic
    from tests.test_batch_to_kafka import collect
    from tests.test_realtime_kafka import TopicReader, headers_of

    results = kafka_broker.create_topic(unique_topic("scored"), partitions=3)
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    cfg = example_dropfolder_config(state_url)
    cfg["pipelines"]["card_txn"]["sink"] = {"type": "kafka", "topic": results, "key": "TXN_ID"}
    cfg["pipelines"]["card_txn"]["rejects"] = {"type": "kafka", "topic": unique_topic("rejects")}
    cfg["pipelines"]["card_txn"]["review"] = {"band": [0.4, 0.6]}
    cfg["kafka"] = {"bootstrap_servers": kafka_broker.bootstrap, "enable_idempotence": False}  # Tansu: none
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    config = load_config(path)
    with StateStore(state_url) as store:
        queue = ReviewQueue(store)
        fill(queue, "card_txn", scored, ReviewConfig(band=(0.4, 0.6), score=SCORE), run="CARDTXN")
        a, b = queue.list("card_txn", limit=2)
        decisions = [queue.decide(a.id, approve=True, reason="known merchant", actor="unix:alice(uid=1)@h"),
                     queue.decide(b.id, approve=False, override=0.99, reason="fraud", spec=SPEC,
                                  actor="unix:bob(uid=2)@h")]
        written = await publish_corrections(config, "card_txn", decisions, state=store)
    assert written["topic"] == results and written["records"] == 2
    reader = await TopicReader(kafka_broker.bootstrap, results).start()
    try:
        await collect(reader, 2)
        await asyncio.sleep(0.3)  # nothing more arrives
        records = list(reader.records)
    finally:
        await reader.stop()
    assert len(records) == 2
    by_id = {headers_of(r)["lgw-id"]: r for r in records}
    assert set(by_id) == {f"card_txn/review/{a.id}", f"card_txn/review/{b.id}"}
    for item, d in ((a, decisions[0]), (b, decisions[1])):
        record = by_id[f"card_txn/review/{item.id}"]
        body = json.loads(record.value)
        headers = headers_of(record)
        assert record.key == item.data["TXN_ID"].encode()  # the sink's key field
        assert (headers["lgw-corrects"], headers["lgw-review"], headers["lgw-corrects-id"]) == (
            "review", d.status, item.record_id)
        assert headers["lgw-scored-by"] == "model" and headers["lgw-contract"] == "card_txn"
        assert (body["review"], body["corrects"], body["reviewer"], body[SCORE]) == (
            d.status, "review", d.actor, d.final_score)
        assert body["TXN_ID"] == item.data["TXN_ID"] and body["record_id"] == item.record_id
    assert json.loads(by_id[f"card_txn/review/{b.id}"].value)[SCORE] == 0.99


def test_a_pipeline_the_config_does_not_know_has_no_sink_for_corrections(tmp_path: Path, scored: pa.Table) -> None:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        queue = ReviewQueue(store)
        fill(queue, "elsewhere", scored, ReviewConfig(band=(0.4, 0.6), score=SCORE))
        item = queue.list("elsewhere", limit=1)[0]
        decision = queue.decide(item.id, approve=True, reason="ok", actor="t")
    with pytest.raises(ReviewError, match="no pipeline 'elsewhere'"):
        asyncio.run(publish_corrections(load_config(file_config(tmp_path, "sqlite://")), "elsewhere", [decision]))


@pytest.mark.integration
async def test_corrections_of_an_odbc_pipeline_upsert_its_results_row(tmp_path: Path, scored: pa.Table) -> None:
    try:
        import pyodbc
    except ImportError:
        unavailable("pyodbc is not installed (pip install -e '.[dev]')")
    from adapters.odbc.sink import OdbcSink

    connection = f"Driver={{SQLite3}};Database={tmp_path / 'results.db'};"
    try:
        pyodbc.connect(connection, autocommit=True, timeout=3).close()
    except pyodbc.Error as exc:
        unavailable(f"the SQLite ODBC driver is not installed: {exc}")
    columns = ["TXN_ID", SCORE, "scored_by", "review"]
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    cfg = example_dropfolder_config(state_url)
    cfg["pipelines"]["card_txn"]["sink"] = {"type": "odbc", "connection": {"connection_string": connection},
                                           "table": "card_results", "key": ["TXN_ID"], "columns": columns}
    cfg["pipelines"]["card_txn"]["review"] = {"band": [0.4, 0.6]}
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    config = load_config(path)
    review = config.pipelines["card_txn"].review
    assert review is not None
    mask = select_for_review(scored, review)
    # what the run wrote: every record, the uncertain ones marked pending
    OdbcSink(connection, "card_results", ["TXN_ID"], columns=columns).write_table(mark_review(scored, mask))
    with StateStore(state_url) as store:
        queue = ReviewQueue(store)
        queue.enqueue("card_txn", "CARDTXN", scored.filter(mask), ["band"] * int(pc.sum(mask).as_py()), score=SCORE)
        item = queue.list("card_txn", limit=1)[0]
        decision = queue.decide(item.id, approve=False, override=0.99, reason="fraud", spec=SPEC, actor="t")
        written = await publish_corrections(config, "card_txn", [decision], state=store)
    assert (written["target"], written["records"]) == ("card_results", 1)
    conn = pyodbc.connect(connection, autocommit=True)
    try:
        rows = conn.execute("SELECT TXN_ID, fraud_score, review FROM card_results WHERE review IS NOT NULL").fetchall()
        total = conn.execute("SELECT COUNT(*) FROM card_results").fetchone()[0]
    finally:
        conn.close()
    by_id = {r[0]: (float(r[1]), r[2]) for r in rows}
    assert total == scored.num_rows  # upserted by key: no row added
    assert by_id[item.data["TXN_ID"]] == (pytest.approx(0.99), "overridden")
    assert sum(1 for _, status in by_id.values() if status == "pending") == len(by_id) - 1


@pytest.mark.integration
async def test_corrections_of_an_amqp_pipeline_go_to_its_exchange(tmp_path: Path, scored: pa.Table) -> None:
    import aio_pika

    from tests.test_realtime_amqp import AMQP_URL

    try:
        conn = await asyncio.wait_for(aio_pika.connect(AMQP_URL), timeout=10)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        unavailable(f"RabbitMQ not reachable at {AMQP_URL}: {exc!r}")
    tag = uuid.uuid4().hex[:8]
    exchange, queue_name = f"lgw.test.review.{tag}", f"lgw.test.review.{tag}"
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    cfg = example_dropfolder_config(state_url)
    cfg["pipelines"]["card_txn"]["sink"] = {"type": "amqp", "exchange": exchange, "routing_key": "cards"}
    cfg["pipelines"]["card_txn"]["review"] = {"when": "TXN_AMOUNT > 300"}
    cfg["amqp"] = {"url": AMQP_URL}
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    config = load_config(path)
    ch = await conn.channel()
    try:
        ex = await ch.declare_exchange(exchange, durable=True)
        q = await ch.declare_queue(queue_name, durable=True)
        await q.bind(ex, routing_key="cards")
        with StateStore(state_url) as store:
            queue = ReviewQueue(store)
            review = config.pipelines["card_txn"].review
            assert review is not None and review.score == SCORE
            why = review_reasons(scored, review)
            mask = pc.is_valid(why)
            queue.enqueue("card_txn", "CARDTXN", scored.filter(mask), why.filter(mask), score=SCORE)
            item = queue.list("card_txn", limit=1)[0]
            assert item.why == "rule"
            decision = queue.decide(item.id, approve=True, reason="large but known", actor="t")
            await publish_corrections(config, "card_txn", [decision], state=store)
        message = None
        for _ in range(100):
            message = await q.get(no_ack=True, fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.05)
        assert message is not None, "no correction on the exchange"
        body, headers = json.loads(message.body), message.headers or {}
        assert (body["review"], body["corrects"], body["TXN_ID"]) == ("approved", "review", item.data["TXN_ID"])
        assert body[SCORE] == pytest.approx(item.score)
        assert (str(headers["lgw-corrects"]), str(headers["lgw-review"])) == ("review", "approved")
        assert message.message_id == f"card_txn/review/{item.id}"
    finally:
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await ch.queue_delete(queue_name)
            await ch.exchange_delete(exchange)
        await ch.close()
        await conn.close()
