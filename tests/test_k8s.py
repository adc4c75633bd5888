"""deploy/k8s: every overlay renders (tests/kustomize_lite.py: no kustomize binary here),
every object validates offline against the Kubernetes OpenAPI schemas of one pinned
version (kubernetes-validate bundles them), KEDA's ScaledObject, which has no schema
there, is checked field by field, and the invariants hold: probes on the ops port's
/healthz and /readyz, every container non-root with a read-only root filesystem and no
capabilities, requests and limits, the CronJob Forbid with the drop volume mounted where
the config's folders are, PDBs that select the Deployments' pods, the ConfigMap's
gateway.yaml loading with the environment the pods give it, images pinned."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import DropFolderConfig, load_config
from gateway.console.auth import read_tokens_file
from gateway.realtime.serve import asyncapi_document
from schemas.examples import generate_card_file
from schemas.safefiles import UnsafePath
from tests.helpers import postgres_schema
from tests.kafka_broker import TansuBroker
from tests.kustomize_lite import KustomizeError, build, containers, json_patch, pod_specs, split_image
from tests.lgw_processes import LgwProcess
from tests.model_servers import ModelServerProcess
from tests.test_realtime_kafka import Topics

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
# the Kubernetes version the manifests are validated against (kubernetes-validate bundles
# the schemas of each release; CronJob timeZone and Job podFailurePolicy are GA by then)
KUBERNETES_VERSION = "1.33.0"
OPS_PORT = 9464
SECRET_DIR = "/var/run/secrets/lgw"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]

Obj = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[Obj]:
    return build(K8S / "overlays" / request.param)


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} in the render"
    return found[0]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if pod_specs(o)]


def env_of(container: Obj, objects: list[Obj]) -> dict[str, str]:
    """A container's environment as the kubelet sets it: envFrom ConfigMaps, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        assert "value" in item, f"{item['name']}: credentials come as files (NAME_FILE), not valueFrom"
        env[item["name"]] = item["value"]
    return env


def gateway_yaml(objects: list[Obj]) -> dict[str, Any]:
    return yaml.safe_load(one(objects, "ConfigMap", "lgw-config")["data"]["gateway.yaml"])


def test_overlays_exist() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


def test_every_manifest_validates_against_the_kubernetes_schemas(rendered: list[Obj]) -> None:
    for obj in rendered:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # no schema in kubernetes-validate: test_keda_scaled_object checks it
        # strict: a field the schema does not know (a typo) is an error too
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    kinds = {o["kind"] for o in rendered}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "CronJob", "PersistentVolumeClaim",
            "ScaledObject"} <= kinds


def test_the_schema_check_catches_a_broken_manifest(rendered: list[Obj]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(one(rendered, "CronJob", "lgw-batch-nightly")))
    broken["spec"]["concurrencyPolicy"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(one(rendered, "Deployment", "lgw-serve")))
    broken["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True  # misspelt, misplaced
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# the fields of KEDA's ScaledObject (keda.sh/v1alpha1, its CRD) and of its kafka trigger
KEDA_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
             "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
KEDA_TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
KEDA_KAFKA = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
              "offsetResetPolicy", "allowIdleConsumers", "scaleToZeroOnInvalidOffset", "excludePersistentLag",
              "limitToPartitionsWithLag", "partitionLimitation", "version", "sasl", "tls", "unsafeSsl"}


def test_keda_scaled_object_scales_serve_on_the_pipelines_consumer_lag(rendered: list[Obj]) -> None:
    scaled = one(rendered, "ScaledObject", "lgw-serve")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= KEDA_SPEC, set(spec) - KEDA_SPEC
    ref = spec["scaleTargetRef"]
    assert (ref.get("kind", "Deployment"), ref["name"]) == ("Deployment", "lgw-serve")
    deployment = one(rendered, "Deployment", "lgw-serve")
    assert "replicas" not in deployment["spec"], "KEDA's HPA owns the count; a replicas field fights it"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["policies"][0]["value"] == 1
    (trigger,) = spec["triggers"]
    assert set(trigger) <= KEDA_TRIGGER and trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert set(meta) <= KEDA_KAFKA, set(meta) - KEDA_KAFKA
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata is a map of strings"
    assert int(meta["lagThreshold"]) > 0
    # the same Kafka, topic and group as the pipeline `lgw serve` consumes
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0], rendered)
    assert meta["bootstrapServers"] == env["LGW_KAFKA_BOOTSTRAP"]
    kafka_pipes = [p["source"] for p in gateway_yaml(rendered)["pipelines"].values()
                   if p["source"].get("type") == "kafka"]
    assert [(s["topics"], s["group_id"]) for s in kafka_pipes] == [([meta["topic"]], meta["consumerGroup"])]
    assert meta["offsetResetPolicy"] == "earliest"  # the gateway consumer's default (kafka.auto_offset_reset)


def _port(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (found,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(found)


def test_gateway_probes_are_healthz_and_readyz_on_the_ops_port(rendered: list[Obj]) -> None:
    gateways = [o for o in rendered if o["kind"] == "Deployment" and o["metadata"]["name"] in ("lgw-serve", "lgw-run")]
    assert gateways[0]["metadata"]["name"] == "lgw-serve"
    for deployment in gateways:
        (c,) = deployment["spec"]["template"]["spec"]["containers"]
        what = deployment["metadata"]["name"]
        env = env_of(c, rendered)
        assert env["LGW_OPS_ADDRESS"] == f"0.0.0.0:{OPS_PORT}", what  # all interfaces: the kubelet probes the pod IP
        # liveness: the process and its loop answer. Never /readyz: a broker or model away
        # would restart every pod and bring nothing back
        live, ready = c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]
        assert (live["path"], _port(c, live["port"])) == ("/healthz", OPS_PORT), what
        assert (ready["path"], _port(c, ready["port"])) == ("/readyz", OPS_PORT), what
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz", what
        assert c["args"][0] in ("serve", "run"), what
    service = one(rendered, "Service", "lgw-serve-ops")
    (port,) = service["spec"]["ports"]
    serve = one(rendered, "Deployment", "lgw-serve")
    assert _port(serve["spec"]["template"]["spec"]["containers"][0], port["targetPort"]) == OPS_PORT
    assert service["spec"]["selector"].items() <= serve["spec"]["template"]["metadata"]["labels"].items()


def test_every_container_is_locked_down(rendered: list[Obj]) -> None:
    for obj in workloads(rendered):
        for pod in pod_specs(obj):
            what = obj["metadata"]["name"]
            assert pod.get("automountServiceAccountToken") is False, what
            pod_sc = pod["securityContext"]
            assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, what
            assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 10001, what  # the images' user
            writable = {m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])
                        if not m.get("readOnly")}
            emptydirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
            for c in (*pod.get("initContainers", []), *pod["containers"]):
                sc = c["securityContext"]
                assert sc["runAsNonRoot"] is True, (what, c["name"])
                assert sc["readOnlyRootFilesystem"] is True, (what, c["name"])
                assert sc["allowPrivilegeEscalation"] is False, (what, c["name"])
                assert sc["capabilities"] == {"drop": ["ALL"]}, (what, c["name"])
                assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, (what, c["name"])
                assert "privileged" not in sc or sc["privileged"] is False
                tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert len(tmp) == 1 and tmp[0]["name"] in emptydirs, f"{what}: /tmp must be an emptyDir"
                data_dir = env_of(c, rendered).get("LGW_DATA_DIR")
                if data_dir is not None:  # the gateway writes its key files and SQLite there
                    assert data_dir in writable, f"{what}: LGW_DATA_DIR {data_dir} is not a writable volume"


def _cpu(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _bytes(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([KMG]i?)?", q)
    assert match is not None, q
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


def test_every_container_has_requests_and_limits(rendered: list[Obj]) -> None:
    for obj in workloads(rendered):
        for c in containers(obj):
            res = c["resources"]
            what = (obj["metadata"]["name"], c["name"])
            for key in ("cpu", "memory"):
                assert key in res["requests"] and key in res["limits"], what
            assert _cpu(str(res["requests"]["cpu"])) <= _cpu(str(res["limits"]["cpu"])), what
            assert _bytes(res["requests"]["memory"]) <= _bytes(res["limits"]["memory"]), what


def _drop_mount(container: Obj, pod: Obj, objects: list[Obj]) -> str:
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}
    mounts = [m for m in container["volumeMounts"] if m["name"] in claims]
    assert len(mounts) == 1 and not mounts[0].get("readOnly")
    one(objects, "PersistentVolumeClaim", claims[mounts[0]["name"]])
    return str(mounts[0]["mountPath"])


def test_nightly_cronjob_forbids_overlap_and_mounts_the_drop_folders(rendered: list[Obj], tmp_path: Path) -> None:
    cron = one(rendered, "CronJob", "lgw-batch-nightly")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy needs it; a retry is a new pod that resumes
    (c,) = pod["containers"]
    assert c["args"][:2] == ["batch", "run"] and c["args"][c["args"].index("--config") + 1] == "/etc/lgw/gateway.yaml"
    # exit 1 (records rejected: the run is done) and 2 (configuration) are not retried
    rules = cron["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    fail = next(r for r in rules if r["action"] == "FailJob")["onExitCodes"]
    assert {1, 2} <= set(fail["values"]) and 3 not in fail["values"] and fail["containerName"] == c["name"]
    mount = _drop_mount(c, pod, rendered)
    cfg = load_pod_config(rendered, c, tmp_path)
    pipeline = c["args"][2]
    source = cfg.pipelines[pipeline].source
    assert isinstance(source, DropFolderConfig)
    for kind, folder in source.folders(cfg.base_dir).items():
        assert Path(folder).is_relative_to(mount), f"{pipeline}: {kind} {folder} is not on the volume at {mount}"
    for obj in of_kind(rendered, "Deployment"):  # every `lgw run` replica sees the same folders
        (c,) = obj["spec"]["template"]["spec"]["containers"]
        if c["args"][0] == "run":
            assert _drop_mount(c, obj["spec"]["template"]["spec"], rendered) == mount
            assert cron["spec"].get("suspend") is True, "lgw run replicas and the nightly batch: one or the other"


def test_every_deployment_has_a_pdb_that_selects_its_pods(rendered: list[Obj]) -> None:
    pdbs = of_kind(rendered, "PodDisruptionBudget")
    for deployment in of_kind(rendered, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        matching = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, f"{deployment['metadata']['name']}: {len(matching)} PDBs select its pods"
        pdb = matching[0]["spec"]
        # maxUnavailable 1: one at a time, and a single replica can still be drained
        assert pdb.get("maxUnavailable") == 1 and "minAvailable" not in pdb
    for pdb in pdbs:  # and no PDB selects pods of something else too
        selected = [d for d in of_kind(rendered, "Deployment")
                    if pdb["spec"]["selector"]["matchLabels"].items()
                    <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, pdb["metadata"]["name"]


def load_pod_config(objects: list[Obj], container: Obj, tmp_path: Path) -> Any:
    """The ConfigMap's gateway.yaml loaded by gateway.config.load_config with the container's
    environment: the image's /opt/lgw is this checkout, and each secret file the container
    names (NAME_FILE) is the rendered Secret's key when there is one (dev), else a stand-in."""
    secret = [s for s in of_kind(objects, "Secret") if s["metadata"]["name"] == "lgw-credentials"]
    values = secret[0]["stringData"] if secret else {}
    config = tmp_path / "etc-lgw" / "gateway.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(gateway_yaml_text(objects).replace("/opt/lgw/", f"{ROOT}/"), encoding="utf-8")
    env = env_of(container, objects)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    secret_volumes = {v["name"] for pod in [p for o in objects for p in pod_specs(o)] for v in pod["volumes"]
                      if v.get("secret", {}).get("secretName") == "lgw-credentials"}
    patched = dict(os.environ)
    for key in [k for k in patched if k.startswith("LGW_")]:
        del patched[key]
    for key, value in env.items():
        if value.startswith(f"{SECRET_DIR}/") or key == "LGW_CONSOLE_TOKENS_FILE":
            if key == "LGW_CONSOLE_TOKENS_FILE":
                mount = mounts[value]
                assert mount["name"] in secret_volumes and mount.get("subPath"), value
                item = mount["subPath"]
            else:
                assert mounts[SECRET_DIR]["name"] in secret_volumes, key
                item = value.removeprefix(f"{SECRET_DIR}/")
            stand_in = tmp_path / "secrets" / item
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.unlink(missing_ok=True)
            stand_in.write_text(values.get(item, "tokens: []\n" if item.endswith(".yaml")
                                           else "stand-in-secret-0123456789abcdef"))
            stand_in.chmod(0o440)
            value = str(stand_in)
        patched[key] = value
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(patched)
    try:
        return load_config(config)
    finally:
        os.environ.clear()
        os.environ.update(old)


def gateway_yaml_text(objects: list[Obj]) -> str:
    return str(one(objects, "ConfigMap", "lgw-config")["data"]["gateway.yaml"])


def test_configmap_gateway_yaml_loads_with_each_pods_environment(rendered: list[Obj], tmp_path: Path) -> None:
    env_map = one(rendered, "ConfigMap", "lgw-env")["data"]
    serve = one(rendered, "Deployment", "lgw-serve")["spec"]["template"]["spec"]["containers"][0]
    cfg = load_pod_config(rendered, serve, tmp_path)
    assert cfg.kafka.bootstrap_servers == env_map["LGW_KAFKA_BOOTSTRAP"]
    assert cfg.models["fraud"].endpoint.url == env_map["LGW_MODEL_FRAUD_URL"]
    model_service = one(rendered, "Service", "lgw-model")
    assert env_map["LGW_MODEL_FRAUD_URL"] == f"http://lgw-model:{model_service['spec']['ports'][0]['port']}"
    # LGW_STATE_URL_FILE replaced the SQLite default: the Secret's URL (dev) or the stand-in
    assert cfg.state.url != "sqlite:////var/lib/lgw/lgw-state.db"
    secrets = of_kind(rendered, "Secret")
    if secrets:
        assert cfg.state.url.startswith("postgresql+psycopg://")
        # every file a container names is a key of the Secret
        keys = set(secrets[0]["stringData"])
        for obj in workloads(rendered):
            for c in containers(obj):
                for m in c.get("volumeMounts", []):
                    if m.get("subPath") and m["name"] == "credentials":
                        assert m["subPath"] in keys
                for key, value in env_of(c, rendered).items():
                    if value.startswith(f"{SECRET_DIR}/"):
                        assert value.removeprefix(f"{SECRET_DIR}/") in keys, key
    doc = asyncapi_document(cfg)  # the real-time app builds from it
    assert "card_txn_stream:input" in doc
    for obj in workloads(rendered):
        for c in containers(obj):
            if "--config" in c.get("args", []):
                assert c["args"][c["args"].index("--config") + 1] == "/etc/lgw/gateway.yaml"
                assert load_pod_config(rendered, c, tmp_path / obj["metadata"]["name"]).pipelines


def test_no_secret_is_committed_outside_the_dev_overlay() -> None:
    for overlay in OVERLAYS:
        secrets = of_kind(build(K8S / "overlays" / overlay), "Secret")
        if overlay == "dev":
            assert [s["metadata"]["name"] for s in secrets] == ["lgw-credentials"]
            assert all("dev" in str(v) for k, v in secrets[0]["stringData"].items() if k != "console-tokens.yaml")
        else:
            assert secrets == [], overlay
    # production makes the Secret by the README's command, with every key the pods read
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    command = re.search(r"kubectl -n lgw create secret generic lgw-credentials((?:[^\n]*\\\n)*[^\n]*)", readme)
    assert command is not None
    documented = set(re.findall(r"--from-file=([\w.-]+)=", command.group(1)))
    assert documented == secret_keys_read(build(K8S / "overlays" / "prod"))


def secret_keys_read(objects: list[Obj]) -> set[str]:
    """The keys of lgw-credentials that the rendered pods read (files and subPath mounts)."""
    keys = set()
    for obj in workloads(objects):
        for c in containers(obj):
            for m in c.get("volumeMounts", []):
                if m["name"] == "credentials" and m.get("subPath"):
                    keys.add(m["subPath"])
            for e in c.get("env", []):
                if str(e.get("value", "")).startswith(f"{SECRET_DIR}/"):
                    keys.add(e["value"].removeprefix(f"{SECRET_DIR}/"))
    return keys


def test_the_tokens_file_is_a_subpath_mount_because_secret_files_are_links(tmp_path: Path) -> None:
    # the kubelet's layout of a Secret volume: NAME -> ..data/NAME, ..data -> ..<timestamp>
    volume = tmp_path / "secret-volume"
    (volume / "..2026_12_04").mkdir(parents=True)
    (volume / "..2026_12_04" / "console-tokens.yaml").write_text("tokens: []\n")
    (volume / "..data").symlink_to("..2026_12_04")
    (volume / "console-tokens.yaml").symlink_to("..data/console-tokens.yaml")
    with pytest.raises(UnsafePath, match="symbolic link"):
        read_tokens_file(volume / "console-tokens.yaml")
    # a subPath mount is the file itself (a bind mount), which the gateway reads
    assert read_tokens_file(volume / "..2026_12_04" / "console-tokens.yaml") == []
    for overlay in OVERLAYS:
        for obj in workloads(build(K8S / "overlays" / overlay)):
            for c in containers(obj):
                for e in c.get("env", []):
                    if e["name"] == "LGW_CONSOLE_TOKENS_FILE":
                        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == e["value"]]
                        assert mount["subPath"] == "console-tokens.yaml"


def test_images_are_pinned_to_the_release(rendered: list[Obj]) -> None:
    images = {c["image"] for obj in workloads(rendered) for c in containers(obj)}
    assert len(images) == 2
    for image in images:
        name, tag, digest = split_image(image)
        assert tag not in (None, "latest") or digest, f"{image} is not pinned"
        assert name.rpartition("/")[2] in ("lgw-gateway", "lgw-modelserver")
        assert tag == VERSION, f"{image}: expected the project's version {VERSION}"
        assert "/" in name, f"{image}: the overlay must name the registry it pulls from"


def test_loader_refuses_what_it_does_not_render(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
         "resources": [str(K8S / "base")], "commonLabels": {"a": "b"}}))
    with pytest.raises(KustomizeError, match="commonLabels"):
        build(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
         "resources": [str(K8S / "base")],
         "patches": [{"target": {"kind": "Deployment", "name": "lgw-serve"},
                      "patch": "spec:\n  replicas: 3\n"}]}))
    with pytest.raises(KustomizeError, match="strategic-merge"):
        build(tmp_path)
    doc: dict[str, Any] = {"a": {"b": [1, 2]}}
    json_patch(doc, {"op": "add", "path": "/a/b/-", "value": 3})
    json_patch(doc, {"op": "replace", "path": "/a/b/0", "value": 0})
    json_patch(doc, {"op": "add", "path": "/a/c~1d", "value": "x"})
    json_patch(doc, {"op": "remove", "path": "/a/b/1"})
    assert doc == {"a": {"b": [0, 3], "c/d": "x"}}
    with pytest.raises(KustomizeError):
        json_patch(doc, {"op": "replace", "path": "/a/missing", "value": 1})


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def test_the_cronjob_command_runs_as_the_pod_and_writes_only_its_volumes(tmp_path: Path, lgw_cmd: list[str]) -> None:
    """The prod CronJob's container, run as a real `lgw` process: its args, its environment
    (lgw-env, the *_FILE variables on secret files), the ConfigMap's gateway.yaml in a
    folder of its own, the PVC, data dir and /tmp as folders here, PostgreSQL as the state
    store. The model service is not there (nothing listens at its URL): the fallback rules
    score. Afterwards only the volumes hold new files; nothing beside gateway.yaml."""
    objects = build(K8S / "overlays" / "prod")
    cron = one(objects, "CronJob", "lgw-batch-nightly")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mounts = {m["mountPath"]: tmp_path / "volumes" / m["name"] for m in c["volumeMounts"]}
    drop_at = _drop_mount(c, pod, objects)
    home, cwd = tmp_path / "home", tmp_path / "volumes" / "data"  # the image's WORKDIR is its data dir
    for folder in (*mounts.values(), home):
        folder.mkdir(parents=True, exist_ok=True)
    config = mounts["/etc/lgw"] / "gateway.yaml"
    config.write_text(gateway_yaml_text(objects).replace("/opt/lgw/", f"{ROOT}/").replace(
        f"{drop_at}/", f"{mounts[drop_at]}/"), encoding="utf-8")
    dropped = mounts[drop_at] / "cardtxn" / "inbox" / "CARDTXN01.DAT"
    generate_card_file(dropped, records=3_000, seed=11)
    # complete once nothing changed it for stable_for_s (by its ctime, which cannot be back-dated)
    stable_for_s = gateway_yaml(objects)["pipelines"]["card_txn"]["source"]["stable_for_s"]
    time.sleep(max(0.0, dropped.stat().st_ctime + stable_for_s + 1.0 - time.time()))
    with postgres_schema("k8s_cron") as state_url:
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        for key, value in env_of(c, objects).items():
            for mount_path, folder in sorted(mounts.items(), key=lambda m: -len(m[0])):
                if value == mount_path or value.startswith(f"{mount_path}/"):
                    value = str(folder) + value.removeprefix(mount_path)
                    break
            env[key] = value
        env["TMPDIR"] = str(mounts["/tmp"])
        env["LGW_MODEL_FRAUD_URL"] = "http://127.0.0.1:9"  # no model server: refused at once, the rules score
        secrets = mounts[SECRET_DIR]
        (secrets / "state-url").write_text(state_url)
        (secrets / "pii-key").write_text("stand-in-pii-key-0123456789abcdef")
        before = {name: files_under(folder) for name, folder in mounts.items()}
        args = [a.replace("/etc/lgw/gateway.yaml", str(config)) for a in c["args"]]
        done = subprocess.run([*lgw_cmd, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.splitlines()[0])
    assert summary["records_out"] == 3_000
    outbox = files_under(mounts[drop_at] / "cardtxn" / "outbox")
    assert "CARDTXN01.DAT.manifest.json" in outbox
    assert files_under(mounts[drop_at] / "cardtxn" / "inbox") == set()
    # written: the drop volume (outbox, done) and nothing on the read-only ones
    for mount_path in ("/etc/lgw", SECRET_DIR):
        assert files_under(mounts[mount_path]) == before[mount_path], f"{mount_path} was written"
    assert files_under(home) == set(), "HOME is on the read-only root filesystem"


def kubelet_secret_volume(folder: Path, files: dict[str, str]) -> Path:
    """A Secret volume as the kubelet lays it out: the files in a timestamped folder,
    `..data` a link to it, and each key a link through `..data`; the files mode 0440
    (defaultMode). Returns the timestamped folder (what a subPath mount exposes)."""
    real = folder / "..2026_12_04_20_00_00.000000001"
    real.mkdir(parents=True)
    for name, text in files.items():
        (real / name).write_text(text)
        (real / name).chmod(0o440)
        (folder / name).symlink_to(f"..data/{name}")
    (folder / "..data").symlink_to(real.name)
    return real


@pytest.mark.integration
def test_the_serve_container_runs_probes_open_and_metrics_behind_the_viewer_token(
        tmp_path: Path, lgw_cmd: list[str], lgw_processes: list[LgwProcess], kafka_broker: TansuBroker,
        kserve_server: ModelServerProcess) -> None:
    """The dev overlay's lgw-serve container as a real `lgw serve`: its args and environment,
    its credentials from a Secret volume in the kubelet's layout (the *_FILE variables read
    through its links; the tokens file the subPath mount's regular file), the ConfigMap's
    gateway.yaml. Changed for this machine only: the addresses (Tansu, the model server
    process, a free ops port on loopback), the topics (fresh ones) and the Kafka client
    settings Tansu needs. With the console on, the probes' endpoints answer without a
    token and /metrics with the viewer token only."""
    objects = build(K8S / "overlays" / "dev")
    (c,) = one(objects, "Deployment", "lgw-serve")["spec"]["template"]["spec"]["containers"]
    topics = Topics.create(kafka_broker, "k8s")
    doc = gateway_yaml(objects)
    stream = doc["pipelines"]["card_txn_stream"]
    stream["contract"] = stream["contract"].replace("/opt/lgw/", f"{ROOT}/")
    stream["source"].update(topics.source())
    doc["pipelines"] = {"card_txn_stream": stream}  # the drop pipeline is `lgw run`'s and the CronJob's
    doc["kafka"].update(enable_idempotence=False, session_timeout_ms=3000, heartbeat_interval_ms=500,
                        graceful_timeout_s=15)  # Tansu: no idempotent producer, slow JoinGroup otherwise
    config = tmp_path / "etc-lgw" / "gateway.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")

    tokens = tmp_path / "tokens.yaml"
    made = subprocess.run([*lgw_cmd, "console", "token", "new", "--name", "prometheus", "--role", "viewer",
                           "--tokens-file", str(tokens)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    viewer = made.stdout.strip().splitlines()[-1]
    with postgres_schema("k8s_serve") as state_url:
        dev_secret = one(objects, "Secret", "lgw-credentials")["stringData"]
        files = {**dev_secret, "state-url": state_url, "console-tokens.yaml": tokens.read_text()}
        volume = tmp_path / "secret-volume"
        subpath = kubelet_secret_volume(volume, files)
        env = env_of(c, objects)
        for key, value in list(env.items()):
            if value.startswith(f"{SECRET_DIR}/"):
                env[key] = str(volume) + value.removeprefix(SECRET_DIR)  # through the kubelet's links
        env["LGW_CONSOLE_TOKENS_FILE"] = str(subpath / "console-tokens.yaml")
        env["LGW_DATA_DIR"] = str(tmp_path / "data")
        env.update(LGW_KAFKA_BOOTSTRAP=kafka_broker.bootstrap, LGW_MODEL_FRAUD_URL=kserve_server.base_url,
                   LGW_OPS_ADDRESS="127.0.0.1:0", TMPDIR=str(tmp_path))
        gw = LgwProcess(lgw_cmd, [a.replace("/etc/lgw/gateway.yaml", str(config)) for a in c["args"]], tmp_path,
                        env=env)
        lgw_processes.append(gw)
        live = c["livenessProbe"]["httpGet"]["path"]
        ready = c["readinessProbe"]["httpGet"]["path"]
        assert gw.get(live)[0] == 200
        gw.wait_for(lambda: gw.get(ready)[0] == 200, f"{ready} 200 without a token")
        assert gw.get_json(ready)[1]["checks"] == {"kafka": "ok", "state_store": "ok", "model:fraud": "ok"}
        assert gw.get("/metrics")[0] == 401  # the console is on: /metrics needs a token
        request = urllib.request.Request(gw.url + "/metrics", headers={"Authorization": f"Bearer {viewer}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and b"lgw_" in response.read()
        assert gw.stop() == 0
