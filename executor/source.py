"""Where the daemon's desired state comes from: ``file:PATH`` or ``configmap:[NS/]NAME``.

A source holds either a **plan** (the JSON ``synergai plan`` writes) or a **workload**
(a WorkloadSpec, YAML or JSON): then the daemon plans itself, for the cluster described by
``--cluster`` or, without it, by the Node labels (:mod:`executor.inventory`).

ConfigMap keys, first found wins: ``plan.json``, then ``workload.yaml`` / ``workload.yml`` /
``workload.json``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import yaml
from pydantic import ValidationError

from synergai.models import InputError, Plan, WorkloadSpec
from synergai.models.errors import pydantic_error

from .names import is_dns1123_label, is_dns1123_subdomain

PLAN_KEY = "plan.json"
WORKLOAD_KEYS = ("workload.yaml", "workload.yml", "workload.json")


@dataclass
class SourceDoc:
    origin: str  # "file:/x/plan.json" or "configmap:ns/name#plan.json"
    text: str
    digest: str
    is_json_hint: bool = False


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class FileSource:
    kind = "file"

    def __init__(self, path: str):
        self.path = Path(path)

    def __str__(self) -> str:
        return f"file:{self.path}"

    def read(self, kube=None) -> SourceDoc:
        if not self.path.exists():
            raise InputError("file not found", file=str(self.path))
        text = self.path.read_text(encoding="utf-8", errors="replace")
        return SourceDoc(str(self), text, _digest(text), self.path.suffix.lower() == ".json")


class ConfigMapSource:
    kind = "configmap"

    def __init__(self, namespace: Optional[str], name: str):
        self.namespace = namespace
        self.name = name

    def __str__(self) -> str:
        return f"configmap:{self.namespace}/{self.name}"

    def read(self, kube) -> SourceDoc:
        cm = kube.get("v1", "ConfigMap", self.name, self.namespace)
        if cm is None:
            raise InputError(f"ConfigMap {self.namespace}/{self.name} not found", file=str(self))
        data = cm.get("data") or {}
        for key in (PLAN_KEY, *WORKLOAD_KEYS):
            if key in data:
                text = data[key]
                return SourceDoc(f"{self}#{key}", text, _digest(text), key.endswith(".json"))
        raise InputError(
            f"ConfigMap {self.namespace}/{self.name} has none of the keys {', '.join((PLAN_KEY, *WORKLOAD_KEYS))}",
            file=str(self),
        )


Source = Union[FileSource, ConfigMapSource]


def parse_source(spec: str, default_namespace: Optional[str] = None) -> Source:
    """``file:PATH`` | ``configmap:NS/NAME`` | ``configmap:NAME`` (daemon namespace)."""
    scheme, sep, rest = (spec or "").partition(":")
    if not sep or not rest:
        raise InputError(f"plan source {spec!r} must be file:PATH or configmap:NS/NAME", field="--plan-source")
    if scheme == "file":
        return FileSource(rest)
    if scheme == "configmap":
        ns, _, name = rest.rpartition("/")
        ns = ns or default_namespace
        if not name or not is_dns1123_subdomain(name) or (ns and not is_dns1123_label(ns)):
            raise InputError(f"plan source {spec!r}: not a valid ConfigMap namespace/name", field="--plan-source")
        return ConfigMapSource(ns, name)
    raise InputError(f"plan source {spec!r}: unknown scheme {scheme!r}; use file: or configmap:", field="--plan-source")


def parse_document(doc: SourceDoc) -> Union[Plan, WorkloadSpec]:
    """A plan (has ``schema_version``) or a workload (has ``models``); InputError otherwise."""
    name = doc.origin
    if not doc.text.strip():
        raise InputError("empty document", file=name)
    try:
        data = json.loads(doc.text)
    except json.JSONDecodeError as e:
        if doc.is_json_hint:
            raise InputError(f"not valid JSON: {e.msg}", file=name, row=e.lineno) from None
        try:
            data = yaml.safe_load(doc.text)
        except yaml.YAMLError as ye:
            mark = getattr(ye, "problem_mark", None)
            raise InputError(
                f"neither JSON nor YAML: {getattr(ye, 'problem', None) or ye}",
                file=name,
                row=(mark.line + 1) if mark else None,
            ) from None
    if not isinstance(data, dict):
        raise InputError("expected a plan (JSON object) or a workload (mapping with `models`)", file=name)
    if "schema_version" in data or "assignments" in data:
        return Plan.from_data(data, source=name)
    if "models" in data:
        try:
            return WorkloadSpec.model_validate(data)
        except ValidationError as e:
            raise pydantic_error(e, file=name) from None
    raise InputError("expected a plan (with schema_version) or a workload (with models)", file=name)


def load_plan_file(path: str | Path) -> Plan:
    """``Plan.load`` (kept as the one place the CLI reads plans)."""
    return Plan.load(path)
