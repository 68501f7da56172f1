"""Cluster inventory: node pools of identical nodes, edge or cloud."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InputError, pydantic_error
from .profiles import Architecture

Tier = Literal["edge", "cloud"]


class NodePool(BaseModel):
    """A set of identical nodes; the planner sizes replicas per pool."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Pool name, unique in the cluster.")
    device: str = Field(min_length=1, description="Device of every node; must match `device` in the profiles.")
    architecture: Architecture = Field(description="`kubernetes.io/arch` of the nodes.")
    tier: Tier = Field(description="`edge` (near clients) or `cloud`.")
    nodes: int = Field(ge=0, description="Number of nodes in the pool (count).")
    cpu: float = Field(gt=0, description="Allocatable CPU per node, in cores.")
    memory_mb: float = Field(gt=0, description="Allocatable memory per node, in MiB.")
    accelerators: int = Field(0, ge=0, description="Accelerator devices per node (count).")
    accelerator_resource: str = Field(
        "nvidia.com/gpu", description="Kubernetes extended resource name of the accelerator."
    )
    rtt_ms: float = Field(0.0, ge=0, description="Network round-trip time from clients to this pool, in milliseconds.")
    idle_power_w: float = Field(
        0.0, ge=0, description="Power drawn by one node while idle, in watts (for energy accounting)."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra Kubernetes node labels that select this pool."
    )

    @field_validator("device")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.strip().lower()

    def capacity(self) -> dict[str, float]:
        return {"cpu": self.cpu, "memory_mb": self.memory_mb, "accelerators": float(self.accelerators)}


class ClusterSpec(BaseModel):
    """Node pools of a heterogeneous edge-to-cloud cluster."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("cluster", description="Cluster name, for reports.")
    pools: list[NodePool] = Field(min_length=1, description="Node pools.")

    @model_validator(mode="after")
    def _unique(self) -> ClusterSpec:
        seen = set()
        for i, p in enumerate(self.pools):
            if p.name in seen:
                raise ValueError(f"duplicate pool name {p.name!r} (pools.{i}.name)")
            seen.add(p.name)
        return self

    def pool(self, name: str) -> NodePool:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)

    def without(self, pool_name: str) -> ClusterSpec:
        return self.model_copy(update={"pools": [p for p in self.pools if p.name != pool_name]})

    @classmethod
    def load(cls, path: str | Path) -> ClusterSpec:
        data = load_structured(path)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise pydantic_error(e, file=str(path)) from None


def load_structured(path: str | Path) -> object:
    """Read YAML or JSON; syntax errors become one-line InputErrors with the line number."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise InputError("file not found", file=name)
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise InputError("file is empty", file=name)
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"JSON syntax error: {e.msg}", file=name, row=e.lineno) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"YAML syntax error: {problem}", file=name, row=(mark.line + 1) if mark else None) from None
