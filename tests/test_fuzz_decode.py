"""Fuzzing the file decoders: random layouts (grammar-generated and mutated copybooks)
over record files framed as F, V, VB and D (well framed, broken RDWs, truncated tails,
byte mutations), read in chunks of 1 to 50,000 records. The library path must account
for every framed record (decoded or rejected, never both, never in two chunks); `lgw
decode` must exit 0/1/2 with one error line and write one line per decoded record."""

from __future__ import annotations

import pytest
from hypothesis import event, given

from tests.fuzz_harness import FuzzWorker, check, ci_settings, encode_bytes
from tests.fuzz_inputs import CARD_COPYBOOK, CARD_SAMPLE, decode_inputs

pytestmark = pytest.mark.fuzz


def test_the_card_sample_decodes_with_every_record_accounted_for(fuzz_worker: FuzzWorker) -> None:
    outcome = check(fuzz_worker, "decode", {"copybook": CARD_COPYBOOK, "data_b64": encode_bytes(CARD_SAMPLE),
                                            "options": {"record_format": "F"}, "batch_size": 3})
    assert outcome.status == "ok", outcome
    assert outcome.detail["framed"] == len(CARD_SAMPLE) // 120 == outcome.detail["out"]


@ci_settings(max_examples=150)
@given(inp=decode_inputs())
def test_decoders_account_for_every_record(fuzz_worker: FuzzWorker, inp: dict) -> None:
    event(check(fuzz_worker, "decode", inp).status)
