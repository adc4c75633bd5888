"""docker-compose.yml is for users (no Docker engine here): it is validated, not run.
The gateway config it mounts must load and build the real-time app, every file the
Dockerfile copies must exist, and the committed AsyncAPI document must be the one the
app generates from deploy/gateway.example.yaml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from gateway.config import DropFolderConfig, load_config
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
    installs = re.findall(r'pip install [^"]*"\.\[([^\]]+)\]"', dockerfile)
    assert len(installs) == 2  # one per image: modelserver, gateway
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for extras in installs:
        for extra in extras.split(","):
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
    assert {"gateway:9464", "batch:9464", "pushgateway:9091"} == targets
    assert {"gateway", "batch", "pushgateway"} <= set(services)
    for volume in services["grafana"]["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume


def dockerfile_stages() -> dict[str, str]:
    """deploy/Dockerfile's build stages: name -> its text (FROM line included)."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    parts = re.split(r"^(?=FROM )", dockerfile, flags=re.M)
    stages = {}
    for part in parts[1:]:
        match = re.match(r"FROM \S+ AS (\S+)", part)
        assert match is not None, f"an unnamed stage: {part.splitlines()[0]}"
        stages[match.group(1)] = part
    return stages


def stage_extras(stage: str) -> set[str]:
    found = re.findall(r'pip install [^"]*"\.\[([^\]]+)\]"', stage)
    assert len(found) == 1
    return set(found[0].split(","))


def test_gateway_image_does_not_carry_the_model_server() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "gateway"  # the default target of a plain `docker build`
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"]
    gateway, modelserver = stage_extras(stages["gateway"]), stage_extras(stages["modelserver"])
    assert "modelserver" in modelserver and "modelserver" not in gateway
    gateway_requirements = " ".join(req for extra in gateway for req in optional[extra])
    assert "kserve" not in gateway_requirements
    assert {"kafka", "rabbit", "odbc", "postgres", "http", "onnx"} <= gateway
    # the ODBC drivers are the gateway's only: the model server's image has no apt layer
    assert "apt-get install" in stages["gateway"] and "apt-get" not in stages["modelserver"]
    for name in ("gateway", "modelserver"):
        assert re.search(r"^USER 10001(:10001)?$", stages[name], re.M), f"{name} must run as the numeric user"
    services = COMPOSE["services"]
    assert services["model"]["build"]["target"] == "modelserver"
    assert services["gateway"]["build"]["target"] == "gateway"
    assert services["batch"]["image"] == services["gateway"]["image"]


def test_compose_images_are_pinned() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    base = re.search(r"^FROM (\S+) AS common", (ROOT / "deploy" / "Dockerfile").read_text(), re.M)
    assert base is not None
    for name, image in [("Dockerfile", base.group(1))] + [(n, s["image"]) for n, s in COMPOSE["services"].items()]:
        _, _, tag = image.rpartition(":")
        assert "/" not in tag and tag not in ("", "latest"), f"{name}: {image} is not pinned"
        assert re.match(r"v?\d+\.\d+", tag), f"{name}: {image}: a major version alone floats"
    for name, svc in COMPOSE["services"].items():
        if "build" in svc:
            assert svc["image"].endswith(f":{version}"), f"{name} builds {svc['image']}, not version {version}"


def test_compose_gateway_has_health_check_and_resource_limits() -> None:
    for name in ("gateway", "batch"):
        svc = COMPOSE["services"][name]
        resources = svc["deploy"]["resources"]
        assert float(resources["limits"]["cpus"]) > 0 and resources["limits"]["memory"], name
        assert resources["reservations"]["memory"], name
        assert "http://127.0.0.1:9464/readyz" in " ".join(svc["healthcheck"]["test"]), name
        assert svc["environment"]["LGW_OPS_ADDRESS"] == "0.0.0.0:9464", name
        assert svc.get("stop_grace_period"), name


def test_compose_batch_service_runs_the_drop_folder_on_its_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    services = COMPOSE["services"]
    batch, gateway = services["batch"], services["gateway"]
    assert batch["command"][0] == "run"
    assert batch["command"] == ["run", "--config", gateway["command"][gateway["command"].index("--config") + 1]]
    config = ROOT / Path(batch["command"][2]).relative_to("/opt/lgw")
    # the same PostgreSQL state store as the gateway: runs, checkpoints and kill switches shared
    assert batch["environment"]["LGW_STATE_URL"] == gateway["environment"]["LGW_STATE_URL"]
    for key, value in batch["environment"].items():
        monkeypatch.setenv(key, re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", str(value)))
    cfg = load_config(config)
    assert cfg.state.url.startswith("postgresql+psycopg://lgw:lgw@postgres")
    drops = {name: pipe.source.folders(cfg.base_dir) for name, pipe in cfg.pipelines.items()
             if isinstance(pipe.source, DropFolderConfig)}
    assert drops, "the compose config has no drop-folder pipeline for `lgw run`"
    volume, _, mount = batch["volumes"][0].partition(":")
    assert volume in COMPOSE["volumes"], "the drop folders must live in a named volume"
    for name, folders in drops.items():
        for kind in ("inbox", "outbox", "done", "failed", "work"):
            assert Path(folders[kind]).is_relative_to(mount), f"{name}: {kind} {folders[kind]} is not on {mount}"
    for dep in batch["depends_on"]:
        assert dep in services
    assert batch["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "ports" not in batch  # nothing to publish: Prometheus reaches it inside the network
