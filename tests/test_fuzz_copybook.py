"""Fuzzing the copybook parser and the decoder it builds: grammar-generated copybooks
(levels, PIC, USAGE, SIGN, OCCURS [DEPENDING ON], REDEFINES, VALUE, 88 levels) and
byte-level mutations of real ones. Each parses or is refused with one `ConfigError`
line; a parsed layout lies inside its record and decodes a record; no input takes more
than the worker's memory budget or time limit."""

from __future__ import annotations

import pytest
from hypothesis import event, given

from tests.fuzz_harness import FuzzWorker, check, ci_settings
from tests.fuzz_inputs import SEED_COPYBOOKS, copybook_texts, mutated_copybooks

pytestmark = pytest.mark.fuzz


def test_every_seed_copybook_parses_and_decodes(fuzz_worker: FuzzWorker) -> None:
    for text in SEED_COPYBOOKS:
        outcome = check(fuzz_worker, "copybook", {"text": text})
        assert outcome.status in ("ok", "user_error"), outcome
    assert check(fuzz_worker, "copybook", {"text": SEED_COPYBOOKS[0]}).detail == {"record_length": 120}


def test_a_hostile_picture_is_refused_with_a_limit(fuzz_worker: FuzzWorker) -> None:
    """PIC X(400000000) on one record: refused with the field limit before anything that
    size is expanded or allocated, and the worker goes on."""
    text = "       01  REC.\n           05  BIG PIC X(400000000).\n"
    outcome = fuzz_worker.run("copybook", {"text": text})
    assert outcome.status == "user_error" and "over the field limit" in outcome.message, outcome
    assert fuzz_worker.run("copybook", {"text": SEED_COPYBOOKS[0]}).status == "ok"


@ci_settings(max_examples=120)
@given(text=copybook_texts())
def test_generated_copybooks(fuzz_worker: FuzzWorker, text: str) -> None:
    event(check(fuzz_worker, "copybook", {"text": text}).status)


@ci_settings(max_examples=120)
@given(text=mutated_copybooks())
def test_mutated_copybooks(fuzz_worker: FuzzWorker, text: str) -> None:
    event(check(fuzz_worker, "copybook", {"text": text}).status)
