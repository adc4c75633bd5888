"""Run reports on disk: reading a manifest safely, writing its report beside it.

A manifest can sit in a folder others write to. It is opened without following a link
and refused past MAX_MANIFEST_BYTES, so a planted link cannot make a report disclose
another file and a huge file cannot exhaust memory. The report is written under a
temporary name and renamed over a missing name or a regular file only
(schemas.safefiles), never through a link.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from gateway.governance.report import render_report
from schemas.errors import ConfigError
from schemas.safefiles import UnsafePath, atomic_write, create_output, open_existing

log = logging.getLogger("lgw.report")

MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # a manifest is a few kB; anything near this is not one
_SUFFIXES = (".manifest.json", ".report.json", ".json")


def read_json_file(path: str | os.PathLike[str], what: str = "manifest") -> dict[str, Any]:
    """A JSON object from a regular file, opened without following a link and refused
    past MAX_MANIFEST_BYTES: a manifest can sit in a folder others write to, and a link
    there must not make the report disclose another file. ConfigError (one line) when it
    cannot be read as one."""
    p = Path(path)
    try:
        with open_existing(p) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_MANIFEST_BYTES:
                raise ConfigError(f"{what} {p}: {size:,} bytes, more than the {MAX_MANIFEST_BYTES:,} a {what} "
                                  "may have; refusing to read it")
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except UnsafePath as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except FileNotFoundError:
        raise ConfigError(f"{what} {p} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {p}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_MANIFEST_BYTES:  # grew while being read
        raise ConfigError(f"{what} {p}: more than {MAX_MANIFEST_BYTES:,} bytes; refusing to read it")
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ConfigError(f"{what} {p} nests its JSON too deeply to be a {what}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{what} {p} is not JSON: {type(exc).__name__} at byte "
                          f"{getattr(exc, 'pos', getattr(exc, 'start', '?'))}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what} {p} is not a JSON object")
    return value


def report_path(manifest_path: str | os.PathLike[str]) -> Path:
    """Where a manifest's report goes by default: beside it, NAME.manifest.json (or
    NAME.report.json, a failed run's) becoming NAME.report.html."""
    p = Path(manifest_path)
    name = p.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return p.with_name(name[: -len(suffix)] + ".report.html")
    return p.with_name(name + ".report.html")


def write_report(manifest_path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
                 reference: dict[str, Any] | None = None) -> Path:
    """Renders the manifest at `manifest_path` and writes the page (default: beside it).
    Never through a link: the file is written under a temporary name and renamed over a
    missing name or a regular file only."""
    manifest = read_json_file(manifest_path)
    page = render_report(manifest, reference=reference).encode("utf-8")
    if output is None:
        target = report_path(manifest_path)
        atomic_write(target, page)
        return target
    with create_output(output, "--output") as new:
        new.write(page)
        return new.publish()


def save_report_beside(manifest: dict[str, Any], manifest_path: str | os.PathLike[str]) -> Path | None:
    """The report of a run that just wrote `manifest` at `manifest_path`, beside it. A
    report is a convenience: any failure is one warning line and None, never the run's
    failure. Repeating it (a publish step resumed after a crash) replaces it."""
    target = report_path(manifest_path)
    try:
        atomic_write(target, render_report(manifest).encode("utf-8"), stale=True)
    except Exception as exc:
        log.warning("run %s: its HTML report could not be written to %s: %s: %s", manifest.get("run_id"), target,
                    type(exc).__name__, exc)
        return None
    return target


__all__ = ["MAX_MANIFEST_BYTES", "read_json_file", "report_path", "save_report_beside", "write_report"]
