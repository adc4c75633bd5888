"""The bundled card_txn example: the generator writes files the contract accepts, with
control totals that reconcile, and damages records in ways the rejects explain."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from gateway.cli import EXIT_OK, EXIT_REJECTS, main
from schemas import examples
from schemas.codepages import code_page
from schemas.contract import Contract, ControlReport, load_contract, parse_contract
from schemas.errors import ConfigError
from schemas.stream import Reject

RECORDS = 2_500
LRECL = 120


def _decode(contract: Contract, path: Path, **overrides: str) -> tuple[pa.Table, list[Reject], ControlReport]:
    spec = contract.record_spec(**overrides) if overrides else None
    report = ControlReport()
    chunks = list(contract.decode_file(path, spec, batch_size=1_000, report=report))
    table = pa.concat_tables([c.table for c in chunks])
    rejects = [r for c in chunks for r in c.rejects]
    return table, rejects, report


def _ascii_contract() -> Contract:
    """The card_txn contract with ASCII as its own encoding (header/trailer included)."""
    path = examples.contract_path()
    text = path.read_text(encoding="utf-8").replace("encoding: cp037", "encoding: ascii")
    return parse_contract(text, base_dir=path.parent, source="card_txn (ascii)")


@pytest.fixture(scope="module")
def ebcdic_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("cards") / "cards.ebc"
    return path, examples.generate_card_file(path, records=RECORDS)


@pytest.fixture(scope="module")
def ebcdic_decoded(ebcdic_file: tuple[Path, dict]) -> tuple[pa.Table, list[Reject], ControlReport]:
    return _decode(load_contract(examples.contract_path()), ebcdic_file[0])


def test_contract_path_names_the_bundled_card_contract_and_its_copybook() -> None:
    path = examples.contract_path()
    assert path.name == "card_txn.yaml" and path.is_file()
    assert (path.parent / "copybooks" / "CARDTXN.cpy").is_file()
    contract = load_contract(path)
    assert (contract.name, contract.version, contract.layout.record_length) == ("card_txn", 1, LRECL)
    assert contract.header is not None and contract.trailer is not None
    assert contract.header.spec.layout.record_length == contract.trailer.spec.layout.record_length == LRECL


def test_contract_path_of_an_unknown_example_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="card_txn"):
        examples.contract_path("no_such_contract")


def test_generated_file_holds_header_requested_details_and_trailer(ebcdic_file: tuple[Path, dict]) -> None:
    path, summary = ebcdic_file
    assert path.stat().st_size == (RECORDS + 2) * LRECL == summary["bytes"]
    assert summary["records"] == RECORDS
    assert summary["encoding"] == "cp037"
    data = path.read_bytes()
    page = code_page("cp037")
    assert data[0] == page.byte_of("H") and data[-LRECL] == page.byte_of("T")
    assert set(data[LRECL: -LRECL: LRECL]) == {page.byte_of("D")}


def test_generated_file_decodes_without_rejects_and_reconciles(ebcdic_decoded) -> None:
    table, rejects, report = ebcdic_decoded
    assert table.num_rows == RECORDS
    assert rejects == []
    assert report.ok, report.problems
    assert report.checked == ["count", "sum TXN-AMOUNT"]
    assert report.details == RECORDS
    assert report.header is not None and report.header["HDR_FILE_ID"] == "CARDTXN"


def test_trailer_totals_match_the_decoded_records(ebcdic_file, ebcdic_decoded) -> None:
    _, summary = ebcdic_file
    table, _, report = ebcdic_decoded
    assert report.trailer is not None
    decoded_total = Decimal(str(pc.sum(table["TXN_AMOUNT"]).as_py()))
    assert report.trailer["TRL_COUNT"] == table.num_rows == RECORDS
    assert Decimal(str(report.trailer["TRL_AMOUNT_TOTAL"])) == decoded_total
    assert Decimal(summary["amount_total"]) == decoded_total


def test_generated_values_cover_negative_signs_and_every_channel(ebcdic_decoded) -> None:
    table, _, _ = ebcdic_decoded
    amounts = table["TXN_AMOUNT"].to_pylist()
    balances = table["BALANCE"].to_pylist()
    assert any(a < 0 for a in amounts) and any(a > 0 for a in amounts)  # refunds: packed sign D
    assert any(b < 0 for b in balances) and any(b > 0 for b in balances)  # overpunch both ways
    assert set(table["CHANNEL"].to_pylist()) == {"P", "E", "M"}
    assert any(c > 0 for c in table["CASHBACK_AMOUNT"].to_pylist())
    assert any(t > 0 for t in table["TERMINAL_ID"].to_pylist())
    assert table["TXN_ID"][0].as_py() == "TX0000000001"
    assert len(set(table["TXN_ID"].to_pylist())) == RECORDS


def test_pans_are_sixteen_digits_with_a_valid_luhn_check_digit(ebcdic_decoded) -> None:
    table, _, _ = ebcdic_decoded
    pans = np.array([list(map(int, p)) for p in table["TXN_PAN"].to_pylist()])
    assert pans.shape == (RECORDS, 16)
    from_right = pans[:, ::-1]
    doubled = from_right[:, 1::2] * 2
    doubled -= 9 * (doubled > 9)
    assert ((from_right[:, 0::2].sum(axis=1) + doubled.sum(axis=1)) % 10 == 0).all()


def test_same_seed_writes_byte_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    examples.generate_card_file(a, records=300, seed=11)
    examples.generate_card_file(b, records=300, seed=11)
    examples.generate_card_file(c, records=300, seed=12)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_totals_stay_correct_across_generator_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(examples, "CHUNK_RECORDS", 64)
    path = tmp_path / "chunked.ebc"
    summary = examples.generate_card_file(path, records=1_000)
    table, rejects, report = _decode(load_contract(examples.contract_path()), path)
    assert table.num_rows == 1_000 and rejects == [] and report.ok, report.problems
    assert table["TXN_ID"].to_pylist()[-1] == "TX0000001000"
    assert Decimal(summary["amount_total"]) == Decimal(str(pc.sum(table["TXN_AMOUNT"]).as_py()))


def test_ascii_variant_decodes_to_the_same_values_as_the_ebcdic_one(tmp_path: Path, ebcdic_file,
                                                                     ebcdic_decoded) -> None:
    path = tmp_path / "cards.txt"
    summary = examples.generate_card_file(path, records=RECORDS, encoding="ascii")
    assert summary["encoding"] == "ascii"
    assert summary["amount_total"] == ebcdic_file[1]["amount_total"]
    table, rejects, report = _decode(_ascii_contract(), path)
    assert rejects == [] and report.ok, report.problems
    assert table.equals(ebcdic_decoded[0])
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, LRECL)[1:-1]
    balance_sign = raw[:, 88]  # last byte of BALANCE: ASCII overpunch letters, not EBCDIC zones
    assert set(balance_sign.tobytes().decode("ascii")) <= set("{ABCDEFGHI}JKLMNOPQR")


def test_ascii_file_decodes_with_the_cp037_contract_and_an_encoding_override(tmp_path: Path) -> None:
    path = tmp_path / "cards.txt"
    examples.generate_card_file(path, records=100, encoding="ascii")
    table, rejects, report = _decode(load_contract(examples.contract_path()), path, encoding="ascii")
    assert rejects == [] and report.ok, report.problems
    assert table.num_rows == 100


def test_bad_every_rejects_each_damaged_record_with_field_offset_raw_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.ebc"
    summary = examples.generate_card_file(path, records=400, bad_every=10)
    assert summary["damaged"] == 40
    table, rejects, report = _decode(load_contract(examples.contract_path()), path)
    # file record numbers count the header as record 1: detail k is record k + 1
    assert sorted({r.record for r in rejects}) == [k + 1 for k in range(10, 401, 10)]
    assert table.num_rows == 360
    assert report.ok, report.problems  # the trailer counts damaged details too
    for r in rejects:
        assert r.field and r.field_offset is not None and r.raw and r.reason
        assert len(r.raw) == r.length
        assert r.to_json()["offset"] == r.record_offset + r.field_offset
    by_field = {(r.field or "").split(".")[-1]: r for r in rejects}
    assert set(by_field) == {"COUNTRY", "CASHBACK_AMOUNT", "BALANCE", "CHANNEL"}
    assert "pattern" in by_field["COUNTRY"].reason
    assert by_field["CASHBACK_AMOUNT"].reason == "invalid packed-decimal sign nibble"
    assert by_field["BALANCE"].reason == "invalid digit in zoned decimal"
    assert "allowed values" in by_field["CHANNEL"].reason
    assert (by_field["BALANCE"].field_offset, by_field["BALANCE"].length) == (80, 9)


def _tamper_trailer(path: Path, start: int, new: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) - LRECL + start
    data[at: at + len(new)] = new
    path.write_bytes(bytes(data))


def test_tampered_trailer_count_fails_the_control_report(tmp_path: Path) -> None:
    path = tmp_path / "tampered.ebc"
    examples.generate_card_file(path, records=500)
    _tamper_trailer(path, 1, code_page("cp037").encode_text("000000499"))  # TRL-COUNT
    contract = load_contract(examples.contract_path())
    table, rejects, report = _decode(contract, path)
    assert rejects == [] and table.num_rows == 500
    assert not report.ok
    assert any("record count" in p and "499" in p for p in report.problems)
    assert contract.rejects_file(report)


def test_tampered_trailer_hash_total_fails_the_control_report(tmp_path: Path) -> None:
    path = tmp_path / "tampered.ebc"
    examples.generate_card_file(path, records=500)
    _tamper_trailer(path, 10, bytes.fromhex("000000000000001C"))  # TRL-AMOUNT-TOTAL = 0.01
    contract = load_contract(examples.contract_path())
    _, _, report = _decode(contract, path)
    assert not report.ok
    assert any("TXN-AMOUNT" in p and "0.01" in p for p in report.problems)
    assert contract.rejects_file(report)


def test_cli_generates_and_decodes_the_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = tmp_path / "c.dat", tmp_path / "c.jsonl"
    contract = str(examples.contract_path())
    assert main(["examples", "generate", "--records", "1000", "-o", str(data)]) == EXIT_OK
    assert main(["decode", str(data), "--contract", contract, "-o", str(out)]) == EXIT_OK
    assert len(out.read_bytes().splitlines()) == 1000
    assert '"ok": true' in capsys.readouterr().err

    generate_bad = ["examples", "generate", "--records", "1000", "-o", str(data), "--bad-every", "10"]
    assert main(generate_bad) == EXIT_OK
    assert main(["decode", str(data), "--contract", contract, "-o", str(out)]) == EXIT_REJECTS
    assert len(out.read_bytes().splitlines()) == 900
    assert capsys.readouterr().err.count('"reason"') == 100
