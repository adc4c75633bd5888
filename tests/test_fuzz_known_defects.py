"""One small input per entry of KNOWN_DEFECTS (the smallest the fuzz runs found, shrunk by
hand): each still shows its own defect, or no defect at all once the fix is merged. When
an entry is deleted from KNOWN_DEFECTS, its input here must then pass: the fix holds."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fuzz_harness import KNOWN_DEFECTS, FuzzWorker, check, encode_bytes, known_defect
from tests.fuzz_inputs import CONFIG, yaml_text

pytestmark = pytest.mark.fuzz


REPRODUCERS: dict[str, tuple[str, dict[str, Any]]] = {
    "round-digits": ("expression", {"text": "round(TXN_AMOUNT, -12)"}),
    "non-utf8-yaml": ("config", {"yaml_b64": encode_bytes(b"models: {}\n# \xff\n")}),
    "multiline-syntax-error": ("expression", {"text": "MCC > (\n1"}),
    "literal-in-list": ("expression", {"text": "1 in (1, 2)"}),
    "round-huge-digits-hang": ("expression", {"text": "round(MCC, 99999999999)"}),
}


def test_every_known_defect_has_a_reproducer() -> None:
    assert sorted(REPRODUCERS) == sorted(d.id for d in KNOWN_DEFECTS)


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
