"""`compare(old, new)`: can a reader of NEW read data written for OLD, and why not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main
from schemas.compat import Verdict, compare
from schemas.contract import Contract, load_contract
from tests.helpers import copybook

# 24-byte card record: TXN-ID 0-10, AMOUNT 10-15, COUNTRY 15-17, CHANNEL 17-18, FILLER 18-24.
BASE = [
    "01  CARD-TXN.",
    "    05  TXN-ID          PIC X(10).",
    "    05  AMOUNT          PIC S9(7)V99 COMP-3.",
    "    05  COUNTRY         PIC X(2).",
    "    05  CHANNEL         PIC X.",
    "        88  CH-POS      VALUE 'P'.",
    "        88  CH-ECOM     VALUE 'E'.",
    "    05  FILLER          PIC X(6).",
]


def edit(lines: list[str], old: str, *new: str) -> list[str]:
    """The copybook lines with the line containing `old` replaced by `new` (none: removed)."""
    hits = [i for i, line in enumerate(lines) if old in line]
    assert len(hits) == 1, f"{old!r} matches {len(hits)} lines"
    i = hits[0]
    return [*lines[:i], *new, *lines[i + 1:]]


class Contracts:
    """Writes versioned contracts (YAML + copybook) into a temporary folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, version: int, lines: list[str] = BASE, fields: dict[str, Any] | None = None,
             **record: Any) -> Path:
        folder = self.root / f"v{version}"
        folder.mkdir(exist_ok=True)
        (folder / "CARD.cpy").write_text(copybook(*lines))
        doc = {"contract": "card_txn", "version": version,
               "record": {"format": "copybook", "copybook": "CARD.cpy", "encoding": "cp037", **record},
               "fields": fields or {}}
        path = folder / "card_txn.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def __call__(self, version: int, lines: list[str] = BASE, fields: dict[str, Any] | None = None,
                 **record: Any) -> Contract:
        return load_contract(self.path(version, lines, fields, **record))


@pytest.fixture
def make(tmp_path: Path) -> Contracts:
    return Contracts(tmp_path)


def breaking(verdict: Verdict, *words: str) -> list[str]:
    """The breaking reasons mentioning every word."""
    return [r for r in verdict.reasons if all(w in r for w in words)]


def noted(verdict: Verdict, *words: str) -> list[str]:
    return [n for n in verdict.notes if all(w in n for w in words)]


# --------------------------------------------------------------------------- framing


def test_identical_contracts_are_compatible(make: Contracts) -> None:
    verdict = compare(make(1), make(2))
    assert verdict.compatible
    assert verdict.render() == "compatible"


def test_encoding_change_breaks_old_readers(make: Contracts) -> None:
    verdict = compare(make(1), make(2, encoding="cp500"))
    assert not verdict.compatible
    assert breaking(verdict, "encoding", "cp037", "cp500")


def test_ascii_data_read_as_utf8_is_only_a_note(make: Contracts) -> None:
    verdict = compare(make(1, encoding="ascii"), make(2, encoding="utf-8"))
    assert verdict.compatible
    assert noted(verdict, "encoding ascii -> utf-8")


def test_record_format_change_breaks_old_readers(make: Contracts) -> None:
    verdict = compare(make(1), make(2, record_format="VB"))
    assert breaking(verdict, "record format", "F", "VB")


def test_fixed_record_length_change_breaks_old_readers(make: Contracts) -> None:
    verdict = compare(make(1), make(2, record_length=30))
    assert breaking(verdict, "record length", "24", "30")


def test_float_format_change_breaks_readers_of_float_fields(make: Contracts) -> None:
    lines = edit(BASE, "FILLER", "    05  RATE            COMP-1.", "    05  FILLER          PIC X(2).")
    old, new = make(1, lines), make(2, lines, float_format="ieee")
    assert breaking(compare(old, new), "float format", "ibm", "ieee")
    assert compare(make(3), make(4, float_format="ieee")).compatible  # no floats: nothing to misread


# --------------------------------------------------------------------------- fields


def test_added_field_in_old_filler_breaks_old_readers(make: Contracts) -> None:
    new = edit(BASE, "FILLER", "    05  RISK            PIC 9(3).", "    05  FILLER          PIC X(3).")
    verdict = compare(make(1), make(2, new))
    [reason] = verdict.reasons
    assert "CARD_TXN.RISK: not in v1" in reason
    assert "bytes 18-21, which v1 wrote as FILLER" in reason


def test_added_field_at_the_end_of_fixed_records_breaks_old_readers(make: Contracts) -> None:
    new = [*BASE, "    05  RISK            PIC 9(3)."]
    verdict = compare(make(1), make(2, new))
    assert breaking(verdict, "record length", "24", "27")
    assert breaking(verdict, "RISK", "past the end of v1's 24-byte records")


def test_optional_field_beyond_old_variable_records_is_only_a_note(make: Contracts) -> None:
    new = [*BASE, "    05  RISK            PIC 9(3)."]
    verdict = compare(make(1, record_format="V"), make(2, new, record_format="V"))
    assert verdict.compatible, verdict.render()
    assert noted(verdict, "CARD_TXN.RISK", "beyond the end of v1's records", "null")


def test_added_required_field_breaks_old_readers(make: Contracts) -> None:
    new = [*BASE, "    05  RISK            PIC 9(3)."]
    verdict = compare(make(1, record_format="V"), make(2, new, {"RISK": {"required": True}}, record_format="V"))
    assert breaking(verdict, "CARD_TXN.RISK: not in v1 and is required")


def test_field_shifted_by_an_insert_breaks_old_readers(make: Contracts) -> None:
    new = edit(BASE, "TXN-ID", "    05  TXN-ID          PIC X(10).", "    05  BRANCH          PIC X(2).")
    new = edit(new, "FILLER", "    05  FILLER          PIC X(4).")
    verdict = compare(make(1), make(2, new))
    assert breaking(verdict, "CARD_TXN.AMOUNT: moves from offset 10 to 12")
    assert breaking(verdict, "CARD_TXN.CHANNEL: moves from offset 17 to 19")
    assert breaking(verdict, "CARD_TXN.BRANCH: not in v1", "CARD_TXN.AMOUNT")


def test_usage_change_breaks_old_readers(make: Contracts) -> None:
    new = edit(BASE, "AMOUNT", "    05  AMOUNT          PIC S9(7)V99 COMP.")
    new = edit(new, "FILLER", "    05  FILLER          PIC X(9).")
    verdict = compare(make(1), make(2, new))
    assert breaking(verdict, "CARD_TXN.AMOUNT: usage packed", "binary")


def test_type_change_breaks_old_readers(make: Contracts) -> None:
    new = edit(BASE, "COUNTRY", "    05  COUNTRY         PIC 9(2).")
    verdict = compare(make(1), make(2, new))
    assert breaking(verdict, "CARD_TXN.COUNTRY: text (PIC X(2)) in v1, number (PIC 9(2)) in v2")


def test_scale_change_breaks_old_readers(make: Contracts) -> None:
    new = edit(BASE, "AMOUNT", "    05  AMOUNT          PIC S9(6)V999 COMP-3.")
    verdict = compare(make(1), make(2, new))
    [reason] = verdict.reasons
    assert "CARD_TXN.AMOUNT: scale 2" in reason and "3 (PIC S9(6)V999 COMP-3) in v2" in reason


def test_text_growth_in_the_same_place_breaks_old_readers(make: Contracts) -> None:
    new = edit(BASE, "CHANNEL", "    05  CHANNEL         PIC X(3).")
    new = edit(new, "FILLER", "    05  FILLER          PIC X(4).")
    verdict = compare(make(1), make(2, new))
    [reason] = verdict.reasons
    assert "CARD_TXN.CHANNEL: text grows from 1 to 3 bytes" in reason
    assert "2 bytes that v1 wrote as FILLER" in reason


def test_text_shrinking_breaks_old_readers(make: Contracts) -> None:
    new = edit(BASE, "TXN-ID", "    05  TXN-ID          PIC X(8).", "    05  FILLER          PIC X(2).")
    verdict = compare(make(1), make(2, new))
    assert breaking(verdict, "CARD_TXN.TXN_ID: text shrinks from 10 to 8 bytes")


def test_numeric_precision_narrowing_breaks_old_readers(make: Contracts) -> None:
    old = edit(BASE, "FILLER", "    05  TERMINAL        PIC S9(9) COMP.", "    05  FILLER PIC X(2).")
    new = edit(BASE, "FILLER", "    05  TERMINAL        PIC S9(5) COMP.", "    05  FILLER PIC X(2).")
    verdict = compare(make(1, old), make(2, new))
    [reason] = verdict.reasons
    assert "CARD_TXN.TERMINAL: precision narrows from 9 to 5 digits" in reason


def test_numeric_precision_widening_in_the_same_bytes_is_a_note(make: Contracts) -> None:
    old = edit(BASE, "FILLER", "    05  TERMINAL        PIC S9(5) COMP.", "    05  FILLER PIC X(2).")
    new = edit(BASE, "FILLER", "    05  TERMINAL        PIC S9(9) COMP.", "    05  FILLER PIC X(2).")
    verdict = compare(make(1, old), make(2, new))
    assert verdict.compatible
    assert noted(verdict, "TERMINAL: precision widens from 5 to 9 digits")


def test_signed_to_unsigned_breaks_old_readers(make: Contracts) -> None:
    new = edit(BASE, "AMOUNT", "    05  AMOUNT          PIC 9(7)V99 COMP-3.")
    assert breaking(compare(make(1), make(2, new)), "AMOUNT: signed in v1, unsigned in v2")


def test_occurs_count_change_breaks_old_readers(make: Contracts) -> None:
    old = edit(BASE, "FILLER", "    05  TAGS  PIC X(2) OCCURS 3.")
    new = edit(BASE, "FILLER", "    05  TAGS  PIC X(3) OCCURS 2.")
    verdict = compare(make(1, old), make(2, new))
    assert breaking(verdict, "CARD_TXN.TAGS: OCCURS 3 in v1, OCCURS 2 in v2")


def test_removed_field_is_only_a_note(make: Contracts) -> None:
    new = edit(BASE, "COUNTRY", "    05  FILLER          PIC X(2).")
    verdict = compare(make(1), make(2, new))
    assert verdict.compatible
    assert noted(verdict, "CARD_TXN.COUNTRY (bytes 15-17) is no longer read by v2")


def test_renamed_record_still_matches_fields_by_their_place_in_it(make: Contracts) -> None:
    new = edit(BASE, "01  CARD-TXN.", "01  CARD-TXN-V2.")
    assert compare(make(1), make(2, new)).compatible


def test_field_moved_into_a_group_at_the_same_bytes_is_only_a_note(make: Contracts) -> None:
    new = edit(BASE, "COUNTRY", "    05  WHERE.", "        10  COUNTRY     PIC X(2).")
    verdict = compare(make(1), make(2, new))
    assert verdict.compatible, verdict.render()
    assert noted(verdict, "CARD_TXN.WHERE.COUNTRY: was CARD_TXN.COUNTRY")


def test_new_redefines_view_of_old_bytes_is_only_a_note(make: Contracts) -> None:
    new = edit(BASE, "AMOUNT", "    05  AMOUNT          PIC S9(7)V99 COMP-3.",
               "    05  AMOUNT-RAW REDEFINES AMOUNT PIC X(5).")
    verdict = compare(make(1), make(2, new))
    assert verdict.compatible, verdict.render()
    assert noted(verdict, "CARD_TXN.AMOUNT_RAW: new REDEFINES view", "which v1 wrote as CARD_TXN.AMOUNT")


def test_new_redefines_view_with_rules_breaks_old_readers(make: Contracts) -> None:
    new = edit(BASE, "AMOUNT", "    05  AMOUNT          PIC S9(7)V99 COMP-3.",
               "    05  AMOUNT-RAW REDEFINES AMOUNT PIC X(5).")
    verdict = compare(make(1), make(2, new, {"AMOUNT-RAW": {"pattern": "^[0-9]+$"}}))
    assert breaking(verdict, "CARD_TXN.AMOUNT_RAW: not in v1 and v2 checks CARD_TXN.AMOUNT_RAW")


# --------------------------------------------------------------------------- contract rules


def test_field_becoming_required_breaks_old_readers(make: Contracts) -> None:
    verdict = compare(make(1), make(2, fields={"COUNTRY": {"required": True}}))
    [reason] = verdict.reasons
    assert reason == "CARD_TXN.COUNTRY: now required; may reject records v1 accepted"


def test_field_no_longer_required_is_only_a_note(make: Contracts) -> None:
    verdict = compare(make(1, fields={"COUNTRY": {"required": True}}), make(2))
    assert verdict.compatible
    assert noted(verdict, "COUNTRY: no longer required")


def test_higher_minimum_and_lower_maximum_break_old_readers(make: Contracts) -> None:
    old = make(1, fields={"AMOUNT": {"min": 0, "max": 1000}})
    new = make(2, fields={"AMOUNT": {"min": 10, "max": 500}})
    verdict = compare(old, new)
    assert breaking(verdict, "AMOUNT: min raised from 0 to 10", "may reject records v1 accepted")
    assert breaking(verdict, "AMOUNT: max lowered from 1000 to 500")


def test_new_minimum_breaks_old_readers(make: Contracts) -> None:
    assert breaking(compare(make(1), make(2, fields={"AMOUNT": {"min": 0}})), "AMOUNT: new min 0")


def test_looser_bounds_are_only_notes(make: Contracts) -> None:
    old = make(1, fields={"AMOUNT": {"min": 10, "max": 500}})
    verdict = compare(old, make(2, fields={"AMOUNT": {"min": 0}}))
    assert verdict.compatible
    assert noted(verdict, "AMOUNT: min relaxed from 10 to 0")
    assert noted(verdict, "AMOUNT: max 500 dropped")


def test_new_or_changed_pattern_breaks_old_readers(make: Contracts) -> None:
    assert breaking(compare(make(1), make(2, fields={"COUNTRY": {"pattern": "^[A-Z]{2}$"}})),
                    "COUNTRY: new pattern ^[A-Z]{2}$")
    old = make(3, fields={"COUNTRY": {"pattern": "^[A-Z]{2}$"}})
    assert breaking(compare(old, make(4, fields={"COUNTRY": {"pattern": "^(GB|US)$"}})),
                    "COUNTRY: pattern changes from ^[A-Z]{2}$ to ^(GB|US)$")
    assert compare(old, make(5)).compatible


def test_smaller_enum_breaks_old_readers(make: Contracts) -> None:
    old = make(1, fields={"COUNTRY": {"enum": ["GB", "US", "FR"]}})
    verdict = compare(old, make(2, fields={"COUNTRY": {"enum": ["GB", "US"]}}))
    assert breaking(verdict, "COUNTRY: no longer allows 'FR'; may reject records v1 accepted")


def test_dropping_an_88_level_value_breaks_old_readers(make: Contracts) -> None:
    new = edit(BASE, "CH-ECOM")
    verdict = compare(make(1), make(2, new))
    assert breaking(verdict, "CHANNEL: no longer allows 'E'")


def test_adding_an_88_level_value_is_only_a_note(make: Contracts) -> None:
    new = edit(BASE, "CH-ECOM", "        88  CH-ECOM     VALUE 'E'.", "        88  CH-MOTO     VALUE 'M'.")
    verdict = compare(make(1), make(2, new))
    assert verdict.compatible
    assert noted(verdict, "CHANNEL: now also allows 'M'")


def test_first_allowed_values_break_old_readers(make: Contracts) -> None:
    verdict = compare(make(1), make(2, fields={"COUNTRY": {"enum": ["GB"]}}))
    assert breaking(verdict, "COUNTRY: values now limited to 'GB'")


# --------------------------------------------------------------------------- header and trailer

HDR_CPY = [
    "01  CARD-HDR.",
    "    05  HDR-TYPE        PIC X.",
    "    05  HDR-DATE        PIC 9(8).",
    "    05  FILLER          PIC X(15).",
    *BASE,
]
HEADER = {"when": {"start": 1, "length": 1, "equals": "H"}, "record_name": "CARD-HDR"}


def test_header_discriminator_change_breaks_old_readers(make: Contracts) -> None:
    old = make(1, HDR_CPY, record_name="CARD-TXN", header=HEADER)
    new = make(2, HDR_CPY, record_name="CARD-TXN", header={**HEADER, "when": {"start": 1, "length": 1, "equals": "X"}})
    verdict = compare(old, new)
    [reason] = verdict.reasons
    assert reason.startswith("header: discriminator changes from bytes 0-1 = 'H' in v1 to bytes 0-1 = 'X'")


def test_removing_the_header_breaks_old_readers(make: Contracts) -> None:
    old = make(1, HDR_CPY, record_name="CARD-TXN", header=HEADER)
    verdict = compare(old, make(2, HDR_CPY, record_name="CARD-TXN"))
    assert breaking(verdict, "header: v1 files carry header records", "read them as detail records")


def test_adding_a_checked_trailer_breaks_old_readers(make: Contracts) -> None:
    lines = [*BASE, "01  CARD-TRL.", "    05  TRL-TYPE PIC X.", "    05  TRL-COUNT PIC 9(6).",
             "    05  FILLER PIC X(17)."]
    trailer = {"when": {"start": 1, "length": 1, "equals": "T"}, "record_name": "CARD-TRL",
               "control": {"count": "TRL-COUNT"}}
    verdict = compare(make(1, lines, record_name="CARD-TXN"), make(2, lines, record_name="CARD-TXN", trailer=trailer))
    assert breaking(verdict, "trailer: v2 expects trailer records", "fails its control check")


def test_header_layout_changes_are_compared_too(make: Contracts) -> None:
    new_lines = edit(HDR_CPY, "HDR-DATE", "    05  HDR-DATE        PIC 9(6).", "    05  FILLER PIC X(2).")
    old = make(1, HDR_CPY, record_name="CARD-TXN", header=HEADER)
    new = make(2, new_lines, record_name="CARD-TXN", header=HEADER)
    assert breaking(compare(old, new), "header CARD_HDR.HDR_DATE: precision narrows from 8 to 6 digits")


# --------------------------------------------------------------------------- rendering and CLI


def test_render_counts_reasons_then_lists_them_and_the_notes(make: Contracts) -> None:
    new = edit(BASE, "COUNTRY", "    05  FILLER          PIC X(2).")
    verdict = compare(make(1), make(2, new, encoding="cp500", fields={"TXN-ID": {"required": True}}))
    lines = verdict.render().splitlines()
    assert lines[0] == "incompatible: 2 reasons"
    assert lines[1].startswith("  breaking: encoding")
    assert lines[2] == "  breaking: CARD_TXN.TXN_ID: now required; may reject records v1 accepted"
    assert lines[3].startswith("  note: CARD_TXN.COUNTRY")
    assert Verdict(reasons=["x"]).render() == "incompatible: 1 reason\n  breaking: x"


def test_cli_contract_diff_exits_0_when_compatible(make: Contracts, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = make.path(1), make.path(2, edit(BASE, "COUNTRY", "    05  FILLER PIC X(2)."))
    assert main(["contract", "diff", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "compatible"
    assert "no longer read" in out


def test_cli_contract_diff_exits_1_when_incompatible(make: Contracts, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = make.path(1), make.path(2, fields={"AMOUNT": {"required": True}})
    assert main(["contract", "diff", str(old), str(new)]) == 1
    assert capsys.readouterr().out.startswith("incompatible: 1 reason\n  breaking: CARD_TXN.AMOUNT: now required")
