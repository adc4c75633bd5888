"""The console's batch pages in a real browser (Debian's Chromium, Playwright) against a
real `lgw console` process over the state store of a real `lgw batch run` (rejects of
every kind, one on the pii field TXN-PAN): the runs list, a run's page with its report in
a sandboxed frame, the rejects browser with a filter, the pipeline page, and the tokens
page where an admin makes a token that is shown once and then works. No card number in
clear on any page. A screenshot of each page goes to LGW_SCREENSHOTS (default: the test's
tmp dir)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.console.auth import add_to_tokens_file
from tests.lgw_processes import LgwProcess
from tests.test_console_browser import chromium, log_in, shots  # noqa: F401 (fixtures)
from tests.test_console_runs import BAD_PAN, World, card_file, write_world

pytestmark = pytest.mark.integration


def no_pan(w: World, text: str) -> None:
    assert BAD_PAN not in text
    assert not [p for p in w.clear_pans if p in text]


@pytest.fixture
def world(tmp_path: Path, lgw_cmd: list[str]) -> World:
    """test_console_runs' world, its batch run in a process of its own: Playwright's sync API
    holds an event loop on the test's thread, where `lgw batch run` in process could not start one."""
    config, tokens = write_world(tmp_path)
    pans = card_file(tmp_path / "drop" / "inbox" / "CARDTXN.DAT")
    done = subprocess.run([*lgw_cmd, "batch", "run", "card_txn", "--config", str(config)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["rejected"] == 4, done.stderr[-2000:]
    return World(tmp_path, config, tokens, summary["run"], pans)


def test_an_admin_browses_runs_rejects_and_tokens(chromium: Any, world: World, shots: Path,  # noqa: F811
                                                  lgw_cmd: list[str], lgw_processes: list[LgwProcess]) -> None:
    admin = add_to_tokens_file(world.root / "console-tokens.yaml", "t-admin", ["admin"])
    gw = LgwProcess(lgw_cmd, ["console", "--config", str(world.config), "--address", "127.0.0.1:0"], world.root,
                    name="console")
    lgw_processes.append(gw)
    base = gw.url
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, base, admin)

    page.goto(f"{base}/console/runs")
    row = page.locator("tr", has_text=world.run_id)
    assert "done" in row.inner_text()
    no_pan(world, page.content())
    page.screenshot(path=str(shots / "runs.png"), full_page=True)

    row.get_by_role("link", name=world.run_id).first.click()
    page.wait_for_url(f"{base}/console/runs/{world.run_id}")
    report = page.frame_locator("iframe.report")
    report.locator("h1").first.wait_for()
    assert world.run_id in report.locator("body").inner_text()
    no_pan(world, page.content() + report.locator("html").inner_html())
    page.screenshot(path=str(shots / "run.png"), full_page=True)
    page.locator("iframe.report").scroll_into_view_if_needed()
    page.locator("iframe.report").screenshot(path=str(shots / "run-report.png"))

    page.goto(f"{base}/console/rejects")
    rows = page.locator("table tbody tr")
    assert rows.count() == 4
    page.get_by_label("Field").fill("TXN-PAN")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()
    assert page.locator("table tbody tr").count() == 1
    no_pan(world, page.content())
    page.screenshot(path=str(shots / "rejects.png"), full_page=True)

    page.goto(f"{base}/console/pipelines/card_txn")
    page.get_by_role("heading", name="Drift and quality").wait_for()  # the refreshed partial
    page.screenshot(path=str(shots / "pipeline-batch.png"), full_page=True)

    page.goto(f"{base}/console/tokens")
    page.get_by_label("Name").fill("night-ops")
    page.get_by_role("checkbox", name="viewer", exact=True).check()
    page.get_by_role("button", name="Create token").click()
    made = page.locator("input[data-new-token]").input_value()
    assert made.startswith("lgw_")
    assert "night-ops" in page.locator("tr[data-token='night-ops']").inner_text()
    page.screenshot(path=str(shots / "tokens.png"), full_page=True)
    req = urllib.request.Request(f"{base}/api/v1/whoami", headers={"Authorization": f"Bearer {made}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read())["identity"] == "token:night-ops"
    page.reload()
    assert made not in page.content()  # shown once
    assert errors == []
    context.close()
