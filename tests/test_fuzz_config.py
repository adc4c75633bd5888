"""Fuzzing `gateway.yaml` loading: a config with every source type (drop folder, ODBC,
Kafka, AMQP) and model backend, after key deletions, type swaps, edge values, unknown
keys and byte-level mutations. It loads or is refused with one `ConfigError` line."""

from __future__ import annotations

import pytest
from hypothesis import event, given

from tests.fuzz_harness import FuzzWorker, check, ci_settings, encode_bytes
from tests.fuzz_inputs import CONFIG, config_inputs, yaml_text

pytestmark = pytest.mark.fuzz


def test_the_base_config_loads(fuzz_worker: FuzzWorker) -> None:
    outcome = check(fuzz_worker, "config", {"yaml_b64": encode_bytes(yaml_text(CONFIG))})
    assert outcome.detail == {"pipelines": 4, "models": 3}


@ci_settings(max_examples=200)
@given(inp=config_inputs())
def test_mutated_configs(fuzz_worker: FuzzWorker, inp: dict) -> None:
    event(check(fuzz_worker, "config", inp).status)
