"""`lgw config check`: what a gateway.yaml would make the gateway use, without secrets.
An operator pastes this output into tickets and chat, so every URL has its password
masked and an ODBC connection is named by its DSN or server, never its string."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from adapters.amqp.config import AmqpConfig
from adapters.kafka.config import KafkaConfig
from adapters.odbc.connection import OdbcConnectionConfig, placeholders
from adapters.tls import TLSConfig
from gateway.config import GatewayConfig, OnnxModelConfig, PipelineConfig
from gateway.ops_http import format_address, ops_address
from gateway.settings import data_dir, env_status, environment_status

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
    return _target(conn) + "".join(f"; {name} {status}" for name, status in _secrets(conn).items())


def _target(conn: OdbcConnectionConfig) -> str:
    if conn.dsn:
        return f"dsn={conn.dsn}"
    if conn.connection_string:
        return "connection_string (not shown: it may hold a password)"
    where = conn.server or "?"
    if conn.port:
        where += f":{conn.port}"
    return f"driver={conn.driver} server={where} database={conn.database or '?'}"


def _secrets(conn: OdbcConnectionConfig) -> dict[str, str]:
    """The variables the connection's `${NAME}` placeholders read, as [set]/[NOT SET]
    (one with a default is never missing)."""
    out: dict[str, str] = {}
    for name, has_default in placeholders(conn.template()):
        status = env_status(name)
        out[name] = f"{status} (has a default)" if has_default and status == "[NOT SET]" else status
    return out


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
    out["governance"] = _governance(pipe)
    return out


def _governance(pipe: PipelineConfig) -> dict[str, Any]:
    """The pipeline's pii overrides, drift reference and action, review rule (gateway.governance)."""
    out: dict[str, Any] = {"pii": dict(pipe.pii)}
    if pipe.drift is not None:
        out["drift"] = {"reference": _file(pipe.drift.reference), "action": pipe.drift.action,
                        "segments": pipe.drift.segments, "window_records": pipe.drift.window_records}
    if pipe.review is not None:
        out["review"] = {"band": list(pipe.review.band) if pipe.review.band else None, "when": pipe.review.when,
                         "hold": pipe.review.hold, "max_pending": pipe.review.max_pending}
    return out


def _file(path: str) -> str:
    return path if os.access(path, os.R_OK) else f"{path} [NOT READABLE]"


def _tls(tls: TLSConfig | None) -> dict[str, Any] | None:
    if tls is None or not tls.enabled:
        return None
    out: dict[str, Any] = {"ca_file": _file(tls.ca_file) if tls.ca_file else "system trust store",
                           "check_hostname": tls.check_hostname}
    if tls.cert_file:
        out["cert_file"] = _file(tls.cert_file)
        out["key_file"] = _file(tls.key_file or tls.cert_file)
    if tls.key_password_env:
        out["key_password"] = f"{tls.key_password_env} {env_status(tls.key_password_env)}"
    return out


def _kafka_security(k: KafkaConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": k.security_protocol}
    tls = _tls(k.tls) if k.uses_tls else None
    if k.uses_tls:
        out["tls"] = tls or {"ca_file": "system trust store", "check_hostname": True}
    if k.sasl is not None:
        out["sasl"] = {"mechanism": k.sasl.mechanism, "username": k.sasl.username,
                       "password": f"{k.sasl.password_env} {env_status(k.sasl.password_env)}"}
    return out


def _amqp_security(a: AmqpConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": "TLS" if a.uses_tls else "plaintext"}
    if a.uses_tls:
        out["tls"] = _tls(a.tls) or {"ca_file": "system trust store", "check_hostname": True}
    if a.username is not None and a.password_env is not None:
        out["login"] = {"username": a.username, "password": f"{a.password_env} {env_status(a.password_env)}"}
    return out


def _model_security(ep: Any) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if ep.auth is not None:
        out["bearer_token"] = f"{ep.auth.bearer_token_env} {env_status(ep.auth.bearer_token_env)}"
    tls = _tls(ep.tls)
    if tls is not None:
        out["tls"] = tls
    return out or None


def summary(cfg: GatewayConfig) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name, model in cfg.models.items():
        ep = model.endpoint
        where = ep.path if isinstance(ep, OnnxModelConfig) else mask_url(ep.url)
        models[name] = {"backend": ep.backend, "endpoint": where}
        security = None if isinstance(ep, OnnxModelConfig) else _model_security(ep)
        if security is not None:
            models[name]["security"] = security
    return {
        "models": models,
        "pipelines": {name: _pipeline(pipe) for name, pipe in cfg.pipelines.items()},
        "state": {"url": mask_url(cfg.state.url)},
        "kafka": {"bootstrap_servers": mask_url(cfg.kafka.bootstrap_servers),
                  "security": _kafka_security(cfg.kafka)},
        "amqp": {"url": mask_url(cfg.amqp.url), "security": _amqp_security(cfg.amqp)},
        "pushgateway": {"url": mask_url(cfg.pushgateway.url) if cfg.pushgateway.url else None,
                        "job": cfg.pushgateway.job,
                        "password": env_status(cfg.pushgateway.password_env) if cfg.pushgateway.password_env
                        else None},
        "environment": environment_status(name for name, model in cfg.models.items()
                                          if not isinstance(model.endpoint, OnnxModelConfig)),
        "data_dir": str(data_dir()),
        "ops_address": format_address(ops_address(cfg, None)),
        "tracing": _tracing(cfg),
        "audit": _audit(cfg),
        "console": _console(cfg),
    }


def _console(cfg: GatewayConfig) -> dict[str, Any]:
    """The admin API and console: on or off and why, the tokens file and how many tokens it
    holds (never their digests), the OIDC issuer, sessions. Tokens made through the API
    live in the state store, which this command does not open."""
    from gateway.console.auth import read_tokens_file, tokens_file_path
    from gateway.console.security import ENV_KEY
    from schemas.errors import ConfigError

    c = cfg.console
    path = tokens_file_path(c, cfg.base_dir)
    tokens: dict[str, Any] = {"path": str(path), "exists": path.is_file(), "count": 0, "error": None}
    if tokens["exists"]:
        try:
            tokens["count"] = len(read_tokens_file(path))
        except ConfigError as exc:
            tokens["error"] = str(exc)
    oidc = None if c.oidc is None else {"issuer": str(c.oidc.issuer), "audience": c.oidc.audience,
                                          "roles_claim": c.oidc.roles_claim, "role_map": dict(c.oidc.role_map)}
    return {"enabled": c.enabled and (tokens["exists"] or oidc is not None), "configured": c.enabled,
            "tokens_file": tokens, "oidc": oidc, "session_minutes": c.session_minutes,
            "session_key": env_status(ENV_KEY), "max_auth_failures": c.max_auth_failures,
            "failure_window_s": c.failure_window_s}


def _audit(cfg: GatewayConfig) -> dict[str, Any]:
    from gateway.governance.audit import audit_path

    a = cfg.audit
    if not a.enabled:
        return {"enabled": False}
    where = str(audit_path(cfg)) if a.store == "parquet" else mask_url(cfg.state.url)
    return {"enabled": True, "store": a.store, "where": where, "retention_days": a.retention_days}


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


def _security_lines(security: dict[str, Any] | None, indent: str) -> list[str]:
    """`security:` then one line per part (tls, sasl, login, bearer token): key=value pairs."""
    if not security:
        return []
    lines = [f"{indent}security: {security.get('protocol', '')}".rstrip()]
    for part, value in security.items():
        if part == "protocol":
            continue
        text = " ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
        lines.append(f"{indent}  {part}: {text}")
    return lines


def _governance_lines(g: dict[str, Any]) -> list[str]:
    lines = []
    if g["pii"]:
        lines.append("    pii:     " + ", ".join(f"{k} {v}" for k, v in g["pii"].items()) + " (over the contract's)")
    if "drift" in g:
        d = g["drift"]
        lines.append(f"    drift:   reference {d['reference']}, action {d['action']}"
                     + (f", segments {', '.join(d['segments'])}" if d["segments"] else ""))
    if "review" in g:
        r = g["review"]
        rule = " and ".join(x for x in (f"band {r['band']}" if r["band"] else "", r["when"] or "") if x)
        lines.append(f"    review:  {rule}, {'held' if r['hold'] else 'marked pending'}, max {r['max_pending']}")
    return lines


def _console_lines(c: dict[str, Any]) -> list[str]:
    t = c["tokens_file"]
    if not c["configured"]:
        return ["console: off (console.enabled: false)"]
    if not c["enabled"]:
        return [f"console: off (no tokens file at {t['path']} and no console.oidc; "
                "`lgw console token new --name NAME --role admin` makes one)"]
    lines = ["console: on (/api/v1, /console; /metrics needs a token)"]
    if t["error"]:
        lines.append(f"  tokens file: {t['path']} [BROKEN: {t['error']}]")
    elif t["exists"]:
        lines.append(f"  tokens file: {t['path']} ({t['count']} token{'' if t['count'] == 1 else 's'})")
    else:
        lines.append(f"  tokens file: {t['path']} (none)")
    o = c["oidc"]
    lines.append(f"  oidc: {o['issuer']} (audience {o['audience']}, roles claim {o['roles_claim']})" if o
                 else "  oidc: none")
    key = ("a key file in the data dir" if c["session_key"] == "[NOT SET]"
           else f"LGW_CONSOLE_SESSION_KEY {c['session_key']}")
    lines.append(f"  sessions: {c['session_minutes']} minutes, signed with {key}")
    lines.append(f"  failed logins: at most {c['max_auth_failures']} per address in {c['failure_window_s']:g} s")
    return lines


def render(info: dict[str, Any]) -> list[str]:
    """The summary as plain lines for a terminal."""
    lines = ["models:"]
    for name, m in info["models"].items():
        lines.append(f"  {name}: {m['backend']} {m['endpoint']}")
        lines += _security_lines(m.get("security"), "    ")
    if not info["models"]:
        lines.append("  (none)")
    lines.append("pipelines:")
    for name, p in info["pipelines"].items():
        lines.append(f"  {name}: contract {p['contract']}, model {p['model'] or 'none (rules only)'}, "
                     f"policy {p['policy']}, batch_size {p['batch_size']}")
        lines.append(f"    source:  {_where(p['source'])}")
        if p["source"] is not None:
            lines.append(f"    sink:    {_where(p['sink'])}")
            lines.append(f"    rejects: {_where(p['rejects'])}")
            lines += _governance_lines(p["governance"])
    if not info["pipelines"]:
        lines.append("  (none)")
    lines.append(f"state: {info['state']['url']}")
    lines.append(f"kafka: {info['kafka']['bootstrap_servers']}")
    lines += _security_lines(info["kafka"]["security"], "  ")
    lines.append(f"amqp: {info['amqp']['url']}")
    lines += _security_lines(info["amqp"]["security"], "  ")
    push = info["pushgateway"]
    password = f", password {push['password']}" if push.get("password") else ""
    lines.append(f"pushgateway: {push['url']} (job {push['job']}{password})" if push["url"] else "pushgateway: none")
    t = info["tracing"]
    if t["enabled"]:
        where = t["endpoint"] if t["exporter"] == "otlp" else "exporter none"
        lines.append(f"tracing: {where} (service {t['service_name']}, sampler {t['sampler']}, "
                     f"propagate {t['propagate']})")
    else:
        lines.append("tracing: off")
    a = info["audit"]
    lines.append(f"audit: {a['store']} {a['where']} (retention {a['retention_days']} days)" if a["enabled"]
                 else "audit: off")
    lines.append(f"ops address: {info['ops_address']} (/healthz, /readyz, /metrics of lgw serve and lgw run)")
    lines += _console_lines(info["console"])
    lines.append(f"data dir: {info['data_dir']}")
    lines.append("environment:")
    lines += [f"  {name}: {status}" for name, status in info["environment"].items()]
    return lines
