"""The part of `kustomize build` that deploy/k8s uses, in Python, for the tests.

No kustomize binary here: Debian has no package for it, PyPI none that bundles it, and the
machine fetches nothing else. This renders a kustomization the way kustomize does for the
fields deploy/k8s uses, and refuses every other field (so a kustomization that starts
using one fails the tests instead of being rendered wrong):

- `resources` (files and kustomization folders), `components` (kind Component: their
  resources and patches, applied after the resources as kustomize does);
- `patches` with a `target` (kind and name) and an inline JSON 6902 `patch` (add, remove,
  replace, test); strategic-merge patches are refused;
- `namespace` (set on every namespaced object), `images` (newName, newTag, digest on every
  container and init container whose image name matches), `replicas` (Deployments).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "components", "patches", "namespace", "images", "replicas"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass"}

Obj = dict[str, Any]


class KustomizeError(ValueError):
    pass


def build(folder: Path) -> list[Obj]:
    """The objects `kustomize build folder` would print, in order."""
    return _build(folder, "Kustomization")


def _kustomization(folder: Path, kind: str) -> Obj:
    path = folder / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{folder}: no kustomization.yaml")
    k = yaml.safe_load(path.read_text(encoding="utf-8"))
    if k.get("kind", "Kustomization") != kind:
        raise KustomizeError(f"{path}: expected kind {kind}, found {k.get('kind')}")
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{path}: fields this loader does not render: {sorted(unknown)}")
    return k


def _build(folder: Path, kind: str, objects: list[Obj] | None = None) -> list[Obj]:
    k = _kustomization(folder, kind)
    out = objects if objects is not None else []
    for entry in k.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            out.extend(build(path))
        else:
            out.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    for entry in k.get("components", []):
        _build((folder / entry).resolve(), "Component", out)
    for patch in k.get("patches", []):
        _patch(out, patch, folder)
    for r in k.get("replicas", []):
        target = _find(out, {"kind": "Deployment", "name": r["name"]}, folder)
        target["spec"]["replicas"] = int(r["count"])
    for image in k.get("images", []):
        _set_image(out, image)
    if "namespace" in k:
        for obj in out:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
    names = [(o["kind"], o["metadata"]["name"]) for o in out]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise KustomizeError(f"{folder}: objects defined twice: {sorted(duplicates)}")
    return out


def _find(objects: list[Obj], target: Obj, folder: Path) -> Obj:
    if set(target) - {"kind", "name"}:
        raise KustomizeError(f"{folder}: a patch target by {sorted(target)}: only kind and name are rendered")
    found = [o for o in objects if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
    if len(found) != 1:
        raise KustomizeError(f"{folder}: patch target {target} matches {len(found)} objects")
    return found[0]


def _patch(objects: list[Obj], patch: Obj, folder: Path) -> None:
    if set(patch) != {"target", "patch"}:
        raise KustomizeError(f"{folder}: a patch needs exactly `target` and an inline JSON 6902 `patch`")
    ops = yaml.safe_load(patch["patch"])
    if not isinstance(ops, list):
        raise KustomizeError(f"{folder}: strategic-merge patches are not rendered here: use JSON 6902")
    obj = _find(objects, patch["target"], folder)
    for op in ops:
        json_patch(obj, op)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"a JSON pointer starts with /: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Obj, op: Obj) -> None:
    """One RFC 6902 operation (add, remove, replace, test) on `doc`, in place."""
    *parents, last = _pointer(op["path"])
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if kind == "add":
            node.insert(index, copy.deepcopy(op["value"]))
        elif kind == "remove":
            del node[index]
        elif kind == "replace":
            node[index] = copy.deepcopy(op["value"])
        elif kind == "test":
            if node[index] != op["value"]:
                raise KustomizeError(f"test failed at {op['path']}")
        else:
            raise KustomizeError(f"JSON patch op {kind!r} is not rendered here")
        return
    if kind in ("remove", "replace", "test") and last not in node:
        raise KustomizeError(f"{kind} {op['path']}: no such member")
    if kind in ("add", "replace"):
        node[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del node[last]
    elif kind == "test":
        if node[last] != op["value"]:
            raise KustomizeError(f"test failed at {op['path']}")
    else:
        raise KustomizeError(f"JSON patch op {kind!r} is not rendered here")


def pod_specs(obj: Obj) -> list[Obj]:
    """The pod templates' specs of a workload (Deployment, StatefulSet, Job, CronJob...)."""
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return [spec["template"]["spec"]]
    return []


def containers(obj: Obj) -> list[Obj]:
    return [c for pod in pod_specs(obj) for c in (*pod.get("initContainers", []), *pod["containers"])]


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """name, tag, digest of an image reference (a registry's port is not a tag)."""
    rest, _, digest = image.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1:], digest or None
    return rest, None, digest or None


def _set_image(objects: list[Obj], image: Obj) -> None:
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"images: fields this loader does not render: {sorted(unknown)}")
    for obj in objects:
        for c in containers(obj):
            name, tag, digest = split_image(c["image"])
            if name != image["name"]:
                continue
            name = image.get("newName", name)
            tag = str(image["newTag"]) if "newTag" in image else tag
            if "digest" in image:  # kustomize drops the tag for the digest
                tag, digest = None, image["digest"]
            c["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
