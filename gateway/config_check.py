"""`lgw config check`: what a gateway.yaml would make the gateway use, without secrets.
An operator pastes this output into tickets and chat, so every URL has its password
masked and an ODBC connection is named by its DSN or server, never its string."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from adapters.odbc.connection import OdbcConnectionConfig
from gateway.config import GatewayConfig, OnnxModelConfig, PipelineConfig

MASK = "***"


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***; a URL that does not parse is hidden
    whole, since where its password would be cannot be told."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return MASK
    if password is None and "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}:{MASK}@{host}" if password is not None else f"{user}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _connection(conn: OdbcConnectionConfig) -> str:
    if conn.dsn:
        return f"dsn={conn.dsn}"
    if conn.connection_string:
        return "connection_string (not shown: it may hold a password)"
    where = conn.server or "?"
    if conn.port:
        where += f":{conn.port}"
    return f"driver={conn.driver} server={where} database={conn.database or '?'}"


def _part(part: Any) -> dict[str, Any]:
    """A source, sink or rejects config as its type and where it reads or writes."""
    out: dict[str, Any] = {"type": part.type}
    if part.type == "dropfolder":
        out["target"] = f"{part.inbox} (outbox {part.outbox})"
    elif part.type == "file":
        out["target"] = part.folder
    elif part.type == "odbc":
        out["target"] = getattr(part, "table", None) or "query"
        out["connection"] = _connection(part.connection)
    elif part.type == "kafka":
        out["target"] = ", ".join(part.topics) if hasattr(part, "topics") else part.topic
    elif part.type == "amqp":
        if hasattr(part, "queue"):
            out["target"] = part.queue
        elif part.exchange is None:
            out["target"] = "reply_to of each request"
        else:
            key = getattr(part, "routing_key", None)
            out["target"] = f"exchange {part.exchange}" + (f" routing key {key}" if key else "")
    return out


def _pipeline(pipe: PipelineConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"contract": pipe.contract, "model": pipe.model, "policy": str(pipe.policy),
                           "batch_size": pipe.batch_size}
    if pipe.source is None:
        out["source"] = None  # scored with `lgw score` only
        return out
    out["source"] = _part(pipe.source)
    out["sink"] = _part(pipe.output)
    out["rejects"] = _part(pipe.rejects_to)
    return out


def summary(cfg: GatewayConfig) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name, model in cfg.models.items():
        ep = model.endpoint
        where = ep.path if isinstance(ep, OnnxModelConfig) else mask_url(ep.url)
        models[name] = {"backend": ep.backend, "endpoint": where}
    return {
        "models": models,
        "pipelines": {name: _pipeline(pipe) for name, pipe in cfg.pipelines.items()},
        "state": {"url": mask_url(cfg.state.url)},
        "kafka": {"bootstrap_servers": mask_url(cfg.kafka.bootstrap_servers)},
        "amqp": {"url": mask_url(cfg.amqp.url)},
        "pushgateway": {"url": mask_url(cfg.pushgateway.url) if cfg.pushgateway.url else None,
                        "job": cfg.pushgateway.job},
        "tracing": _tracing(cfg),
    }


def _tracing(cfg: GatewayConfig) -> dict[str, Any]:
    """Tracing as it would run, OTEL_* variables applied."""
    from gateway.tracing import effective

    eff = effective(cfg.tracing)
    return {"enabled": eff.enabled, "exporter": eff.exporter, "endpoint": mask_url(eff.endpoint),
            "service_name": eff.service_name, "sampler": eff.sampler, "propagate": eff.propagate}


def _where(part: dict[str, Any] | None) -> str:
    if part is None:
        return "none"
    text = f"{part['type']} {part.get('target', '')}".rstrip()
    return f"{text} [{part['connection']}]" if "connection" in part else text


def render(info: dict[str, Any]) -> list[str]:
    """The summary as plain lines for a terminal."""
    lines = ["models:"]
    lines += [f"  {name}: {m['backend']} {m['endpoint']}" for name, m in info["models"].items()] or ["  (none)"]
    lines.append("pipelines:")
    for name, p in info["pipelines"].items():
        lines.append(f"  {name}: contract {p['contract']}, model {p['model'] or 'none (rules only)'}, "
                     f"policy {p['policy']}, batch_size {p['batch_size']}")
        lines.append(f"    source:  {_where(p['source'])}")
        if p["source"] is not None:
            lines.append(f"    sink:    {_where(p['sink'])}")
            lines.append(f"    rejects: {_where(p['rejects'])}")
    if not info["pipelines"]:
        lines.append("  (none)")
    lines.append(f"state: {info['state']['url']}")
    lines.append(f"kafka: {info['kafka']['bootstrap_servers']}")
    lines.append(f"amqp: {info['amqp']['url']}")
    push = info["pushgateway"]
    lines.append(f"pushgateway: {push['url']} (job {push['job']})" if push["url"] else "pushgateway: none")
    t = info["tracing"]
    if t["enabled"]:
        where = t["endpoint"] if t["exporter"] == "otlp" else "exporter none"
        lines.append(f"tracing: {where} (service {t['service_name']}, sampler {t['sampler']}, "
                     f"propagate {'on' if t['propagate'] else 'off'})")
    else:
        lines.append("tracing: off")
    return lines
