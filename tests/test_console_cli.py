"""The CLI through the admin API (`--api URL --token-file FILE`, gateway.console.client)
against a real `lgw console` process: the kill switch flipped and cleared, a review item
decided, tokens made and revoked, each audited with the token's identity; the commands
run with a state store URL that cannot be reached, so they demonstrably open none."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import example_dropfolder_config
from gateway.console.auth import add_to_tokens_file
from gateway.governance.audit_sql import ActionLog
from gateway.governance.review_queue import ReviewQueue
from gateway.state import StateStore
from tests.lgw_processes import LgwProcess
from tests.test_console_review import card_items

SERVING = re.compile(r"lgw console: serving (http://[0-9.]+:\d+)/console")
# what a command would use if it opened a state store: nothing listens there
NO_STORE = "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1"


@dataclass
class Gateway:
    root: Path
    url: str
    state_url: str
    token_files: dict[str, Path]


def wait_serving(gw: LgwProcess) -> str:
    deadline = time.monotonic() + 60
    while True:
        found = SERVING.search(gw.stderr)
        if found:
            return found.group(1)
        gw.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(f"lgw console did not say where it serves:\n{gw.stderr[-3000:]}", pytrace=False)
        time.sleep(0.1)


@pytest.fixture
def gateway(tmp_path: Path, lgw_cmd: list[str], lgw_processes: list[LgwProcess]) -> Iterator[Gateway]:
    state_url = f"sqlite:///{tmp_path}/state.db"
    doc = example_dropfolder_config(state_url)
    doc["pipelines"]["card_txn"]["review"] = {"band": [0.4, 0.6]}
    doc["console"] = {"tokens_file": "tokens.yaml"}  # beside gateway.yaml, never in the shared data dir
    (tmp_path / "gateway.yaml").write_text(json.dumps(doc), encoding="utf-8")
    files = {}
    for role in ("viewer", "operator", "reviewer", "admin"):
        token = add_to_tokens_file(tmp_path / "tokens.yaml", role, [role])
        files[role] = tmp_path / f"{role}.token"
        files[role].write_text(token + "\n", encoding="utf-8")
        files[role].chmod(0o600)
    masked, _ = card_items(tmp_path, records=4)
    with StateStore(state_url) as store:
        ReviewQueue(store).enqueue("card_txn", "CARDTXN", masked, ["band"] * masked.num_rows, score="fraud_score")
    gw = LgwProcess(lgw_cmd, ["console", "--config", str(tmp_path / "gateway.yaml"), "--address", "127.0.0.1:0"],
                    tmp_path, name="console")
    lgw_processes.append(gw)
    yield Gateway(tmp_path, wait_serving(gw), state_url, files)


def lgw(cmd: list[str], root: Path, *argv: str) -> tuple[int, str, str]:
    env = {**os.environ, "LGW_STATE_URL": NO_STORE, "NO_COLOR": "1"}
    done = subprocess.run([*cmd, *argv], capture_output=True, text=True, env=env, cwd=root, timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_kill_switch_and_review_decision_through_the_api(gateway: Gateway, lgw_cmd: list[str]) -> None:
    g = gateway
    api = ("--api", g.url)

    code, out, err = lgw(lgw_cmd, g.root, "killswitch", "set", "card_txn", "--mode", "force_fallback", "--reason",
                         "model drift, INC-4711", *api, "--token-file", str(g.token_files["operator"]))
    assert code == 0, err
    flipped = json.loads(out)
    assert (flipped["pipeline"], flipped["mode"], flipped["set_by"]) == ("card_txn", "force_fallback", "token:operator")

    code, out, err = lgw(lgw_cmd, g.root, "killswitch", "set", "card_txn", "--mode", "pause", "--reason", "x", *api,
                         "--token-file", str(g.token_files["viewer"]))
    assert code == 2 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("lgw: error: API PUT /api/v1/pipelines/card_txn/kill-switch: HTTP 403: token:viewer may "
                           "not operate"), line

    code, out, err = lgw(lgw_cmd, g.root, "killswitch", "clear", "card_txn", "--reason", "model fixed", *api,
                         "--token-file", str(g.token_files["operator"]))
    assert code == 0, err
    assert json.loads(out)["mode"] == "off"

    with StateStore(g.state_url) as store:
        item = ReviewQueue(store).list("card_txn")[0]
    code, out, err = lgw(lgw_cmd, g.root, "review", "decide", str(item.id), "--override", "0.95", "--reason",
                         "confirmed with the cardholder", *api, "--token-file", str(g.token_files["reviewer"]))
    assert code == 0, err
    decided = json.loads(out)
    assert (decided["status"], decided["final_score"], decided["decided_by"]) == ("overridden", 0.95,
                                                                                  "token:reviewer")
    assert Path(decided["correction"]).parent == g.root / "drop" / "outbox"
    code, out, err = lgw(lgw_cmd, g.root, "review", "decide", str(item.id), "--approve", "--reason", "again", *api,
                         "--token-file", str(g.token_files["reviewer"]))
    assert code == 2 and "HTTP 409" in err and "already overridden" in err

    with StateStore(g.state_url) as store:
        actions = ActionLog(store).actions("card_txn")
        switch = store.get_kill_switch("card_txn")
    assert switch.mode == "off" and switch.set_by == "token:operator"
    assert [(a.action, a.actor, a.new) for a in actions] == [
        ("review.decide", "token:reviewer", "overridden:0.95"),
        ("killswitch.set", "token:operator", "off"),
        ("killswitch.set", "token:operator", "force_fallback"),
    ]
    assert actions[0].reason == "confirmed with the cardholder" and actions[2].reason == "model drift, INC-4711"


def test_tokens_through_the_api_and_what_the_client_refuses(gateway: Gateway, lgw_cmd: list[str]) -> None:
    g = gateway
    api = ("--api", g.url)
    code, out, err = lgw(lgw_cmd, g.root, "console", "token", "new", "--name", "tablet", "--role", "viewer", *api,
                         "--token-file", str(g.token_files["admin"]))
    assert code == 0, err
    token = out.strip()
    assert token.startswith("lgw_")
    mine = g.root / "tablet.token"
    mine.write_text(token, encoding="utf-8")
    mine.chmod(0o600)
    code, out, err = lgw(lgw_cmd, g.root, "killswitch", "set", "card_txn", "--mode", "pause", "--reason", "x", *api,
                         "--token-file", str(mine))
    assert code == 2 and "HTTP 403: token:tablet may not operate" in err
    code, out, err = lgw(lgw_cmd, g.root, "console", "token", "revoke", "tablet", *api,
                         "--token-file", str(g.token_files["admin"]))
    assert code == 0, err
    code, out, err = lgw(lgw_cmd, g.root, "killswitch", "set", "card_txn", "--mode", "pause", "--reason", "x", *api,
                         "--token-file", str(mine))
    [line] = err.strip().splitlines()
    assert code == 2 and "HTTP 401" in line and "check --token-file" in line, line

    mine.chmod(0o644)
    code, out, err = lgw(lgw_cmd, g.root, "killswitch", "clear", "card_txn", "--reason", "x", *api,
                         "--token-file", str(mine))
    [line] = err.strip().splitlines()
    assert code == 2 and "anyone on this machine may read it (mode 0644)" in line, line

    code, out, err = lgw(lgw_cmd, g.root, "batch", "replay", "RUN-1", *api,
                         "--token-file", str(g.token_files["operator"]))
    [line] = err.strip().splitlines()
    assert code == 2 and "needs --reason" in line, line
    # `lgw console` runs no drop folder: the API refuses the replay, said in one line
    code, out, err = lgw(lgw_cmd, g.root, "batch", "replay", "RUN-1", "--reason", "re-run after the fix", *api,
                         "--token-file", str(g.token_files["operator"]))
    [line] = err.strip().splitlines()
    assert code == 2 and re.match(r"lgw: error: API POST /api/v1/runs/RUN-1/replay: HTTP [45]\d\d: \S", line), line

    with StateStore(g.state_url) as store:
        tokens = [(a.action, a.actor, a.target) for a in ActionLog(store).actions(action_prefix="token.")]
    assert tokens == [("token.revoke", "token:admin", "tablet"), ("token.create", "token:admin", "tablet")]
