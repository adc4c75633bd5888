"""Contracts and configs that lie: duplicate YAML keys, unknown keys, and scoring sections
that `lgw contract check` passed but `lgw score` refused or crashed on."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.contract_scoring import load_scoring_contract
from schemas.contract import ControlReport, load_contract
from schemas.errors import ConfigError, ContractError
from schemas.examples import contract_path, generate_card_file

CARD = contract_path()
CARD_TEXT = CARD.read_text(encoding="utf-8")


def card_variant(tmp_path: Path, old: str, new: str) -> Path:
    """The bundled card contract with one edit, beside a copy of its copybooks."""
    assert old in CARD_TEXT, old
    shutil.copytree(CARD.parent / "copybooks", tmp_path / "copybooks", dirs_exist_ok=True)
    path = tmp_path / "card.yaml"
    path.write_text(CARD_TEXT.replace(old, new, 1), encoding="utf-8")
    return path


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str]:
    code = main(["contract", "check", str(path)])
    return code, capsys.readouterr().err


# ---------------------------------------------------------------- duplicate keys

def test_a_second_pii_key_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = card_variant(tmp_path, "    pii: mask\n", "    pii: mask\n    pii: false\n")
    lines = path.read_text().splitlines()
    first = lines.index("    pii: mask") + 1
    with pytest.raises(ContractError, match=rf"card.yaml:{first + 1}: duplicate key 'pii' \(first on line {first}\)"):
        load_contract(path)


def test_yaml_is_parsed_by_libyaml_and_both_parsers_refuse_a_second_key() -> None:
    """The strict loader runs on libyaml's parser where PyYAML has it (its wheels do); the
    duplicate-key rule is the constructor's, so it holds on the pure-Python parser too."""
    import yaml

    from schemas.yaml_loader import DuplicateKeyError, StrictKeys, StrictSafeLoader

    assert yaml.__with_libyaml__ and issubclass(StrictSafeLoader, yaml.CSafeLoader)
    python_parser = type("PythonStrict", (StrictKeys, yaml.SafeLoader), {})
    text = "a: 1\nb: {c: 2, c: 3}\n"
    def load(loader: type[yaml.SafeLoader], text: str) -> object:
        parser = loader(text)
        try:
            return parser.get_single_data()
        finally:
            parser.dispose()

    for loader in (StrictSafeLoader, python_parser):
        with pytest.raises(DuplicateKeyError) as caught:
            load(loader, text)
        assert (caught.value.key, caught.value.line, caught.value.first_line) == ("c", 2, 2)
    assert load(StrictSafeLoader, CARD_TEXT) == load(python_parser, CARD_TEXT)


def test_a_lone_surrogate_is_one_error_line_naming_it() -> None:
    """libyaml reads UTF-8: text that cannot be encoded (a string decoded with
    surrogateescape) is refused as what it is, not as a scanner error."""
    from schemas.yaml_loader import load_yaml

    with pytest.raises(ConfigError, match=r"^x.yaml: not valid YAML: character '\\ud800' at position 3 is not "
                                          r"Unicode text \(a lone surrogate\)$"):
        load_yaml("a: \ud800\n", "x.yaml")


def test_duplicate_keys_in_flow_mappings_are_refused(tmp_path: Path) -> None:
    path = card_variant(tmp_path, "    fraud_score: {type: float, min: 0, max: 1}",
                        "    fraud_score: {type: float, min: 0, max: 1, max: 5}")
    with pytest.raises(ContractError, match="duplicate key 'max'"):
        load_contract(path)


def test_one_field_constrained_under_two_spellings_is_refused(tmp_path: Path) -> None:
    path = card_variant(tmp_path, "  TXN-TIME:\n", "  TXN_PAN: {pii: false}\n  TXN-TIME:\n")
    with pytest.raises(ContractError, match=r"fields\.TXN_PAN: names the same field as fields\.TXN-PAN"):
        load_contract(path)


def test_a_pin_followed_by_sha256_null_in_gateway_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("models:\n  fraud:\n    endpoint:\n      backend: onnx\n      path: fraud.onnx\n"
                    "      sha256: 0123abcd\n      sha256: null\n")
    with pytest.raises(ConfigError, match=r"gateway.yaml:7: duplicate key 'sha256' \(first on line 6\)"):
        load_config(path)


def _laughs() -> str:
    """Ten levels of ten aliases: 80 lines that stand for 10**10 values."""
    text, previous = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n', "l0"
    for level in range(1, 10):
        text += f"l{level}: &l{level} [{', '.join([f'*{previous}'] * 10)}]\n"
        previous = f"l{level}"
    return text


# libyaml's parser (PyYAML's wheels) and the pure-Python one word the first two apart
@pytest.mark.parametrize(("text", "says"), [
    ('models: {}\nx: "\\U0011FFFF"\n',
     r"not valid YAML: (.* found invalid Unicode character escape code|chr\(\) arg not in range)"),
    ("x: " + "[" * 5_000 + "]" * 5_000 + "\n", "exceeded maximum nesting depth|nested too deeply"),
    (_laughs(), "aliases expand to more than 1,000,000 values"),
    ("a: &a [*a]\n", "aliases expand to more than"),
])
def test_yaml_that_would_crash_or_explode_the_loader_is_one_line(tmp_path: Path, text: str, says: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        load_config(path)
    contract = tmp_path / "card.yaml"
    contract.write_text(text)
    assert main(["contract", "check", str(contract)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lgw: error: ") and re.search(says, err)


def test_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("x-breaker: &b {sliding_window_size: 10, minimum_number_of_calls: 5}\n"
                    "models:\n  m:\n    endpoint: {backend: onnx, path: m.onnx, sha256: ab}\n"
                    "    breaker:\n      <<: *b\n      sliding_window_size: 20\n")
    with pytest.raises(ConfigError, match="x-breaker"):  # the anchor's home is an unknown key, not a duplicate
        load_config(path)
    path.write_text(path.read_text().replace("x-breaker: &b", "models:\n  base:\n    endpoint: {backend: onnx, "
                                             "path: b.onnx, sha256: ab}\n    breaker: &b", 1)
                    .replace("models:\n  m:", "  m:", 1))
    assert load_config(path).models["m"].breaker.sliding_window_size == 20


# ---------------------------------------------------------------- unknown keys, NaN

@pytest.mark.parametrize(("old", "new", "fragment"), [
    ("  name: fraud\n", "  name: fraud\n  sha256: abc\n", "model.sha256: unknown key"),
    ("  TXN-TIME:\n    max: 235959\n", "  TXN-TIME:\n    max: .nan\n", "fields.TXN-TIME.max: Input should be a finite"),
    ("fraud_score: {type: float, min: 0, max: 1}", "fraud_score: {type: float, min: .nan, max: 1}",
     "model.outputs.fraud_score.min: Input should be a finite"),
    ("    cashback: CASHBACK_AMOUNT\n", "    cashback: {expr: CASHBACK_AMOUNT, default: .nan}\n",
     "model.features.cashback: default.float: Input should be a finite"),
])
def test_unknown_keys_and_nan_values_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 old: str, new: str, fragment: str) -> None:
    code, err = check(capsys, card_variant(tmp_path, old, new))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("lgw: error: ") and fragment in err


# ---------------------------------------------------------------- check compiles what score runs

@pytest.mark.parametrize(("old", "new", "fragment"), [
    ("    mcc: MCC\n", "    mcc: MCC_CODE\n", "model.features.mcc: unknown field MCC_CODE"),
    ('    foreign: "COUNTRY != \'US\'"\n', '    foreign: "COUNTRY !== \'US\'"\n',
     "model.features.foreign: syntax error"),
    ('  - when: "CHANNEL == \'E\' and TXN_AMOUNT > 2000"',
     '  - when: "CHANNEL == \'E\' and TXN_AMOUNT > AMOUNT"', "fallback rule 2 (LARGE_ECOM): unknown field AMOUNT"),
    ("    amount: TXN_AMOUNT\n", "    amount: round(TXN_AMOUNT, -12)\n", "every value would round to 0"),
    ("TXN_AMOUNT > 5000 and", "TXN_AMOUNT > 1e999 and", "1e999 does not fit a float64"),
    ('pattern: "^[A-Z]{2}$"', 'pattern: "^(?=[A-Z])[A-Z]{2}$"', "does not compile for RE2"),
    ('pattern: "^[A-Z]{3}$"', 'pattern: "^([A-Z])\\\\1[A-Z]$"', "does not compile for RE2"),
])
def test_contract_check_refuses_what_scoring_would(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   old: str, new: str, fragment: str) -> None:
    code, err = check(capsys, card_variant(tmp_path, old, new))
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and fragment in err


@pytest.mark.parametrize(("old", "new", "fragment"), [
    # the fuzz suite's case: load_scoring_contract passed, `lgw contract check` exited 2
    ("    fraud_score: {type: float, min: 0, max: 1}\n", "    - fraud_score: {type: float, min: 0, max: 1}\n",
     "model.outputs: expected a mapping of output name"),
    ("    mcc: MCC\n", "    mcc: MCC_CODE\n", "model.features.mcc: unknown field MCC_CODE"),
    ("  - then: {fraud_score: 0.05, reason: DEFAULT}\n", "", "a final default rule (no `when`) is required"),
    ("    then: {fraud_score: 0.9, reason: LARGE_FOREIGN}", "    then: {fraud_score: 0.9, reason: [BIG]}",
     "`reason` must be a non-empty string code"),
    ("  outputs:\n    fraud_score: {type: float, min: 0, max: 1}\n", "", "model.outputs is required"),
])
def test_load_scoring_contract_refuses_what_contract_check_refuses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, fragment: str) -> None:
    """load_scoring_contract (what scoring and every pipeline use) runs the checks `lgw
    contract check` runs, with the same error."""
    path = card_variant(tmp_path, old, new)
    code, err = check(capsys, path)
    with pytest.raises(ContractError) as caught:
        load_scoring_contract(path)
    assert code == 2 and err == f"lgw: error: {caught.value}\n" and fragment in err


def test_a_large_decimal_literal_compiles_instead_of_crashing(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = card_variant(tmp_path, "TXN_AMOUNT > 5000 and", "TXN_AMOUNT * 1e30 * 1e30 > 5000 and")
    assert main(["contract", "check", str(path)]) == 0
    assert "3 fallback rules: compiled" in capsys.readouterr().out


def test_contract_check_says_the_scoring_sections_were_compiled(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["contract", "check", str(CARD)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("scoring: 5 features (amount, foreign, mcc, ecom, cashback), outputs fraud_score, "
                           "3 fallback rules")


def test_a_contract_without_scoring_sections_still_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = card_variant(tmp_path, "model:", "unused_model:")
    text = path.read_text()
    path.write_text(text[:text.index("unused_model:")])
    assert main(["contract", "check", str(path)]) == 0
    assert "scoring:" not in capsys.readouterr().out


# ---------------------------------------------------------------- model pins

def test_an_unpinned_onnx_model_loads_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    from adapters.models.onnx import OnnxModel
    from schemas.examples import model_info

    info = model_info("fraud")
    with caplog.at_level("WARNING", logger="adapters.models.onnx"):
        OnnxModel(info["path"])
    warnings = [r.getMessage() for r in caplog.records if r.name == "adapters.models.onnx"]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith(f"model file {info['path']} is not pinned") and info["sha256"] in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="adapters.models.onnx"):
        OnnxModel(info["path"], sha256=info["sha256"])
    assert not [r for r in caplog.records if r.name == "adapters.models.onnx"]


def test_require_model_pins_refuses_an_unpinned_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("require_model_pins: true\nmodels:\n  fraud:\n    endpoint: {backend: onnx, path: fraud.onnx}\n")
    data = tmp_path / "in.dat"
    data.write_bytes(b"")
    code = main(["score", "--contract", str(CARD), "--input", str(data), "--output", str(tmp_path / "o.jsonl"),
                 "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err == (f"lgw: error: {config}: models.fraud.endpoint.sha256: require_model_pins is true, and model "
                   "fraud (fraud.onnx) has no sha256 pin; add the file's sha256\n")
    config.write_text(config.read_text().replace("path: fraud.onnx", "path: fraud.onnx, sha256: ab12"))
    assert load_config(config).require_model_pins


# ---------------------------------------------------------------- a copybook path that is no copybook

@pytest.mark.parametrize(("text", "line", "secret"), [
    ("root:$6$Xq9sAltSECRETHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n", 1, "SECRETHASH"),
    ("machine api.example.com login bob password Hunter2secret.\n", 1, "Hunter2secret"),
    ("# comment\n\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC.\n", 1,
     "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
])
def test_a_copybook_path_to_another_file_does_not_echo_its_text(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, secret: str) -> None:
    (tmp_path / "shadow").write_text(text)
    path = card_variant(tmp_path, "copybook: copybooks/CARDTXN.cpy", "copybook: shadow")
    code, err = check(capsys, path)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"lgw: error: {tmp_path / 'shadow'}:{line}: ")
    assert "does not look like a copybook" in err
    assert secret not in err and secret.lower() not in err.lower()


def test_a_copybook_error_quotes_cobol_words_but_not_other_text(tmp_path: Path) -> None:
    from schemas.copybook import parse_copybook
    from schemas.errors import CopybookSyntaxError

    with pytest.raises(CopybookSyntaxError, match=r"^c\.cpy:2: unexpected word 'COMP-7' in the entry for A$"):
        parse_copybook("01  REC.\n    05  A  PIC X(3) COMP-7.\n", source="c.cpy")
    with pytest.raises(CopybookSyntaxError) as caught:
        parse_copybook("01  REC.\n    05  A  PIC X(3) pa$$word:s3cr3t.\n", source="c.cpy")
    assert str(caught.value) == "c.cpy:2: unexpected word <not shown: not a COBOL word> in the entry for A"
    with pytest.raises(CopybookSyntaxError) as caught:
        parse_copybook("01  REC.\n    05  A  PIC X(3).\n    05  B  PIC X(2) s3cr3t$\n", source="c.cpy")
    assert str(caught.value) == "c.cpy:3: the entry that starts on line 3 does not end with a period"


def test_a_contract_or_config_that_is_not_utf8_gets_one_line(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "card.yaml"
    binary.write_bytes(b"contract: card\n\xff\xfe\x00secret")
    code, err = check(capsys, binary)
    assert code == 2 and err == f"lgw: error: contract {binary}: expected UTF-8 YAML text; byte 15 is not UTF-8\n"
    with pytest.raises(ConfigError, match="expected UTF-8 YAML text; byte 15 is not UTF-8"):
        load_config(binary)


# ---------------------------------------------------------------- header and trailer types

@pytest.mark.parametrize(("when", "found"), [
    ('when: {length: 1, equals: "H"}', "neither"),
    ('when: {start: 1, offset: 0, length: 1, equals: "H"}', "both"),
])
def test_a_header_when_needs_one_of_start_and_offset(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    when: str, found: str) -> None:
    path = card_variant(tmp_path, 'when: {start: 1, length: 1, equals: "H"}', when)
    code, err = check(capsys, path)
    assert code == 2
    assert err == (f"lgw: error: {path}: record.header.when: give `start` (1-based) or `offset` (0-based) "
                   f"of the bytes to compare, found {found}\n")


def test_a_header_when_by_offset_reads_the_same_bytes_as_by_start(tmp_path: Path) -> None:
    by_start = 'when: {start: 1, length: 1, equals: "H"}'
    header = load_contract(card_variant(tmp_path, by_start, by_start.replace("start: 1", "offset: 0"))).header
    assert header is not None and header.offset == 0


def test_a_header_record_of_only_filler_is_split_off_and_counted(tmp_path: Path) -> None:
    """A header type with nothing to decode (only to tell it from the details) is still a
    header record: split off, with an empty header in the control report."""
    path = card_variant(tmp_path, "    record_name: CARD-HDR\n", "    fields: [{name: FILLER, pic: X(120)}]\n")
    data = tmp_path / "card.dat"
    summary = generate_card_file(data, records=5)
    contract = load_contract(path)
    report = ControlReport()
    chunks = list(contract.decode_file(data, report=report))
    assert sum(dc.table.num_rows for dc in chunks) + sum(len({r.record for r in dc.rejects}) for dc in chunks) == 5
    assert report.header == {}
    assert report.ok and report.details == summary["records"] == 5
