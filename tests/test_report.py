"""`lgw report`: the run report's HTML (every section, absent data, hostile values) and
where it is written (beside the manifest, never through a link, after every batch run).
tests/test_report_browser.py opens it in a real browser."""

from __future__ import annotations

import copy
import json
import logging
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import example_dropfolder_config
from gateway.governance import report_files
from gateway.governance.report import CSP, MAX_CELLS, NOT_MEASURED, render_report
from gateway.governance.report_files import report_path
from schemas.examples import generate_card_file
from tests.report_data import full_manifest

SECTIONS = ["summary", "scores", "psi", "rejects", "scoring", "breaker", "review", "quality", "examples", "pii"]
OPTIONAL = [s for s in SECTIONS if s != "summary"]
# what the page may contain at all: no script, no link, no image, no form, no frame
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "main", "section", "h1", "h2", "p", "dl", "dt",
                "dd", "div", "b", "span", "code", "table", "thead", "tbody", "tr", "th", "td", "svg", "rect", "line",
                "text"}


class Page(HTMLParser):
    """Every start tag of a page with its attributes, and its text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def chart(self, name: str) -> dict[str, str | None]:
        [svg] = self.all("svg", data_chart=name)
        return svg

    def measured(self) -> dict[str, str | None]:
        return {str(a["data-section"]): a["data-measured"] for a in self.all("section")}


def rect_values(html: str, chart: str) -> list[float]:
    """The data-value of every bar in one chart."""
    start = html.index(f'data-chart="{chart}"')
    end = html.index("</svg>", start)
    part = Page("<svg " + html[start:end])
    return [float(str(a["data-value"])) for a in part.all("rect") if "data-value" in a]


# --------------------------------------------------------------------------- the page
def test_a_full_manifest_renders_every_section_and_chart_with_its_data() -> None:
    html = render_report(full_manifest())
    page = Page(html)
    assert page.measured() == dict.fromkeys(SECTIONS, "true")
    assert {t for t, _ in page.tags} <= ALLOWED_TAGS
    [csp] = page.all("meta", http_equiv="Content-Security-Policy")
    assert csp["content"] == CSP and "default-src 'none'" in CSP
    assert "http:" not in html and "https:" not in html and "url(" not in html
    assert {a["data-chart"]: int(str(a["data-points"])) for a in page.all("svg")} == {
        "scores": 10, "psi": 4, "rejects": 2, "scored_by": 2, "breaker": 5}
    assert sorted(rect_values(html, "psi")) == [0.01, 0.05, 0.12, 0.31]
    assert [a["data-label"] for a in page.all("rect", data_breach="true")] == ["TXN_AMOUNT"]  # over 0.2 only
    [line] = page.all("line", **{"class": "threshold"})
    assert line["data-value"] == "0.2"
    assert rect_values(html, "rejects") == [8.0, 2.0]
    assert [a["data-state"] for a in page.all("rect") if a.get("data-state")] == [
        "closed", "open", "closed", "closed", "closed"]
    text = " ".join(page.text)
    for shown in ("2 signals over their thresholds", "1,000", "990", "CARDTXN.DAT", "card_txn v1", "fraud 1",
                  "492181******4173", "mask", "shadow agreement (rules vs model) 97.0%", "psi.TXN_AMOUNT"):
        assert shown in text, shown
    assert NOT_MEASURED not in text


@pytest.mark.parametrize("manifest", [{}, {"run_id": "r1", "status": "done"}, {"quality": {}, "drift": {}}],
                         ids=["empty", "minimal", "empty-sections"])
def test_every_section_of_an_older_manifest_says_not_measured(manifest: dict[str, Any]) -> None:
    page = Page(render_report(manifest))
    assert page.measured() == {"summary": "true", **dict.fromkeys(OPTIONAL, "false")}
    assert " ".join(page.text).count(NOT_MEASURED) >= len(OPTIONAL) + 1  # and the verdict
    assert page.all("svg") == []


def test_a_manifest_of_today_shows_rejects_from_its_metrics_and_the_rest_as_not_measured() -> None:
    manifest = {k: v for k, v in full_manifest().items()
                if k in ("run_id", "pipeline", "status", "input", "contract", "model", "counts", "scored_by")}
    manifest["metrics"] = {"lgw_records_rejected_total": [
        {"labels": {"pipeline": "card_txn", "reason": "decode"}, "value": 5},
        {"labels": {"pipeline": "card_txn", "reason": "validation"}, "value": 7}]}
    html = render_report(manifest)
    page = Page(html)
    assert page.measured() == {**dict.fromkeys(SECTIONS, "false"), "summary": "true", "rejects": "true",
                               "scoring": "true"}
    assert rect_values(html, "rejects") == [7.0, 5.0]


def test_the_reference_profile_fills_in_reference_null_rates() -> None:
    manifest = full_manifest()
    del manifest["drift"]["null_rate"]
    html = render_report(manifest, reference={"records": 50, "columns": {"COUNTRY": {"null_rate": 0.125}}})
    assert "12.5%" in html


HOSTILE = '<script>alert(1)</script>"><img src=http://example.invalid/x onerror=alert(2)>'


def hostile_manifest() -> dict[str, Any]:
    m = full_manifest()
    m["pipeline"] = m["run_id"] = "</title>" + HOSTILE
    m["input"]["name"] = HOSTILE
    m["status"] = HOSTILE
    m["quality"]["verdict"] = HOSTILE
    m["quality"]["fields"][HOSTILE] = {"nulls": 1, "null_rate": 0.5, "min": HOSTILE, "max": HOSTILE,
                                       "rejects": {HOSTILE: 3}}
    m["drift"]["psi"][HOSTILE] = 0.9
    m["drift"]["segments"][HOSTILE] = {HOSTILE: {"records": 1, "decision_rate": 0.5, "reference": None}}
    m["drift"]["breaches"].append({"signal": HOSTILE, "value": 1, "threshold": 0.5, "action": HOSTILE})
    m["rejected_by"][HOSTILE] = 4
    m["timeline"].append({"batch": HOSTILE, "records": 1, "scored_by": {}, "breaker": HOSTILE})
    m["examples"]["rejects"].append({"record": HOSTILE, "field": HOSTILE, "reason": HOSTILE, "raw": HOSTILE})
    m["examples"]["records"].append({HOSTILE: HOSTILE})
    m["pii"][HOSTILE] = HOSTILE
    m["warnings"] = [HOSTILE]
    m["reason"] = HOSTILE
    return m


def test_script_tags_and_markup_in_names_and_values_are_escaped() -> None:
    html = render_report(hostile_manifest())
    page = Page(html)
    assert {t for t, _ in page.tags} <= ALLOWED_TAGS  # no script, img, link, iframe made it in as a tag
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert all(not k.startswith("on") for _, attrs in page.tags for k in attrs)
    assert HOSTILE[:40] in "".join(page.text)  # shown, as text
    assert html.count("</title>") == len(page.all("title")) and len(page.all("svg")) == 5  # none closed early
    assert any(a.get("data-label") == HOSTILE for a in page.all("rect"))  # an attribute, quoted


@pytest.mark.parametrize("value", [[], "x", 7, None, float("nan"), {"a": float("inf")}, [1, 2], 10 ** 400,
                                   {"a": 10 ** 400}, [{"batch": 1, "records": 10 ** 400}]],
                         ids=["list", "text", "number", "none", "nan", "inf", "numbers", "huge", "huge-in-dict",
                              "huge-in-list"])
def test_sections_of_the_wrong_type_are_not_measured_instead_of_failing(value: Any) -> None:
    manifest: dict[str, Any] = {"counts": value, "scored_by": value, "rejected_by": value, "timeline": value,
                                "review": value, "examples": value, "pii": value, "metrics": value,
                                "input": value, "contract": value, "model": value, "timings": value,
                                "quality": {"fields": value, "verdict": value, "reject_rate": value},
                                "drift": {k: value for k in ("psi", "thresholds", "score_histogram", "null_rate",
                                                              "out_of_range", "segments", "breaches", "reference",
                                                              "score_psi", "fallback_share")}}
    page = Page(render_report(manifest))
    assert {t for t, _ in page.tags} <= ALLOWED_TAGS
    for svg in page.all("svg"):
        assert int(str(svg["data-points"])) > 0


def test_a_long_run_groups_its_batches_in_the_timeline() -> None:
    manifest = full_manifest()
    manifest["timeline"] = [{"batch": i, "records": 10, "scored_by": {"model": 10, "fallback": 0},
                             "breaker": "open" if i == 5_000 else "closed"} for i in range(10_000)]
    page = Page(render_report(manifest))
    cells = page.all("rect")
    states = [a["data-state"] for a in cells if a.get("data-state")]
    assert page.chart("breaker")["data-points"] == str(len(states)) and len(states) <= MAX_CELLS
    assert states.count("open") == 1  # the one open batch is not averaged away


def test_report_path_is_beside_the_manifest() -> None:
    assert report_path("/o/CARDTXN.DAT.manifest.json") == Path("/o/CARDTXN.DAT.report.html")
    assert report_path("/f/CARDTXN.DAT.report.json") == Path("/f/CARDTXN.DAT.report.html")
    assert report_path("/x/run.json") == Path("/x/run.report.html")
    assert report_path("/x/.json") == Path("/x/.json.report.html")


# --------------------------------------------------------------------------- lgw report and batch runs
def batch_run(root: Path, capsys: pytest.CaptureFixture[str], *, records: int = 300, **kwargs: Any) -> dict[str, Any]:
    """One `lgw batch run` over a generated file; its summary line."""
    cfg = example_dropfolder_config(f"sqlite:///{root / 'state.db'}", fmt="jsonl", batch_size=100)
    root.mkdir(parents=True, exist_ok=True)
    (root / "gateway.yaml").write_text(json.dumps(cfg), encoding="utf-8")
    inbox = root / "drop" / "inbox" / "CARDTXN.DAT"
    generate_card_file(inbox, records=records, seed=11, bad_every=100)
    if kwargs.get("short_trailer"):
        data = bytearray(inbox.read_bytes())
        data[-120 + 1: -120 + 10] = f"{records - 1:09d}".encode("cp037")
        inbox.write_bytes(bytes(data))
    main(["batch", "run", "card_txn", "--config", str(root / "gateway.yaml")])
    summary: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return summary


def test_every_batch_run_writes_its_report_beside_its_manifest(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    summary = batch_run(tmp_path, capsys)
    manifest = Path(summary["manifest"])
    report = manifest.with_name("CARDTXN.DAT.report.html")
    page = Page(report.read_text(encoding="utf-8"))
    assert summary["run"] in " ".join(page.text)
    assert page.measured()["rejects"] == "true" and page.measured()["psi"] == "false"


def test_a_failed_run_writes_its_report_beside_its_failure_report(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    summary = batch_run(tmp_path, capsys, short_trailer=True)
    assert summary["status"] == "failed"
    failed = tmp_path / "drop" / "failed"
    assert (failed / "CARDTXN.DAT.report.html").is_file()
    (failed / "CARDTXN.DAT.report.html").unlink()
    assert main(["report", summary["run"], "--config", str(tmp_path / "gateway.yaml")]) == 0
    assert capsys.readouterr().out.strip() == str(failed / "CARDTXN.DAT.report.html")
    assert "record count" in (failed / "CARDTXN.DAT.report.html").read_text(encoding="utf-8")


def test_lgw_report_finds_the_run_and_writes_beside_its_manifest_or_to_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = batch_run(tmp_path, capsys)
    config = str(tmp_path / "gateway.yaml")
    beside = Path(summary["manifest"]).with_name("CARDTXN.DAT.report.html")
    beside.unlink()
    assert main(["report", summary["run"], "--config", config]) == 0
    assert capsys.readouterr().out.strip() == str(beside) and beside.is_file()
    other = tmp_path / "reports" / "night.html"
    assert main(["report", summary["run"], "--state-url", f"sqlite:///{tmp_path / 'state.db'}",
                 "--output", str(other)]) == 0
    assert capsys.readouterr().out.strip() == str(other)
    assert other.read_bytes() == beside.read_bytes()
    assert main(["report", summary["manifest"], "-o", str(tmp_path / "direct.html")]) == 0  # a manifest's path
    assert (tmp_path / "direct.html").read_bytes() == beside.read_bytes()
    assert main(["report", "card_txn.nope", "--config", config]) == 2
    assert "no run 'card_txn.nope'" in capsys.readouterr().err


def test_a_symlinked_or_oversized_manifest_is_refused_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    summary = batch_run(tmp_path, capsys)
    config = str(tmp_path / "gateway.yaml")
    manifest = Path(summary["manifest"])
    saved = tmp_path / "saved.json"
    manifest.rename(saved)
    secret = tmp_path / "secret.json"
    secret.write_text('{"run_id": "SECRET-CONTENT"}', encoding="utf-8")
    manifest.symlink_to(secret)
    beside = manifest.with_name("CARDTXN.DAT.report.html")
    before = beside.read_bytes()
    assert main(["report", summary["run"], "--config", config]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "symbolic link" in err[0]
    assert beside.read_bytes() == before  # nothing written
    manifest.unlink()
    saved.rename(manifest)
    monkeypatch.setattr(report_files, "MAX_MANIFEST_BYTES", 100)
    assert main(["report", summary["run"], "--config", config]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more than the 100 a manifest may have" in err[0]


@pytest.mark.parametrize("content", [b"[1, 2]", b"{not json", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000],
                         ids=["not-an-object", "not-json", "not-utf8", "too-deep"])
def test_a_manifest_that_is_not_one_is_refused_with_one_line(tmp_path: Path, content: bytes,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "X.manifest.json"
    manifest.write_bytes(content)
    assert main(["report", str(manifest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lgw: error: manifest {manifest}")
    assert not (tmp_path / "X.report.html").exists()


def test_a_link_planted_where_the_report_goes_is_not_followed(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    summary = batch_run(tmp_path, capsys)
    beside = Path(summary["manifest"]).with_name("CARDTXN.DAT.report.html")
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched", encoding="utf-8")
    beside.unlink()
    beside.symlink_to(victim)
    assert main(["report", summary["run"], "--config", str(tmp_path / "gateway.yaml")]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_text(encoding="utf-8") == "untouched" and os.path.islink(beside)


def test_a_report_that_cannot_be_rendered_does_not_fail_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(manifest: dict[str, Any], **_: Any) -> str:
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(report_files, "render_report", broken)
    with caplog.at_level(logging.WARNING, logger="lgw.report"):
        summary = batch_run(tmp_path, capsys)
    assert summary["status"] == "done" and Path(summary["manifest"]).is_file()
    assert not Path(summary["manifest"]).with_name("CARDTXN.DAT.report.html").exists()
    [warning] = [r for r in caplog.records if r.name == "lgw.report"]
    assert "could not be written" in warning.getMessage() and "renderer broke" in warning.getMessage()


def test_render_report_does_not_change_the_manifest() -> None:
    manifest = full_manifest()
    before = copy.deepcopy(manifest)
    render_report(manifest)
    assert manifest == before
