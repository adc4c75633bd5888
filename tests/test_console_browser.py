"""The operator console in a real browser: Debian's Chromium, headless, driven by Playwright,
against a real `lgw serve` (its own process) with a Tansu Kafka broker, a KServe model
server process and a SQLite state store.

One story, as the operator on call lives it: no token gets 401 from the API; the operator
logs in; the overview shows the pipeline with its breaker closed and the model counter
moving while records arrive; the model server is killed (by its PID) and, records still
arriving, the page shows the breaker open without a reload; the operator forces the
fallback with a reason through the form (confirmation dialog) and the fallback counter
moves; a viewer's token cannot flip the switch (403); a reviewer decides a queued review
item; the audit page names the operator's token. A screenshot of each page goes to
LGW_SCREENSHOTS (default: the test's tmp dir) for the change's note.

The browser is the machine's (/usr/bin/chromium); `playwright install` is never used.
Without it the test is skipped on a laptop and fails under CI.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from gateway.console.auth import add_to_tokens_file
from gateway.governance.audit_sql import ActionLog
from gateway.state import StateStore

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
from tests.kafka_broker import TansuBroker
from tests.lgw_processes import LgwProcess
from tests.model_servers import ModelServerProcess
from tests.realtime_data import copybook_records
from tests.test_realtime_kafka import Topics, config_dict, keyed, kserve_model, produce
from tests.test_report_browser import chromium  # noqa: F401 (the module's browser fixture)

PIPELINE = "cards"
WAIT_S = 90.0


# ---------------------------------------------------------------------------- helpers
class Producer:
    """Records onto the input topic, a few every fraction of a second, from a thread of its
    own (the Playwright sync API owns the test's thread) until stopped."""

    def __init__(self, bootstrap: str, topic: str, every_s: float = 0.4, batch: int = 10) -> None:
        self.bootstrap, self.topic, self.every_s, self.batch = bootstrap, topic, every_s, batch
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def _run(self) -> None:
        async def loop() -> None:
            for round_ in itertools.count():
                if self._stop.is_set():
                    return
                start = round_ * self.batch
                sent = await produce(self.bootstrap, self.topic,
                                     keyed(copybook_records(start % 50_000, self.batch), f"b{round_}"))
                self.sent += len(sent)
                await asyncio.sleep(self.every_s)

        try:
            asyncio.run(loop())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None and exc[0] is None:
            raise AssertionError(f"the producer failed: {self.error!r}")


def wait_until(condition: Callable[[], bool], what: str, gw: LgwProcess, timeout: float = WAIT_S,
               alive: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if alive:
            gw.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g}s\n{gw.stderr[-3000:]}", pytrace=False)
        time.sleep(0.25)


def api(gw: LgwProcess, method: str, path: str, token: str | None = None,
        body: dict[str, Any] | None = None) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(gw.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"null")


def number(page: Any, selector: str) -> int:
    return int(page.locator(selector).first.inner_text().strip())


def log_in(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/console/")
    assert "/console/login" in page.url  # no session: the page sends the browser to log in
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/console/")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LGW_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---------------------------------------------------------------------------- the story
@pytest.mark.integration
def test_operator_watches_the_breaker_open_forces_the_fallback_and_a_reviewer_decides(
        chromium: Any, kafka_broker: TansuBroker, disposable_kserve_server: ModelServerProcess, tmp_path: Path,  # noqa: F811
        lgw_cmd: list[str], lgw_processes: list[LgwProcess], shots: Path) -> None:
    tokens = tmp_path / "console-tokens.yaml"  # the test's own: never the shared data dir's
    operator = add_to_tokens_file(tokens, "oncall", ["operator"])
    reviewer = add_to_tokens_file(tokens, "analyst", ["reviewer"])
    viewer = add_to_tokens_file(tokens, "dashboard", ["viewer"])

    topics = Topics.create(kafka_broker, "console")
    doc = config_dict(tmp_path, kafka_broker.bootstrap,
                      {PIPELINE: topics.source(max_records=50, payload="copybook")},
                      model=kserve_model(disposable_kserve_server.base_url))
    doc["pipelines"][PIPELINE]["review"] = {"band": [0.0, 1.0]}  # every model score waits for a person
    doc["console"] = {"tokens_file": str(tokens)}
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    gw = LgwProcess(lgw_cmd, ["serve", "--config", str(config)], tmp_path)
    lgw_processes.append(gw)
    wait_until(lambda: gw.get("/readyz")[0] == 200, "/readyz 200", gw)
    base = gw.url

    # no token: the API answers 401, asks for a bearer token
    status, body = api(gw, "GET", "/api/v1/pipelines")
    assert status == 401, body

    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    outside: list[str] = []
    page.on("request", lambda req: None if req.url.startswith(base) else outside.append(req.url))

    # ---- log in as the operator
    response = page.goto(f"{base}/console/login")
    assert response is not None and response.status == 200
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    page.get_by_label("Token").fill("not-a-token")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "Unknown or revoked token."
    page.screenshot(path=str(shots / "login.png"), full_page=True)
    log_in(page, base, operator)
    cookie = next(c for c in context.cookies() if c["name"] == "lgw_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/"

    # ---- the overview: the pipeline, its breaker closed; the model counter moves
    row = page.locator(f'tr[data-pipeline="{PIPELINE}"]')
    assert row.locator("td").first.inner_text().startswith("kafka")
    assert topics.input in row.inner_text()
    breaker = row.locator('[data-breaker="fraud"]')
    assert breaker.inner_text() == "closed" and breaker.get_attribute("class") == "ok"
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    model_before = number(row, '[data-scored-by="model"]')

    with Producer(kafka_broker.bootstrap, topics.input) as producer:
        wait_until(lambda: number(row, '[data-scored-by="model"]') > model_before,
                   "the model counter moved on the page", gw)
        wait_until(lambda: number(row, "[data-records-in]") > 0, "records in counted on the page", gw)
        page.screenshot(path=str(shots / "overview.png"), full_page=True)

        # ---- the model server dies: the breaker opens on the page, no reload
        disposable_kserve_server.kill()
        wait_until(lambda: breaker.inner_text() == "open", "the breaker shown open", gw)
        assert breaker.get_attribute("class") == "bad"
        assert navigations == []  # the partial was refreshed in place: the page never reloaded
        fallback_before = number(row, '[data-scored-by="fallback"]')
        wait_until(lambda: number(row, '[data-scored-by="fallback"]') > fallback_before,
                   "the fallback counter moved", gw)
        page.screenshot(path=str(shots / "overview-breaker-open.png"), full_page=True)
        page.set_viewport_size({"width": 768, "height": 1024})  # a tablet
        page.screenshot(path=str(shots / "overview-tablet.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})

        # ---- force the fallback with a reason, through the form and its confirmation
        page.get_by_role("link", name=PIPELINE).click()
        page.wait_for_url(f"{base}/console/pipelines/{PIPELINE}")
        drift = page.locator("#drift")  # the runs area's partial: its figures, or "no drift figures"
        wait_until(lambda: "Loading drift figures" not in drift.inner_text(), "the drift partial loaded", gw)
        assert page.locator(".stale-note:visible").count() == 0  # every partial answered
        page.get_by_label("Mode").select_option("force_fallback")
        page.get_by_label("Reason").fill("INC-4711 model server down")
        page.get_by_role("button", name="Set kill switch").click()
        dialog = page.locator("dialog[open]")
        assert "Set the kill switch of cards?" in dialog.inner_text()
        assert page.evaluate("document.activeElement.textContent") == "Cancel"  # focus on the safe choice
        page.keyboard.press("Escape")  # the keyboard cancels: nothing is posted
        assert page.locator("dialog[open]").count() == 0
        assert page.url == f"{base}/console/pipelines/{PIPELINE}"
        page.get_by_role("button", name="Set kill switch").click()
        page.screenshot(path=str(shots / "pipeline-confirm.png"))
        page.locator("dialog[open]").get_by_role("button", name="Confirm").click()
        page.wait_for_url(re.compile(rf".*/console/pipelines/{PIPELINE}\?msg=.*"))
        assert "force_fallback" in page.get_by_role("status").first.inner_text()
        switch = page.locator("#pipeline [data-kill-switch]")
        assert switch.inner_text() == "force_fallback" and switch.get_attribute("class") == "warn"
        assert "token:oncall" in page.locator("#pipeline").inner_text()
        fallback_before = number(page, '#pipeline [data-scored-by="fallback"]')
        wait_until(lambda: number(page, '#pipeline [data-scored-by="fallback"]') > fallback_before,
                   "the fallback counter moved after the kill switch", gw)
        page.screenshot(path=str(shots / "pipeline.png"), full_page=True)
        assert producer.sent > 0

    # the switch and its audit record, as the API and the store have them
    status, body = api(gw, "GET", f"/api/v1/pipelines/{PIPELINE}", token=viewer)
    assert status == 200 and body["kill_switch"]["mode"] == "force_fallback"
    assert body["kill_switch"]["set_by"] == "token:oncall"
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    flips = ActionLog(store).actions(pipeline=PIPELINE, action_prefix="killswitch.")
    assert [(a.actor, a.new, a.reason) for a in flips] == [("token:oncall", "force_fallback",
                                                            "INC-4711 model server down")]

    # ---- a viewer's token cannot flip the switch
    status, body = api(gw, "PUT", f"/api/v1/pipelines/{PIPELINE}/kill-switch", token=viewer,
                       body={"mode": "off", "reason": "not mine to decide"})
    assert status == 403, body
    assert api(gw, "GET", f"/api/v1/pipelines/{PIPELINE}", token=viewer)[1]["kill_switch"]["mode"] == "force_fallback"

    # ---- the runs page, when the runs area serves one
    runs = page.goto(f"{base}/console/runs")
    assert runs is not None and runs.status in (200, 404)  # 404: no runs area in this build; never a 5xx
    if runs.status == 200:
        page.screenshot(path=str(shots / "runs.png"), full_page=True)

    # ---- a reviewer decides a queued item
    review_context = chromium.new_context(viewport={"width": 1280, "height": 900})
    rpage = review_context.new_page()
    rpage.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(rpage, base, reviewer)
    assert rpage.goto(f"{base}/console/review").status == 200  # type: ignore[union-attr]
    item = rpage.locator("form").filter(has=rpage.get_by_role("button", name="Approve")).first
    item.get_by_label("Reason").fill("checked with the cardholder")
    item.get_by_role("button", name="Approve").click()
    confirm = rpage.locator("dialog[open]")
    if confirm.count():  # the review page may ask first
        confirm.get_by_role("button", name="Confirm").click()
    rpage.wait_for_url(re.compile(r".*/console/review.*msg=.*"))
    rpage.screenshot(path=str(shots / "review.png"))  # the first screen: a queue may be long

    # ---- the audit history names the operator's token
    assert rpage.goto(f"{base}/console/audit").status == 200  # type: ignore[union-attr]
    audit = rpage.locator("main").inner_text()
    assert "killswitch.set" in audit and "token:oncall" in audit and "INC-4711 model server down" in audit
    assert "token:analyst" in audit  # the review decision, by the reviewer
    rpage.screenshot(path=str(shots / "audit.png"), full_page=True)
    review_context.close()

    # ---- the gateway goes away: the overview keeps its figures, marked stale
    page.goto(f"{base}/console/")
    kept = page.locator(f'tr[data-pipeline="{PIPELINE}"]').inner_text()
    assert errors == [] and outside == []  # no script error, nothing asked of another host
    assert gw.stop() == 0
    note = page.locator(".stale-note")
    wait_until(lambda: note.count() == 1 and note.is_visible(), "the overview marked stale", gw, alive=False)
    assert note.inner_text().startswith("Stale: could not refresh")
    assert page.locator(f'tr[data-pipeline="{PIPELINE}"]').inner_text() == kept
    context.close()


# ---------------------------------------------------------------------------- the pages' rules
# The same app in process (Starlette's TestClient), a real SQLite state store: what the
# browser story does not reach (refusals, redirects, limits).
@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], StateStore]]:
    from fastapi.testclient import TestClient

    from gateway.config import GatewayConfig, example_dropfolder_config
    from gateway.console.app import build_ops_app
    from gateway.console.context import build_console
    from gateway.ops_http import Readiness

    tokens_file = tmp_path / "console-tokens.yaml"
    tokens = {name: add_to_tokens_file(tokens_file, name, [role])
              for name, role in (("oncall", "operator"), ("dashboard", "viewer"))}
    doc = example_dropfolder_config(f"sqlite:///{tmp_path / 'state.db'}")
    doc["console"] = {"tokens_file": str(tokens_file), "max_auth_failures": 3}
    cfg = GatewayConfig.model_validate({**doc, "base_dir": tmp_path})
    store = StateStore(cfg.state.url)
    ctx = build_console(cfg, store, process="console")
    assert ctx is not None
    with TestClient(build_ops_app(Readiness(), ctx), base_url="http://console.test") as client:
        yield client, tokens, store


def _log_in(client: TestClient, token: str, **form: str) -> Any:
    return client.post("/console/login", data={"token": token, **form}, follow_redirects=False)


def _csrf(client: TestClient, path: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


def test_login_sets_a_strict_session_cookie_and_goes_only_to_local_pages(console: Any) -> None:
    client, tokens, _ = console
    page = client.get("/console/pipelines/card_txn", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/console/login?next=/console/pipelines/card_txn"
    # a partial's fetch gets the 401 itself (the script sends the browser to log in)
    assert client.get("/console/partials/overview", headers={"X-Console-Partial": "1"}).status_code == 401
    login = client.get("/console/login?next=/console/pipelines/card_txn")
    assert '<label for="token">Token</label>' in login.text and 'type="password"' in login.text
    assert 'name="next" value="/console/pipelines/card_txn"' in login.text

    done = _log_in(client, tokens["oncall"], next="/console/pipelines/card_txn")
    assert done.status_code == 303 and done.headers["location"] == "/console/pipelines/card_txn"
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "max-age=28800" in cookie and "secure" not in cookie  # plain http, secure_cookies unset
    for elsewhere in ("https://evil.test/console/", "//evil.test/console/", "/api/v1/pipelines",
                      "/console/login", "javascript:alert(1)", "/\\evil.test/console/"):
        assert _log_in(client, tokens["oncall"], next=elsewhere).headers["location"] == "/console/", elsewhere

    out = client.post("/console/logout", data={"csrf": _csrf(client, "/console/")}, follow_redirects=False)
    assert out.status_code == 303 and 'lgw_session=""' in out.headers["set-cookie"]


def test_login_over_https_sets_a_secure_cookie(console: Any) -> None:
    client, tokens, _ = console
    client.base_url = "https://console.test"
    done = _log_in(client, tokens["oncall"])
    assert done.status_code == 303 and "secure" in done.headers["set-cookie"].lower()


def test_login_refuses_other_sites_and_counts_bad_tokens(console: Any) -> None:
    client, tokens, _ = console
    for headers in ({"Origin": "https://evil.test"}, {"Origin": "null"}, {"Referer": "https://evil.test/x"},
                    {"Sec-Fetch-Site": "cross-site"}):
        refused = client.post("/console/login", data={"token": tokens["oncall"]}, headers=headers,
                              follow_redirects=False)
        assert refused.status_code == 403 and "lgw_session" not in refused.headers.get("set-cookie", ""), headers
    same = client.post("/console/login", data={"token": tokens["oncall"]}, follow_redirects=False,
                       headers={"Origin": "http://console.test", "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 303

    for _ in range(3):
        bad = _log_in(client, "not-a-token")
        assert bad.status_code == 401
        assert bad.text.count('role="alert"') == 1 and "Unknown or revoked token." in bad.text
    blocked = _log_in(client, tokens["oncall"])  # even a good token waits out the window
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert "Too many failed logins" in blocked.text


def test_kill_switch_form_needs_a_reason_the_operator_role_and_the_csrf_token(console: Any) -> None:
    client, tokens, store = console
    _log_in(client, tokens["dashboard"])
    viewer_page = client.get("/console/pipelines/card_txn")
    assert "Set kill switch" not in viewer_page.text and "needs the operator role" in viewer_page.text
    denied = client.post("/console/pipelines/card_txn/kill-switch",
                         data={"csrf": _csrf(client, "/console/"), "mode": "pause", "reason": "mine"})
    assert denied.status_code == 403 and "token:dashboard may not operate" in denied.text
    assert "<h1>Not allowed</h1>" in denied.text  # a page, not JSON

    _log_in(client, tokens["oncall"])
    csrf = _csrf(client, "/console/pipelines/card_txn")
    blank = client.post("/console/pipelines/card_txn/kill-switch", data={"csrf": csrf, "mode": "pause", "reason": "  "})
    assert blank.status_code == 200 and "a reason is required" in blank.text
    odd = client.post("/console/pipelines/card_txn/kill-switch", data={"csrf": csrf, "mode": "sideways", "reason": "x"})
    assert "choose a mode" in odd.text
    forged = client.post("/console/pipelines/card_txn/kill-switch", data={"csrf": "forged", "mode": "pause",
                                                                          "reason": "x"})
    assert forged.status_code == 403
    assert store.get_kill_switch("card_txn").mode == "off"

    done = client.post("/console/pipelines/card_txn/kill-switch",
                       data={"csrf": csrf, "mode": "pause", "reason": "INC-1 <b>bold</b>"})
    assert done.status_code == 200 and "Kill switch of card_txn: pause (set by token:oncall" in done.text
    assert "INC-1 &lt;b&gt;bold&lt;/b&gt;" in done.text and "<b>bold</b>" not in done.text
    switch = store.get_kill_switch("card_txn")
    assert (switch.mode, switch.set_by, switch.reason) == ("pause", "token:oncall", "INC-1 <b>bold</b>")
    flips = ActionLog(store).actions(pipeline="card_txn", action_prefix="killswitch.")
    assert [(a.actor, a.old, a.new) for a in flips] == [("token:oncall", "off", "pause")]
    partial = client.get("/console/partials/pipelines/card_txn", headers={"X-Console-Partial": "1"})
    assert partial.status_code == 200 and "<html" not in partial.text and 'data-kill-switch>pause<' in partial.text
    assert client.get("/console/pipelines/nope").status_code == 404
