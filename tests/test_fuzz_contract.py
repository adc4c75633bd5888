"""Fuzzing contract loading and what scoring does with a loaded contract: the card_txn
and a fixed-width contract with key deletions, type swaps, edge values, unknown keys and
byte-level YAML mutations, over a mutated copybook and sample file. `lgw contract check`
passes exactly what `load_contract` passes; a contract it passes decodes its file with
every record accounted for, and its features and fallback rules run on the records."""

from __future__ import annotations

import pytest
from hypothesis import event, given

from tests.fuzz_harness import FuzzWorker, check, ci_settings, encode_bytes
from tests.fuzz_inputs import CARD, CARD_COPYBOOK, CARD_SAMPLE, contract_inputs, yaml_text

pytestmark = pytest.mark.fuzz


def test_the_card_contract_scores_its_sample(fuzz_worker: FuzzWorker) -> None:
    outcome = check(fuzz_worker, "contract", {"yaml_b64": encode_bytes(yaml_text(CARD)),
                                              "copybooks": {"CARDTXN.cpy": CARD_COPYBOOK},
                                              "data_b64": encode_bytes(CARD_SAMPLE)})
    assert outcome.status == "ok", outcome
    assert outcome.detail == {"framed": 8, "out": 4, "rejected": 2, "control": 2}


@ci_settings(max_examples=150)
@given(inp=contract_inputs())
def test_mutated_contracts(fuzz_worker: FuzzWorker, inp: dict) -> None:
    event(check(fuzz_worker, "contract", inp).status)
