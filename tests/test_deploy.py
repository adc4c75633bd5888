"""docker-compose.yml is for users (no Docker engine here): it is validated, not run.
The gateway config it mounts must load and build the real-time app, every file the
Dockerfile copies must exist, and the committed AsyncAPI document must be the one the
app generates from deploy/gateway.example.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.config import load_config
from gateway.realtime.serve import asyncapi_document

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_compose_has_the_stack_with_health_checks() -> None:
    services = COMPOSE["services"]
    assert {"kafka", "rabbitmq", "postgres", "model", "gateway"} <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    for dep, cond in services["gateway"]["depends_on"].items():
        assert cond == {"condition": "service_healthy"}
        assert "healthcheck" in services[dep], f"{dep} has no healthcheck to wait on"
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper


def test_compose_gateway_config_loads_with_the_compose_environment(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    gateway = COMPOSE["services"]["gateway"]
    config = gateway["command"][gateway["command"].index("--config") + 1]
    local = ROOT / Path(config).relative_to("/opt/lgw")
    for key, value in gateway["environment"].items():
        value = re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", str(value))
        if value.startswith("/run/secrets/"):  # a compose secret: a stand-in file of the service's own
            name = value.removeprefix("/run/secrets/")
            assert name in gateway["secrets"] and name in COMPOSE["secrets"], name
            value = str(tmp_path / name)
            Path(value).write_text("stand-in-secret-0123456789abcdef\n")
        monkeypatch.setenv(key, value)
    cfg = load_config(local)
    assert cfg.kafka.bootstrap_servers == "kafka:29092"
    assert cfg.amqp.url.startswith("amqp://guest:guest@rabbitmq")
    assert cfg.models["fraud"].endpoint.url == "http://model:8080"  # type: ignore[union-attr]
    assert cfg.state.url.startswith("postgresql+psycopg://")
    doc = asyncapi_document(cfg)
    assert "card_txn_stream:input" in doc and "card_txn_mq:requests" in doc


def test_dockerfile_copies_what_exists() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is missing"
    extras = re.search(r'pip install [^"]*"\.\[([^\]]+)\]"', dockerfile)
    assert extras is not None
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for extra in extras.group(1).split(","):
        assert re.search(rf"^{extra} = \[", pyproject, re.M), f"extra {extra} is not in pyproject.toml"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".venv" in ignored


def test_committed_asyncapi_document_is_current() -> None:
    generated = asyncapi_document(load_config(ROOT / "deploy" / "gateway.example.yaml"), fmt="yaml")
    committed = (ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8")
    assert committed.strip() == generated.strip(), (
        "docs/asyncapi.yaml is stale: lgw asyncapi --config deploy/gateway.example.yaml --format yaml "
        "-o docs/asyncapi.yaml")


def test_compose_gateway_serves_health_and_metrics_that_prometheus_scrapes() -> None:
    services = COMPOSE["services"]
    gateway = services["gateway"]
    assert gateway["environment"]["LGW_OPS_ADDRESS"] == "0.0.0.0:9464"
    assert "http://127.0.0.1:9464/readyz" in " ".join(gateway["healthcheck"]["test"])
    prometheus = services["prometheus"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in prometheus["volumes"]}
    assert (ROOT / mounts["/etc/prometheus"] / "prometheus.yml").is_file()
    assert (ROOT / mounts["/etc/prometheus"] / "alerts.yml").is_file()
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert {"gateway:9464", "pushgateway:9091"} == targets
    assert {"gateway", "pushgateway"} <= set(services)
    for volume in services["grafana"]["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume
