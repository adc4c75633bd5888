"""The run report in a real browser: Debian's Chromium, headless, driven by Playwright.

A reference profile of one file (`lgw profile build`), then a real `lgw batch run` of the
night's file against it (drift, quality, segments, review band): the run writes its
manifest and its report; `lgw report` writes the page again, and Chromium opens it from
disk. It must render every section
with data in every chart, log no error, ask the network for nothing, and show none of
the card numbers (TXN-PAN, pii in the contract) the input held in clear.

The browser is the machine's (/usr/bin/chromium, scripts/system-packages.sh installs it);
`playwright install` and its downloads are never used. Without it the test is skipped on a
laptop and fails under CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import example_dropfolder_config
from gateway.governance.report import render_report
from schemas.examples import contract_path, generate_card_file
from tests.helpers import unavailable
from tests.report_data import read_jsonl
from tests.test_report import SECTIONS, hostile_manifest

CHROMIUM = Path(os.environ.get("LGW_CHROMIUM", "/usr/bin/chromium"))
CHARTS = {"scores", "psi", "rejects", "scored_by", "breaker"}
BATCH = 200


class Browser:
    """One headless Chromium page that records what the page logs and asks for; every
    request for anything but a file: URL is refused."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.refused: list[str] = []
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("request", lambda req: self.requests.append(req.url))
        page.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort()

    def open(self, path: Path) -> None:
        self.page.goto(path.as_uri(), wait_until="load")

    def quiet(self) -> None:
        """No page error, no console error or warning, no request off the disk."""
        assert self.errors == []
        assert [c for c in self.console if c.startswith(("error", "warning"))] == []
        assert self.refused == [] and all(u.startswith("file:") for u in self.requests), self.requests


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.is_file():
        unavailable(f"Chromium not found at {CHROMIUM} (scripts/system-packages.sh installs Debian's chromium)")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        except Error as exc:
            unavailable(f"Chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture
def browser(chromium: Any) -> Iterator[Browser]:
    context = chromium.new_context(viewport={"width": 1100, "height": 900}, java_script_enabled=True)
    try:
        yield Browser(context.new_page())
    finally:
        context.close()


def clear_pans(input_file: Path, tmp: Path) -> set[str]:
    """The TXN-PAN of every record of the input, decoded in clear by `lgw decode`."""
    out, rejects = tmp / "decoded.jsonl", tmp / "decoded.rejects.jsonl"
    main(["decode", str(input_file), "--contract", str(contract_path("card_txn")), "--output", str(out),
          "--rejects", str(rejects)])
    pans = {str(r["TXN_PAN"]) for r in read_jsonl(out) if r.get("TXN_PAN")}
    assert len(pans) > 900 and all(re.fullmatch(r"[0-9]{16}", p) for p in pans)
    return pans


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, lgw_cmd: list[str]) -> dict[str, Any]:
    """A reference profile, the night's run against it through `lgw batch run` (its
    amounts shifted: drift past the threshold), `lgw report` on it."""
    root = tmp_path_factory.mktemp("report-run")
    reference = root / "REFERENCE.DAT"
    generate_card_file(reference, records=3000, seed=1, bad_every=0)
    profile = root / "reference.profile.json"
    env = {**os.environ, "LGW_LOG_FORMAT": "text"}
    built = subprocess.run([*lgw_cmd, "profile", "build", "--contract", str(contract_path("card_txn")), "--input",
                            str(reference), "-o", str(profile)], cwd=root, env=env, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr
    cfg = example_dropfolder_config(f"sqlite:///{root / 'state.db'}", fmt="jsonl", batch_size=BATCH)
    cfg["pipelines"]["card_txn"].update(drift={"reference": str(profile), "segments": ["COUNTRY", "CHANNEL"],
                                               "thresholds": {"min_records": 100}},
                                        review={"band": [0.5, 0.8], "max_pending": 20})
    config = root / "gateway.yaml"
    config.write_text(json.dumps(cfg), encoding="utf-8")
    inbox = root / "drop" / "inbox"
    inbox.mkdir(parents=True)
    generate_card_file(inbox / "NIGHT.DAT", records=1000, seed=2, bad_every=97, drift=0.5)
    done = subprocess.run([*lgw_cmd, "batch", "run", "card_txn", "--config", str(config), "--no-progress"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # done, with rejected records
    summaries = {s["input"]: s for s in map(json.loads, done.stdout.splitlines())}
    night = summaries["NIGHT.DAT"]
    assert night["status"] == "done" and night["rejected"] > 0
    outbox = root / "drop" / "outbox"
    manifest_path = Path(night["manifest"])
    written_by_the_run = outbox / "NIGHT.DAT.report.html"
    assert written_by_the_run.is_file()
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert {"drift", "quality", "timeline", "examples", "review", "pii"} <= set(manifest)  # the pipeline's own
    assert manifest["drift"]["breaches"]  # the shifted amounts
    report = subprocess.run([*lgw_cmd, "report", night["run"], "--config", str(config)], cwd=root, env=env,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip() == str(written_by_the_run)
    return {"root": root, "report": written_by_the_run, "manifest": manifest,
            "pans": clear_pans(root / "drop" / "done" / "NIGHT.DAT", root)}


def test_the_report_of_a_real_run_renders_every_chart_with_data_offline(real_run: dict[str, Any],
                                                                          browser: Browser) -> None:
    browser.open(real_run["report"])
    page = browser.page
    assert page.title().startswith("lgw run report: card_txn card_txn.")
    assert page.locator("h1").inner_text() == "Run report: card_txn"
    measured = {s.get_attribute("data-section"): s.get_attribute("data-measured")
                for s in page.locator("section").all()}
    assert measured == dict.fromkeys(SECTIONS, "true")
    charts = {svg.get_attribute("data-chart"): svg for svg in page.locator("svg.chart").all()}
    assert set(charts) == CHARTS
    for name, svg in charts.items():
        assert int(svg.get_attribute("data-points") or 0) > 0, name
        assert svg.locator("rect[data-value]").count() > 0, name
        box = svg.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 20, name  # laid out, visible
    manifest = real_run["manifest"]
    psi = manifest["drift"]["psi"]
    assert charts["psi"].locator("rect[data-value]").count() == len(psi)
    over = sorted(k for k, v in psi.items() if v > manifest["drift"]["thresholds"]["psi"])
    assert sorted(r.get_attribute("data-label") for r in charts["psi"].locator("rect[data-breach]").all()) == over
    assert charts["psi"].locator("line.threshold").count() == 1
    counts = manifest["counts"]
    for key in ("records_in", "records_out", "rejected"):
        assert page.locator(f'[data-count="{key}"] b').inner_text() == f"{counts[key]:,}"
    assert page.locator(".verdict").inner_text() == f"Verdict: {manifest['quality']['verdict']}"
    assert page.locator('[data-policy="mask"]').count() == 1
    browser.quiet()


def test_the_report_shows_no_card_number_in_clear(real_run: dict[str, Any], browser: Browser) -> None:
    browser.open(real_run["report"])
    dom = browser.page.content()
    text = browser.page.locator("body").inner_text()
    shown = {p for p in real_run["pans"] if p in dom or p in text}
    assert shown == set(), f"{len(shown)} clear card numbers in the report"
    assert "******" in text  # the masked examples are there, masked


def test_a_screenshot_of_the_report(real_run: dict[str, Any], browser: Browser, tmp_path: Path) -> None:
    browser.open(real_run["report"])
    shot = tmp_path / "report.png"
    browser.page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    if os.environ.get("LGW_REPORT_SCREENSHOT"):  # keep one to look at
        shutil.copyfile(shot, os.environ["LGW_REPORT_SCREENSHOT"])


def test_hostile_values_neither_run_nor_fetch_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    page_file = tmp_path / "hostile.report.html"
    page_file.write_text(render_report(hostile_manifest()), encoding="utf-8")
    browser.open(page_file)
    page = browser.page
    assert page.locator("script, img, iframe, object, embed, link").count() == 0
    assert page.evaluate("typeof window.alert === 'function' && document.title.startsWith('lgw run report')")
    assert "<script>alert(1)</script>" in page.locator("h1").inner_text()  # shown as text
    browser.quiet()
