"""Offline validation of generated manifests.

Two checks, both strict (an unknown field is an error):

1. ``kubernetes-validate`` in strict mode against the official JSON schema of the oldest
   Kubernetes version the installed package ships that is >= 1.20 (recent releases ship
   1.25+ only; their schemas are a superset of 1.20 for the kinds we generate);
2. a field-level check against a snapshot of the **1.20** OpenAPI schema
   (``executor/schema/k8s-1.20.json``, extracted from a real v1.20 kube-apiserver by
   :func:`snapshot_from_openapi`), which rejects any field added after 1.20 (e.g.
   ``spec.template.spec.os``, ``grpc`` probes) that the newer schema would accept.

The integration tests also server-side dry-run every manifest on a 1.20 API server, which
catches what schemas cannot (selector/label mismatch, requests > limits, bad names).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

TARGET_VERSION = "1.20.0"
#: the one Kubernetes version every validation message names (whatever schema file backs a check)
K8S_VERSION = "1.20"
SNAPSHOT = Path(__file__).resolve().parent / "schema" / f"k8s-{K8S_VERSION}.json"

# kinds the snapshot covers: ours plus those of executor/deploy
SNAPSHOT_KINDS = {
    ("apps/v1", "Deployment"): "io.k8s.api.apps.v1.Deployment",
    ("v1", "Service"): "io.k8s.api.core.v1.Service",
    ("v1", "ConfigMap"): "io.k8s.api.core.v1.ConfigMap",
    ("v1", "Namespace"): "io.k8s.api.core.v1.Namespace",
    ("v1", "ServiceAccount"): "io.k8s.api.core.v1.ServiceAccount",
    ("rbac.authorization.k8s.io/v1", "Role"): "io.k8s.api.rbac.v1.Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "io.k8s.api.rbac.v1.RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "io.k8s.api.rbac.v1.ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "io.k8s.api.rbac.v1.ClusterRoleBinding",
    ("networking.k8s.io/v1", "NetworkPolicy"): "io.k8s.api.networking.v1.NetworkPolicy",  # the gateway's
}

_DROP_KEYS = {
    "description",
    "x-kubernetes-group-version-kind",
    "x-kubernetes-patch-merge-key",
    "x-kubernetes-patch-strategy",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-unions",
}


class ManifestInvalid(ValueError):
    """A manifest failed validation; ``str()`` is one line naming the object and the field."""


def schema_version() -> str:
    """The kubernetes-validate schema version used for TARGET_VERSION."""
    from kubernetes_validate import utils

    versions = sorted({v for v in utils.all_versions()}, key=utils.major_minor)
    target = utils.major_minor(TARGET_VERSION)
    older = [v for v in versions if utils.major_minor(v) <= target]
    return older[-1] if older else versions[0]


def _where(obj: dict) -> str:
    md = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{md.get('name', '?')}"


def validate_strict(obj: dict) -> None:
    """kubernetes-validate, strict mode (unknown fields are errors)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, schema_version(), strict=True)
    except kubernetes_validate.ValidationError as e:
        err = e.args[0] if e.args else e
        path = _path(getattr(err, "absolute_path", [])) or "<root>"
        msg = getattr(err, "message", str(err))
        raise ManifestInvalid(f"{_where(obj)}: {path}: {msg} (Kubernetes {K8S_VERSION} schema)") from None


def _path(parts: Iterable[Any]) -> str:
    """``spec.containers[0].name``: the same path notation as the field check."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# ---------------------------------------------------------------- 1.20 field snapshot


def snapshot_from_openapi(openapi: dict, roots: Iterable[str] | None = None) -> dict:
    """The definitions reachable from ``roots`` in an OpenAPI v2 document, without prose."""
    defs = openapi["definitions"]
    roots = list(roots or SNAPSHOT_KINDS.values())
    seen: dict[str, Any] = {}

    def refs(x: Any) -> None:
        if isinstance(x, dict):
            for key, v in x.items():
                if key == "$ref":
                    walk(v.split("/")[-1])
                else:
                    refs(v)
        elif isinstance(x, list):
            for v in x:
                refs(v)

    def walk(name: str) -> None:
        if name in seen:
            return
        seen[name] = defs[name]
        refs(defs[name])

    for r in roots:
        walk(r)

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {key: strip(v) for key, v in x.items() if key not in _DROP_KEYS}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return {"definitions": {name: strip(seen[name]) for name in sorted(seen)}}


@lru_cache(maxsize=1)
def _snapshot() -> dict:
    return json.loads(SNAPSHOT.read_text())["definitions"]


def _check(value: Any, schema: dict, path: str, defs: dict, errors: list[str]) -> None:
    if "$ref" in schema:
        schema = defs[schema["$ref"].split("/")[-1]]
    t = schema.get("type")
    fmt = schema.get("format")
    if fmt == "int-or-string":
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer or a string")
        return
    if t == "object" or "properties" in schema:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object")
            return
        props = schema.get("properties")
        if props is None:
            add = schema.get("additionalProperties")
            if isinstance(add, dict):
                for key, v in value.items():
                    _check(v, add, f"{path}.{key}", defs, errors)
            return
        for req in schema.get("required", []):
            if req not in value:
                errors.append(f"{path}.{req}: required field missing")
        for key, v in value.items():
            if key not in props:
                errors.append(f"{path}.{key}: field not in the Kubernetes {K8S_VERSION} schema")
                continue
            _check(v, props[key], f"{path}.{key}", defs, errors)
        return
    if t == "array":
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return
        for i, v in enumerate(value):
            _check(v, schema.get("items", {}), f"{path}[{i}]", defs, errors)
        return
    if t == "string":
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string")
    elif t == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer")
    elif t == "number":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            errors.append(f"{path}: expected a number")
    elif t == "boolean":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected a boolean")


def validate_fields_1_20(obj: dict) -> None:
    """Every field of ``obj`` exists in the Kubernetes 1.20 schema with the right type."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    root = SNAPSHOT_KINDS.get(key)
    if root is None:
        raise ManifestInvalid(f"{_where(obj)}: {key[0]}/{key[1]} is not a kind synergai generates")
    errors: list[str] = []
    defs = _snapshot()
    _check(obj, defs[root], "", defs, errors)
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ManifestInvalid(f"{_where(obj)}: {errors[0].lstrip('.')}{more}")


def have_kubernetes_validate() -> bool:
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        return False
    return True


def validate(obj: dict, *, require_official: bool = False) -> None:
    """Both offline checks; raises :class:`ManifestInvalid`.

    The official-schema check needs the ``kubernetes-validate`` package; without it only the
    1.20 field check runs (unless ``require_official``).
    """
    validate_fields_1_20(obj)
    if require_official or have_kubernetes_validate():
        validate_strict(obj)


def validate_all(objs: Iterable[dict]) -> int:
    n = 0
    for o in objs:
        validate(o)
        n += 1
    return n
