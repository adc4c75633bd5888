"""One small input per defect class the fuzz suite has found (the smallest the fuzz runs
found, shrunk by hand). A class still in KNOWN_DEFECTS must show that defect or none; a
fixed one has left the list, and its input must then run clean: the fix holds."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.fuzz_harness import KNOWN_DEFECTS, FuzzWorker, check, encode_bytes, known_defect
from tests.fuzz_inputs import CARD, CARD_COPYBOOK, CARD_SAMPLE, CONFIG, yaml_text

pytestmark = pytest.mark.fuzz


def _cpy(*entries: str) -> str:
    return "".join(f"       {e}\n" for e in entries)


def _card_without_header_start() -> dict[str, Any]:
    tree = copy.deepcopy(CARD)
    del tree["record"]["header"]["when"]["start"]
    return tree


def _card_with_rule(when: str) -> dict[str, Any]:
    tree = copy.deepcopy(CARD)
    tree["fallback"][0]["when"] = when
    return tree


REPRODUCERS: dict[str, tuple[str, dict[str, Any]]] = {
    "huge-layout": ("copybook", {"text": _cpy("01  REC.", "    05  BIG PIC X(400000000).")}),
    "huge-record-length": ("copybook", {"text": _cpy("01  REC.", "    03  A OCCURS 1000000000000 TIMES.",
                                                     "        05  B COMP-1 OCCURS 400000000 TIMES.")}),
    "wide-number-precision": ("copybook", {"text": _cpy("01  REC.", "    05  N PIC 9(77).")}),
    "round-digits": ("expression", {"text": "round(TXN_AMOUNT, -12)"}),
    "all-filler-record": ("decode", {"copybook": _cpy("01  REC.", "    05  FILLER PIC X(4)."),
                                     "data_b64": encode_bytes(b"abcdefgh"), "options": {"record_format": "F"}}),
    "wide-binary-overflow": ("decode", {"copybook": _cpy("01  REC.", "    05  N PIC 9(19) COMP."),
                                        "data_b64": encode_bytes(b"\x0a" + bytes(8)),
                                        "options": {"record_format": "F"}}),
    "non-utf8-yaml": ("config", {"yaml_b64": encode_bytes(b"models: {}\n# \xff\n")}),
    "when-without-start": ("contract", {"yaml_b64": encode_bytes(yaml_text(_card_without_header_start())),
                                        "copybooks": {"CARDTXN.cpy": CARD_COPYBOOK},
                                        "data_b64": encode_bytes(CARD_SAMPLE)}),
    "check-skips-expressions": ("contract", {"yaml_b64": encode_bytes(yaml_text(_card_with_rule("NO_SUCH_FIELD > 1"))),
                                             "copybooks": {"CARDTXN.cpy": CARD_COPYBOOK},
                                             "data_b64": encode_bytes(CARD_SAMPLE)}),
    "multiline-expression-message": ("expression", {"text": "MCC > (\n1"}),
    "long-decimal-literal": ("expression", {"text": "MCC > 12345678901234567890.123456789012345678"}),
    "yaml-escape-valueerror": ("config", {"yaml_b64": encode_bytes(b'models: {}\nx: "\\U0011FFFF"\n')}),
    "literal-in-list": ("expression", {"text": "1 in (1, 2)"}),
    "round-huge-digits": ("expression", {"text": "round(MCC, 99999999999)"}),
}


def test_every_known_defect_has_a_reproducer() -> None:
    # a fixed defect leaves KNOWN_DEFECTS, and its reproducer stays here: it must then run clean
    assert {d.id for d in KNOWN_DEFECTS} <= set(REPRODUCERS)


@pytest.mark.parametrize("defect_id", sorted(REPRODUCERS))
def test_known_defect_reproducer(fuzz_worker: FuzzWorker, defect_id: str) -> None:
    target, inp = REPRODUCERS[defect_id]
    outcome = check(fuzz_worker, target, inp)  # fails on a finding that KNOWN_DEFECTS does not list
    if outcome.is_bug:
        matched = known_defect(target, outcome)
        assert matched is not None and matched.id == defect_id, outcome.describe()


def test_the_base_inputs_still_load(fuzz_worker: FuzzWorker) -> None:
    """The reproducers are small edits of these: unedited, they pass."""
    assert check(fuzz_worker, "config", {"yaml_b64": encode_bytes(yaml_text(CONFIG))}).status == "ok"
    assert check(fuzz_worker, "expression", {"text": "round(TXN_AMOUNT, 1)"}).status == "ok"
    assert check(fuzz_worker, "expression", {"text": "MCC in (1, 2)"}).status == "ok"
