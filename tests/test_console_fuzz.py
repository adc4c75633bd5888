"""schemathesis against a real `lgw console` process: every operation its OpenAPI
document lists at run time (whatever routes the API has by then), with inputs made from
the schema (valid and invalid), with an admin bearer token; no response may be a 5xx, and
every response must match the schema the document declares for it.

The process's state store holds data first (a kill switch set, stored tokens, one
revoked), so reads have something to return. Hypothesis is bounded and derandomized: the
same inputs on every run, in well under two minutes on CI."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from gateway.config import load_config
from gateway.console.auth import TokenStore, add_to_tokens_file
from gateway.killswitch_cli import audited_flip
from gateway.state import StateStore
from schemas.examples import generate_card_file
from tests.console_helpers import SESSION_KEY, gateway_yaml
from tests.lgw_processes import LgwProcess

pytestmark = pytest.mark.integration

SERVING = re.compile(r"lgw console: serving (http://[0-9.]+:\d+)/console")
MAX_EXAMPLES = 30  # per operation and generation mode


@dataclass
class Running:
    url: str
    token: str
    process: LgwProcess

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def running_console(tmp_path_factory: pytest.TempPathFactory, lgw_cmd: list[str]) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("console-fuzz")
    config = gateway_yaml(folder, pipeline={"review": {"band": [0.2, 0.8]}})
    token = add_to_tokens_file(folder / "tokens.yaml", "fuzzer", ["admin"])
    # a night's file scored: a run with its manifest, rejected records, review items
    (folder / "inbox").mkdir()
    generate_card_file(folder / "inbox" / "CARDS.DAT", records=300, bad_every=25)
    done = subprocess.run([*lgw_cmd, "batch", "run", "card_txn", "--config", str(config)], capture_output=True,
                          text=True, timeout=300, cwd=folder)
    assert done.returncode == 1, done.stderr[-3000:]  # done, with rejected records
    cfg = load_config(config)
    with StateStore(cfg.state.url) as state:
        reason = "INC-9: fuzzing with a switch set"
        state.set_kill_switch("card_txn", "force_fallback", reason, "token:fuzzer",
                              on_change=audited_flip(state, "token:fuzzer", reason))
        store = TokenStore(state)
        store.create("ci-bot", ["operator"], created_by="token:fuzzer", note="made for the fuzzer")
        store.create("old-bot", ["viewer"], created_by="token:fuzzer")
        store.revoke("old-bot")
    process = LgwProcess(lgw_cmd, ["console", "--config", str(config), "--address", "127.0.0.1:0"], folder,
                         name="console", env={"LGW_CONSOLE_SESSION_KEY": SESSION_KEY})
    try:
        deadline = time.monotonic() + 60
        while (found := SERVING.search(process.stderr)) is None:
            process.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"lgw console did not say where it serves:\n{process.stderr[-3000:]}", pytrace=False)
            time.sleep(0.05)
        yield Running(found.group(1), token, process)
    finally:
        process.stop()
    errors = [line for line in process.stderr.splitlines() if "Traceback" in line or "Exception in ASGI" in line]
    assert errors == [], process.stderr[-5000:]


@pytest.fixture(scope="module")
def api_schema(running_console: Running) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{running_console.url}/api/openapi.json",
                                           headers=running_console.auth, timeout=30)
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                    max_examples=MAX_EXAMPLES, deterministic=True)
    return schema


def test_the_schema_lists_the_api(api_schema: schemathesis.BaseSchema, running_console: Running) -> None:
    paths = set(api_schema.raw_schema["paths"])
    assert {"/api/v1/pipelines", "/api/v1/pipelines/{name}", "/api/v1/pipelines/{name}/kill-switch"} <= paths
    with pytest.raises(urllib.error.HTTPError) as refused:  # the document itself needs a token
        urllib.request.urlopen(f"{running_console.url}/api/openapi.json", timeout=10)
    assert refused.value.code == 401


def fuzz(operation: schemathesis.APIOperation, mode: GenerationMode, running: Running) -> tuple[int, str | None]:
    """Hypothesis over one operation's inputs: (cases sent, the first failure or None)."""
    calls: list[schemathesis.Case] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def run(case: schemathesis.Case) -> None:
        calls.append(case)
        case.call_and_validate(base_url=running.url, headers=running.auth, timeout=30,
                               checks=[not_a_server_error, response_schema_conformance])

    try:
        run()
    except Unsatisfiable:
        # no invalid input exists for an operation without parameters or body
        assert mode is GenerationMode.NEGATIVE and not calls, operation.label
    except Exception as exc:  # reported with the other operations' failures
        return len(calls), f"{operation.label} ({mode.value}): {type(exc).__name__}: {exc}"
    return len(calls), None


def test_no_server_error_and_responses_match_the_schema(api_schema: schemathesis.BaseSchema,
                                                        running_console: Running) -> None:
    """One Hypothesis run per operation and generation mode. (schemathesis' own pytest
    integration, `from_fixture(...).parametrize()`, breaks on pytest 9; and the operations
    are known only once the process serves its document.)"""
    failures: list[str] = []
    operations = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            sent, failure = fuzz(operation, mode, running_console)
            if mode is GenerationMode.POSITIVE:
                assert sent > 0, f"{operation.label}: no case generated"
            if failure is not None:
                failures.append(failure)
    assert len(operations) >= 4, operations
    assert failures == [], "\n\n".join(failures)
