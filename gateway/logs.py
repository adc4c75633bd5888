"""Log lines as text for people or as one JSON object per line for a log collector, each
carrying the context of the work it comes from (pipeline, run, input, offset, record).

The context travels in contextvars rather than in every call's `extra=`: a run sets it
once with `log_context(...)`, and the tasks and threads it starts (asyncio copies the
context into both) log with it without being handed it. A call's own `extra=` wins.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

from opentelemetry import trace

from schemas.errors import ConfigError

LogFormat = Literal["auto", "text", "json"]
FORMATS: tuple[LogFormat, ...] = ("auto", "text", "json")
ENV_VAR = "LGW_LOG_FORMAT"
# The context a log line may carry; record values never: pii stays out of logs.
FIELDS = ("pipeline", "run", "input", "offset", "record")
TRACE_FIELDS = ("trace_id", "span_id")  # of the span a line is written in, when tracing records it

_context: ContextVar[Mapping[str, object] | None] = ContextVar("lgw_log_context", default=None)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Log lines written inside the block (and by the tasks it starts) carry `fields`,
    on top of the context already set; a field given as None is left as it was."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"log_context: unknown fields {sorted(unknown)}; known: {', '.join(FIELDS)}")
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, object]:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Puts the current log context on every record that passes the handler; on the
    handler, not a logger, because a logger's filters skip records from its children."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        span = trace.get_current_span()
        if span.is_recording():  # a line written inside a recorded span names it (W3C hex ids)
            ctx = span.get_span_context()
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (json.dumps escapes the newlines of a
    traceback), so a collector never has to join lines back into an entry."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
                  .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage().rstrip("\n"),  # py.warnings ends its message with one
        }
        for key in (*FIELDS, *TRACE_FIELDS):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def chosen_format(flag: str | None) -> LogFormat:
    """The --log-format flag if given, else LGW_LOG_FORMAT (gateway.settings), else auto."""
    from gateway.settings import env_setting

    value = flag if flag is not None else (env_setting("log_format") or "").strip().lower() or "auto"
    for known in FORMATS:
        if value == known:
            return known
    raise ConfigError(f"{ENV_VAR}={value!r}: expected one of {', '.join(FORMATS)}")


def stderr_line(text: str, *, flag: str | None, level: int = logging.ERROR) -> str:
    """The line `lgw` ends with on stderr when a command fails or is stopped: `text`, or
    with json logs the same text as one JSON object, so a log collector never meets a line
    it cannot parse. A bad LGW_LOG_FORMAT (itself reported this way) falls back to text."""
    try:
        fmt = chosen_format(flag)
    except ConfigError:
        fmt = "text"
    if fmt != "json":
        return text
    record = logging.LogRecord("lgw", level, __file__, 0, text.removeprefix("lgw: "), None, None)
    return JsonFormatter().format(record)


def json_handler() -> logging.Handler:
    """A stderr handler writing JSON lines with the log context."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    return handler


__all__ = ["ENV_VAR", "FIELDS", "FORMATS", "TRACE_FIELDS", "ContextFilter", "JsonFormatter", "LogFormat",
           "chosen_format", "current_context", "json_handler", "log_context", "stderr_line"]
