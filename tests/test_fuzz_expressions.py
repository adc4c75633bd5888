"""Fuzzing the expression compiler: well-typed expressions over the card_txn fields,
expressions from the whole Python expression grammar (refused nodes, unknown functions,
huge literals), byte-level mutations of valid ones and hostile texts (deep nesting, 4,000+
characters). Each compiles or is refused with one `ContractError` line; a compiled
expression runs on records, on no rows and on all-null rows, one value per row."""

from __future__ import annotations

import pytest
from hypothesis import event, given

from tests.fuzz_harness import FuzzWorker, check, ci_settings
from tests.fuzz_inputs import VALID_EXPRESSIONS, expression_inputs, typed_expressions

pytestmark = pytest.mark.fuzz


def test_the_valid_expressions_compile_and_run(fuzz_worker: FuzzWorker) -> None:
    for text in VALID_EXPRESSIONS:
        assert check(fuzz_worker, "expression", {"text": text}).status == "ok", text


@ci_settings(max_examples=150)
@given(text=typed_expressions)
def test_typed_expressions_run(fuzz_worker: FuzzWorker, text: str) -> None:
    event(check(fuzz_worker, "expression", {"text": text}).status)


@ci_settings(max_examples=150)
@given(inp=expression_inputs())
def test_any_expression_text(fuzz_worker: FuzzWorker, inp: dict) -> None:
    event(check(fuzz_worker, "expression", inp).status)
