"""Governance (issue 13): the pii policy on every way data leaves, decision fingerprints,
the drift scenario end to end (reference profile -> shifted file -> breach on the
shifted feature only -> the configured action), the data-quality scorecard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from gateway.cli import main
from gateway.config import example_dropfolder_config
from gateway.governance.decisions import fingerprints, run_record_ids, value_rows
from gateway.governance.pii import mask_values, policy_for
from gateway.state import StateStore
from schemas.contract import load_contract
from schemas.errors import ConfigError, ContractError
from schemas.examples import contract_path, generate_card_file

KEY = b"k" * 32
KNOWN_PRINT = "8fa5cb049fee8f9e76f984ebea2d307e"  # fingerprints(bytes 0..15, key b"k"), as released


@pytest.fixture(scope="module")
def contract() -> Any:
    return load_contract(contract_path())


# --------------------------------------------------------------------------- pii policy
def test_mask_keeps_first_six_and_last_four_of_a_card_number_and_only_the_length_of_anything_else() -> None:
    masked = mask_values(pa.array(["4532010002007563", "JOHN SMITH", None, "1234567890123456789", "12"]))
    assert masked.to_pylist() == ["453201******7563", "**********", None, "123456*********6789", "**"]


def _masked_by_hand(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.rstrip()
    return text[:6] + "*" * (len(text) - 10) + text[-4:] if 13 <= len(text) <= 19 else "*" * len(text)


@pytest.mark.parametrize("seed", range(4))
def test_mask_is_the_same_on_fixed_width_varied_sliced_and_non_ascii_columns(seed: int) -> None:
    """Fixed-width ASCII (the mainframe's card numbers) and other ASCII take numpy paths over
    the string buffer; anything else the compute kernels: every path masks alike."""
    rng = np.random.default_rng(seed)

    def text(k: int, alphabet: str = "0123456789 ABCXYZ") -> str:
        return "".join(rng.choice(list(alphabet), k))

    width = int(rng.integers(1, 22))
    columns = [
        pa.array([text(width, "0123456789") for _ in range(500)]),  # one width: one 2-D slice
        pa.array([None if rng.random() < 0.1 else text(width) for _ in range(500)]),
        pa.array([None if rng.random() < 0.1 else text(int(rng.integers(0, 24))) for _ in range(500)]),
        pa.array([text(int(rng.integers(0, 24))) for _ in range(500)]).slice(37, 300),
        pa.array([text(int(rng.integers(0, 24)), "0123456789ÄÖ€ ") for _ in range(500)]),
        pa.array(rng.integers(0, 10**18, 200)),
        pa.array([None, None], pa.string()),
        pa.array([], pa.string()),
    ]
    for column in columns:
        masked = mask_values(column)
        masked.validate(full=True)
        values = column.cast(pa.string()).to_pylist()
        assert masked.to_pylist() == [_masked_by_hand(v) for v in values]


def test_the_contract_says_mask_and_a_pipeline_overrides_per_field(contract: Any) -> None:
    table = pa.table({"TXN_PAN": ["4532010002007563", "4532010002007563", "4921810001313139"], "MCC": [1, 2, 3]})
    assert policy_for(contract).describe() == {"TXN_PAN": "mask"}
    assert policy_for(contract).apply(table).column("TXN_PAN").to_pylist()[0] == "453201******7563"
    hashed = policy_for(contract, {"TXN-PAN": "hash"}, key=KEY).apply(table).column("TXN_PAN").to_pylist()
    assert hashed[0] == hashed[1] != hashed[2]  # joins still work
    assert len(hashed[0]) == 64 and "4532010002007563" not in hashed[0]
    other_key = policy_for(contract, {"TXN_PAN": "hash"}, key=b"x" * 32).apply(table).column("TXN_PAN")
    assert other_key.to_pylist()[0] != hashed[0]  # keyed: no rainbow table of card numbers
    assert "TXN_PAN" not in policy_for(contract, {"TXN_PAN": "drop"}).apply(table).column_names
    clear = policy_for(contract, {"TXN_PAN": "clear"})
    assert not clear.active and clear.describe() == {"TXN_PAN": "clear"}
    assert clear.apply(table) is table
    masked_too = policy_for(contract, {"MERCHANT-NAME": "mask"}).describe()
    assert masked_too == {"TXN_PAN": "mask", "MERCHANT_NAME": "mask"}


def test_a_wrong_policy_is_one_clear_error(contract: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="field 'NO-SUCH' is not in contract card_txn"):
        policy_for(contract, {"NO-SUCH": "mask"})
    with pytest.raises(ConfigError, match="expected one of clear, mask, hash, drop, found 'scramble'"):
        policy_for(contract, {"TXN-PAN": "scramble"})
    text = contract_path().read_text().replace("pii: mask", "pii: scramble")
    bad = tmp_path / "card_txn.yaml"
    bad.write_text(text)
    (tmp_path / "copybooks").symlink_to(contract_path().parent / "copybooks")
    with pytest.raises(ContractError, match="pii: expected true, false or one of clear, mask, hash, drop, "
                                            "found 'scramble'"):
        load_contract(bad)


def test_record_bytes_are_redacted_in_place_as_the_columns_are(contract: Any, tmp_path: Path) -> None:
    path = tmp_path / "cards.dat"
    generate_card_file(path, records=50, seed=3)
    width = contract.spec.framing.record_length
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, width)[1:-1]  # the details
    pan = next(node for node, rules in contract.rules.values() if rules.pii)
    clear = [bytes(r[pan.offset: pan.offset + pan.size]).decode("cp037") for r in data[:3]]
    for action in ("mask", "hash", "drop"):
        policy = policy_for(contract, {"TXN-PAN": action}, key=KEY)
        out = policy.redact_raw(data)
        assert out.shape == data.shape and not np.shares_memory(out, data)
        outside = np.ones(width, dtype=bool)
        outside[pan.offset: pan.offset + pan.size] = False
        assert (out[:, outside] == data[:, outside]).all()  # only the pii field's bytes change
        shown = [bytes(r[pan.offset: pan.offset + pan.size]).decode("cp037") for r in out[:3]]
        for value, text in zip(clear, shown, strict=True):
            assert value not in text
            if action == "mask":
                assert text == value[:6] + "******" + value[-4:]
            elif action == "drop":
                assert text.strip() == ""
            else:
                assert len(text) == 16 and all(c in "0123456789abcdef" for c in text)
    message = policy_for(contract).redact_json(json.dumps({"TXN_PAN": clear[0], "MCC": 5411}).encode())
    assert json.loads(message) == {"TXN_PAN": clear[0][:6] + "******" + clear[0][-4:], "MCC": 5411}
    assert policy_for(contract).redact_json(b"not json " + clear[0].encode()) == b""


# --------------------------------------------------------------------------- decision records
def test_fingerprints_are_keyed_stable_and_change_with_any_byte() -> None:
    rows = np.random.default_rng(0).integers(0, 256, (2_000, 120), dtype=np.uint8)
    first = fingerprints(rows, KEY).to_pylist()
    assert first == fingerprints(rows, KEY).to_pylist()
    assert len(set(first)) == len(first) and all(len(f) == 32 for f in first)
    assert fingerprints(rows[:5], b"other key").to_pylist() != first[:5]
    changed = rows.copy()
    changed[7, 119] ^= 1
    again = fingerprints(changed, KEY).to_pylist()
    assert again[7] != first[7] and again[:7] == first[:7] and again[8:] == first[8:]
    many = np.random.default_rng(1).integers(0, 256, (5_000, 120), dtype=np.uint8)  # blocks of rows
    whole = fingerprints(many, KEY).to_pylist()
    assert [fingerprints(many[i: i + 1], KEY).to_pylist()[0] for i in (0, 2047, 2048, 4999)] == \
        [whole[i] for i in (0, 2047, 2048, 4999)]
    odd = rows[:4, :13]  # a width that is not a multiple of 8
    assert fingerprints(odd, KEY).to_pylist() != fingerprints(rows[:4, :14], KEY).to_pylist()
    # rows read in place (contiguous, whole words) and rows copied into padded blocks agree
    inner = rows[:, 8:24]  # not contiguous: the padded path
    assert fingerprints(inner, KEY).to_pylist() == fingerprints(np.ascontiguousarray(inner), KEY).to_pylist()
    # a known value: what the audit files of earlier runs hold must not change
    assert fingerprints(np.arange(16, dtype=np.uint8).reshape(1, 16), b"k").to_pylist() == [KNOWN_PRINT]


@pytest.mark.parametrize("numbers", [[1, 2, 3], list(range(95, 105)), [7], [], list(range(10**6, 10**6 + 5000))])
def test_record_ids_are_the_run_and_the_record_number(numbers: list[int]) -> None:
    expected = [f"card_txn.0123abcd:{n}" for n in numbers]
    records = pa.array(numbers, pa.int64())
    assert run_record_ids("card_txn.0123abcd", records).to_pylist() == expected
    halves = pa.chunked_array([records.slice(0, len(numbers) // 2), records.slice(len(numbers) // 2)], pa.int64())
    assert run_record_ids("card_txn.0123abcd", halves).to_pylist() == expected
    assert run_record_ids("card_txn.0123abcd", records.slice(1)).to_pylist() == expected[1:]  # an offset array


def test_rows_without_bytes_are_fingerprinted_by_their_values() -> None:
    table = pa.table({"a": ["x", "yy", None, "x"], "b": [1, 2, 3, 1]})
    matrix, lengths = value_rows(table)
    prints = fingerprints(matrix, KEY, lengths).to_pylist()
    assert prints[0] == prints[3] and len(set(prints[:3])) == 3
    shifted = pa.table({"a": ["x1", "yy", None, "x"], "b": [None, 2, 3, 1]})  # "x"+"1" is not "x1"+null
    m2, l2 = value_rows(shifted)
    assert fingerprints(m2, KEY, l2).to_pylist()[0] != prints[0]


def clear_pans(path: Path) -> set[str]:
    """The card numbers of a generated card file's details, as they are in clear."""
    contract = load_contract(contract_path())
    width = contract.spec.framing.record_length
    rows = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, width)[1:-1]
    pan = next(node for node, rules in contract.rules.values() if rules.pii)
    return {bytes(r[pan.offset: pan.offset + pan.size]).decode("cp037") for r in rows}


# --------------------------------------------------------------------------- the drift scenario
def _config(root: Path, **pipeline: Any) -> Path:
    cfg = example_dropfolder_config(f"sqlite:///{root / 'state.db'}", batch_size=5_000)
    cfg["pipelines"]["card_txn"].update(pipeline)
    path = root / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def _run(config: Path, root: Path, name: str, **generate: Any) -> dict[str, Any]:
    inbox = root / "drop" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    generate_card_file(inbox / name, **generate)
    assert main(["batch", "run", "card_txn", "--config", str(config), "--no-progress"]) in (0, 1)
    data: dict[str, Any] = json.loads((root / "drop" / "outbox" / f"{name}.manifest.json").read_text())
    return data


def test_a_shifted_file_crosses_the_psi_threshold_on_the_shifted_feature_only_and_the_action_is_taken(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = tmp_path / "REFERENCE.DAT"
    generate_card_file(reference, records=20_000, seed=1)
    profile = tmp_path / "card_txn.profile.json"
    assert main(["profile", "build", "--contract", str(contract_path()), "--input", str(reference),
                 "--output", str(profile)]) == 0
    built = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert built["records"] == 20_000 and built["scored_by"] == {"model": 20_000}
    stored = json.loads(profile.read_text())
    assert {"feature.amount", "feature.mcc", "score.fraud_score", "field.COUNTRY"} <= set(stored["columns"])
    assert stored["columns"]["field.TXN_PAN"]["shares"] is None  # pii: its null rate only
    text = profile.read_text()
    assert not any(pan in text for pan in clear_pans(reference))

    config = _config(tmp_path, drift={"reference": str(profile), "segments": ["COUNTRY", "CHANNEL"],
                                      "action": "force_fallback"})
    same = _run(config, tmp_path, "NIGHT1.DAT", records=20_000, seed=2, bad_every=1_000)
    assert same["drift"]["breaches"] == [] and same["quality"]["ok"] is True
    assert same["quality"]["verdict"].startswith("OK: 19,980 of 20,000 records scored, 20 rejected")
    assert all(v < 0.1 for v in same["drift"]["psi"].values()), same["drift"]["psi"]
    assert same["pii"] == {"TXN_PAN": "mask"}
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        assert store.get_kill_switch("card_txn").mode == "off"

    shifted = _run(config, tmp_path, "NIGHT2.DAT", records=20_000, seed=3, drift=0.5)
    psi = shifted["drift"]["psi"]
    assert psi["amount"] > 0.25, psi
    assert all(v < 0.1 for k, v in psi.items() if k != "amount"), psi  # the shifted feature only
    signals = [b["signal"] for b in shifted["drift"]["breaches"]]
    assert "psi:amount" in signals and not any(s.startswith("psi:") and s != "psi:amount" for s in signals)
    assert shifted["quality"]["verdict"].startswith("ATTENTION:") and "psi:amount" in shifted["quality"]["verdict"]
    action = shifted["drift"]["actions"][0]
    assert action["action"] == "force_fallback" and action["signal"] == "psi:amount"
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        switch = store.get_kill_switch("card_txn")
    assert switch.mode == "force_fallback" and switch.set_by == "lgw:drift-monitor"
    assert "psi:amount" in switch.reason
    histogram = shifted["drift"]["score_histogram"]
    assert len(histogram["run"]) == len(histogram["reference"]) == len(histogram["edges"]) + 1


def test_decision_records_made_as_a_batch_is_scored_are_those_made_in_its_durable_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    from gateway.governance import run as governance_run

    made: dict[str, tuple[pa.Table, dict[str, Any]]] = {}
    for mode, ahead_rows in (("ahead", 1), ("in the durable step", 10**9)):
        root = tmp_path / mode.replace(" ", "-")
        root.mkdir()
        monkeypatch.setattr(governance_run, "AHEAD_ROWS", ahead_rows)
        manifest = _run(_config(root), root, "NIGHT.DAT", records=12_000, seed=4, bad_every=1_000)
        files = sorted(p for p in (root / "var" / "audit").rglob("*.parquet") if not p.name.startswith("."))
        decisions = pa.concat_tables([pq.read_table(f) for f in files]).drop_columns(["decided_at"])
        made[mode] = decisions.sort_by("record"), manifest["quality"]
        assert main(["audit", "verify", "--config", str(root / "gateway.yaml")]) == 0
    (ahead, ahead_quality), (inline, inline_quality) = made["ahead"], made["in the durable step"]
    assert ahead.num_rows == 12_000 - 12 and ahead.equals(inline)
    assert ahead_quality == inline_quality


def test_the_drift_figures_from_the_models_own_feature_rows_are_those_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a batch scored whole hands the feature rows the model was given to the drift monitor;
    # made again from the records (as before, and for a batch split to find a poison record),
    # every figure is the same
    from gateway.governance import run as governance_run

    reference = tmp_path / "REFERENCE.DAT"
    generate_card_file(reference, records=8_000, seed=1)
    profile = tmp_path / "card_txn.profile.json"
    assert main(["profile", "build", "--contract", str(contract_path()), "--input", str(reference),
                 "--output", str(profile)]) == 0
    made: dict[str, dict[str, Any]] = {}
    handed: list[bool] = []
    prepare = governance_run.RunGovernance._prepare
    for mode in ("handed over", "made again"):
        root = tmp_path / mode.replace(" ", "-")
        root.mkdir()

        def spy(self: Any, *args: Any, _mode: str = mode) -> Any:
            *head, given = args
            handed.append(given is not None)
            return prepare(self, *head, None if _mode == "made again" else given)

        monkeypatch.setattr(governance_run.RunGovernance, "_prepare", spy)
        config = _config(root, drift={"reference": str(profile), "segments": ["COUNTRY", "CHANNEL"]})
        manifest = _run(config, root, "NIGHT.DAT", records=12_000, seed=2, drift=0.3, bad_every=700)
        made[mode] = {"drift": manifest["drift"], "quality": manifest["quality"]}
    assert handed and all(handed)  # every batch was scored whole by the model: its rows were handed over
    assert made["handed over"]["drift"]["psi"]["amount"] > 0.1  # the figures compared are not all zero
    assert made["handed over"] == made["made again"]


def test_the_quality_scorecard_names_each_field_with_its_nulls_rejects_and_range(tmp_path: Path) -> None:
    config = _config(tmp_path)
    manifest = _run(config, tmp_path, "NIGHT.DAT", records=4_000, seed=4, bad_every=400)
    quality = manifest["quality"]
    assert quality["records"] == 4_000 and quality["rejected"] == 10
    fields = quality["fields"]
    assert fields["MCC"]["min"] >= 1 and fields["MCC"]["max"] <= 9999 and fields["MCC"]["nulls"] == 0
    assert fields["TXN_PAN"]["min"] is None and fields["TXN_PAN"]["max"] is None  # pii: no values
    assert sum(sum(f["rejects"].values()) for f in fields.values()) >= 10
    assert set(fields["COUNTRY"]["rejects"]) == {"validation"}
    assert "drift" not in manifest  # no reference configured: quality only
    assert manifest["quality"]["verdict"].startswith("OK: 3,990 of 4,000 records scored, 10 rejected")
    outbox = tmp_path / "drop" / "outbox"
    shown = {r["TXN_PAN"] for r in manifest["examples"]["records"]}
    assert shown and all(p[6:12] == "******" for p in shown)
    pans = clear_pans(tmp_path / "drop" / "done" / "NIGHT.DAT")
    for artefact in outbox.iterdir():  # records, rejects, manifest
        text = artefact.read_text()
        assert not any(pan in text for pan in pans), artefact.name


# --------------------------------------------------------------------------- review in a run
def test_records_in_the_band_leave_marked_pending_and_are_queued_with_their_data_masked(tmp_path: Path) -> None:
    from gateway.governance.review_queue import ReviewQueue

    config = _config(tmp_path, review={"band": [0.5, 0.7], "max_pending": 40})
    manifest = _run(config, tmp_path, "NIGHT.DAT", records=6_000, seed=8)
    assert manifest["review"] == {"queued": 40, "pending": 40, "hold": False}  # capped by max_pending
    rows = [json.loads(line) for line in (tmp_path / "drop" / "outbox" / "NIGHT.DAT.scored.jsonl").open()]
    pending = [r for r in rows if r["review"] == "pending"]
    assert len(rows) == 6_000 and len(pending) == 40
    assert all(0.5 <= r["fraud_score"] <= 0.7 for r in pending)
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        items = ReviewQueue(store).list("card_txn", limit=100)
    run = manifest["run_id"]  # named as the audit trail names them, RUN:RECORD
    assert len(items) == 40 and {i.record_id for i in items} == {f"{run}:{r['source_record']}" for r in pending}
    assert all(i.data["TXN_PAN"][6:12] == "******" for i in items)
    assert {i.run for i in items} == {"NIGHT.DAT"}  # the run's output stem: its corrections are named after it


def test_held_records_stay_out_of_the_output_until_decided_and_the_accounting_says_so(tmp_path: Path,
                                                                                      capsys: Any) -> None:
    from gateway.governance.review_queue import ReviewQueue

    config = _config(tmp_path, review={"band": [0.5, 0.7], "hold": True})
    manifest = _run(config, tmp_path, "NIGHT.DAT", records=6_000, seed=8, bad_every=1_000)
    counts = manifest["counts"]
    assert counts["held"] > 0 and counts["records_out"] + counts["rejected"] + counts["held"] == 6_000
    assert manifest["review"]["hold"] is True and manifest["review"]["queued"] == counts["held"]
    rows = [json.loads(line) for line in (tmp_path / "drop" / "outbox" / "NIGHT.DAT.scored.jsonl").open()]
    assert len(rows) == counts["records_out"] and not any(r["review"] == "pending" for r in rows)
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        first = ReviewQueue(store).list("card_txn", limit=1)[0]
    capsys.readouterr()
    assert main(["review", "decide", str(first.id), "--approve", "--reason", "checked with the cardholder",
                 "--config", str(config)]) == 0
    corrections = list((tmp_path / "drop" / "outbox").glob("NIGHT.DAT.review-corrections-*.jsonl"))
    assert len(corrections) == 1
    (released,) = [json.loads(line) for line in corrections[0].open()]
    assert released["record_id"] == first.record_id and released["review"] == "approved"
    assert released["TXN_PAN"][6:12] == "******"
    # who or what decided this record, with which model, and why: the audit trail has both
    capsys.readouterr()
    assert main(["audit", "show", "--record", first.record_id, "--config", str(config)]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    decision = next(s for s in shown if s.get("scored_by"))
    assert decision["model_name"] == "fraud" and decision["review"] == "pending" and decision["model_sha256"]
    assert len(decision["input_hash"]) == 32 and "TXN_PAN" not in decision
    action = next(s for s in shown if s.get("action") == "review.decide")
    assert action["reason"] == "checked with the cardholder" and action["actor"].startswith("unix:")


def test_hold_is_refused_for_a_stream_with_one_line(tmp_path: Path) -> None:
    from gateway.config import load_config

    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps({"models": {}, "pipelines": {"cards": {
        "contract": str(contract_path()), "review": {"band": [0.4, 0.6], "hold": True},
        "source": {"type": "kafka", "topics": ["in"], "group_id": "g", "result_topic": "out",
                   "dlq_topic": "dlq"}}}}))
    with pytest.raises(ConfigError, match=r"review\.hold: true holds records back until a reviewer decides, which a "
                                          "kafka source cannot wait for"):
        load_config(path)
