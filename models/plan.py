"""The planner's output: a versioned, diffable JSON document.

A ``Plan`` is self-contained: it carries the pools, demands and chosen
configurations (with their latency figures), so the online stage, the executor
and the simulator need nothing else.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .cluster import NodePool
from .errors import InputError, pydantic_error
from .workload import ModelDemand

SCHEMA_VERSION: Literal["synergai.plan/v2"] = "synergai.plan/v2"
#: Versions this code reads: v1 plans (no server groups) are read as one dedicated group per assignment.
READABLE_VERSIONS = ("synergai.plan/v1", "synergai.plan/v2")

CandidateStatus = Literal["chosen", "misses_deadline", "does_not_fit", "dominated", "not_chosen", "power_mode_conflict"]


class ConfigChoice(BaseModel):
    """A configuration (one profile record) as the plan uses it."""

    model_config = ConfigDict(extra="forbid")

    config_id: str = Field(description="`engine/precision/b<batch>/t<threads>/<power_mode>`.")
    engine: str = Field(description="Inference engine.")
    precision: str = Field(description="Numeric precision.")
    batch_size: int = Field(ge=1, description="Batch size (count).")
    threads: Optional[int] = Field(None, description="Engine threads (count), empty when unknown.")
    power_mode: str = Field(description="Board power mode.")
    accelerator: str = Field(description="Accelerator kind (`none`, `gpu`, ...).")
    latency_p50_ms: float = Field(description="Median service latency of one call, ms.")
    latency_p90_ms: float = Field(description="p90 service latency of one call, ms.")
    latency_p99_ms: float = Field(description="p99 service latency of one call, ms.")
    throughput_rps: float = Field(description="Throughput of one replica, requests/s.")
    power_w: Optional[float] = Field(
        None, description="Power while serving, W (measured, or imputed when `power_estimated`)."
    )
    power_estimated: bool = Field(
        False, description="True when `power_w` is imputed (no measurement for this configuration)."
    )
    cpu_cores: float = Field(description="CPU request per replica, cores.")
    memory_request_mb: float = Field(description="Memory request per replica, MiB.")
    accelerators: int = Field(description="Accelerators per replica, count.")
    source: str = Field("", description="Provenance of the profile.")


class Assignment(BaseModel):
    """What runs for one model on one server group of a pool (a dedicated group hosts only this model)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model name.")
    pool: str = Field(description="Node pool name.")
    server: str = Field(
        "",
        description="Name of the server group (see `Plan.servers`) that hosts this model; "
        "every server of the group loads it.",
    )
    config: ConfigChoice = Field(description="Chosen configuration.")
    replicas: int = Field(ge=0, description="Replicas to run (count).")
    routed_rate_rps: float = Field(ge=0, description="Expected request rate routed here, requests/s.")
    utilisation: float = Field(ge=0, description="Expected busy fraction per replica (0-1).")
    max_utilisation: float = Field(
        ge=0, description="Utilisation cap that keeps the p99 response inside the deadline (0-1)."
    )
    predicted_latency_ms: float = Field(
        description="Predicted p99 response time incl. RTT and queueing at the routed rate, ms."
    )
    energy_w: float = Field(description="Expected power attributable to this assignment (serving + share of idle), W.")


class Server(BaseModel):
    """A group of identical servers on one pool: each server is one process (one Deployment replica) on a slice
    of a node that loads every model listed in ``models`` and time-shares its accelerator or cores between them."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Server group name, unique in the plan (DNS-1123 label safe).")
    pool: str = Field(description="Node pool name.")
    replicas: int = Field(ge=0, description="Servers in the group (count); each is one pod.")
    shared: bool = Field(description="True when the servers host several models (one queue, mixed service times).")
    standby: bool = Field(False, description="True when no traffic is planned here (burst headroom).")
    power_mode: str = Field("default", description="Power mode of the nodes the servers run on.")
    cpu_cores: float = Field(description="CPU request per server, cores.")
    memory_mb: float = Field(description="Memory request per server, MiB.")
    accelerators: int = Field(0, ge=0, description="Accelerators per server, count.")
    models: list[str] = Field(
        description="Models every server of the group loads (see the assignments for configurations)."
    )
    routed_rate_rps: float = Field(ge=0, description="Expected request rate of all models on the group, requests/s.")
    utilisation: float = Field(ge=0, description="Expected busy fraction per server (0-1).")
    max_utilisation: float = Field(
        ge=0, description="Utilisation cap under which every hosted model meets its deadline (0-1)."
    )
    power_w: float = Field(0.0, description="Expected serving power of the group at the routed rates, W.")
    power_estimated: bool = Field(False, description="True when some hosted configuration's power is imputed.")


def dedicated_name(model: str, pool: str, config_id: str) -> str:
    """Name of a dedicated server group: DNS-1123 label safe, stable, at most 63 characters."""
    import re

    base = re.sub(r"[^a-z0-9-]+", "-", f"{model}-{pool}".lower()).strip("-")
    h = hashlib.sha256(f"{model}|{pool}|{config_id}".encode()).hexdigest()[:6]
    return f"{base[:55].rstrip('-')}-{h}"


def shared_name(pool: str, index: int = 0) -> str:
    """Name of a pool's shared server group."""
    import re

    base = re.sub(r"[^a-z0-9-]+", "-", pool.lower()).strip("-")
    return f"{base[:52].rstrip('-')}-shared{index if index else ''}"


class Unserved(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model name.")
    rate_rps: float = Field(
        ge=0, description="Expected rate that the plan cannot serve within the deadline, requests/s."
    )
    reason: str = Field(description="Why: no feasible configuration on any pool, or capacity exhausted.")


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model name.")
    pool: str = Field(description="Node pool name.")
    config_id: str = Field(description="Configuration id.")
    latency_p99_ms: float = Field(description="Profiled p99 service latency, ms.")
    response_p99_ms: float = Field(description="p99 latency + pool RTT (+ batch wait), ms.")
    capacity_rps: float = Field(
        description="Usable rate per replica under the utilisation cap, requests/s (0 when rejected before)."
    )
    energy_j_per_request: Optional[float] = Field(None, description="Energy per request, J.")
    power_estimated: bool = Field(False, description="True when the energy figure rests on imputed power.")
    status: CandidateStatus = Field(description="Outcome for this candidate.")
    detail: str = Field("", description="Human-readable reason.")


class SolverReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str = Field(description="Solver back-end name.")
    status: Literal["optimal", "time_limit", "gap_limit", "infeasible", "error", "trivial"] = Field(
        description="Outcome: `optimal` (proven within the gap), `time_limit` (best incumbent returned), ..."
    )
    objective: Optional[float] = Field(None, description="Objective of the returned plan (final phase).")
    best_bound: Optional[float] = Field(None, description="Best proven bound (final phase).")
    gap: Optional[float] = Field(None, description="Relative MIP gap of the returned plan (0-1).")
    seconds: float = Field(description="Wall time spent in the solver (all phases), s.")
    phases: list[dict] = Field(
        default_factory=list, description="Per-phase objective/bound/status (lexicographic phases)."
    )
    variables: int = Field(0, description="Number of MILP variables.")
    constraints: int = Field(0, description="Number of MILP constraints.")
    message: str = Field("", description="Anything the user should know (time limit hit, fallbacks).")


class Plan(BaseModel):
    """Versioned plan document."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["synergai.plan/v1", "synergai.plan/v2"] = Field(
        SCHEMA_VERSION, description="Schema version of this document (v2 adds server groups; v1 is still read)."
    )
    plan_id: str = Field("", description="Content hash of the decisions (assignments + unserved), 12 hex chars.")
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc), description="Creation time (UTC).")
    objective: str = Field(
        "lexicographic", description="How the objective was combined: `lexicographic` or `weighted`."
    )
    pools: list[NodePool] = Field(description="Node pools the plan was made for.")
    demands: list[ModelDemand] = Field(description="Demand the plan was made for.")
    servers: list[Server] = Field(default_factory=list, description="Server groups to run (one Deployment each).")
    assignments: list[Assignment] = Field(
        default_factory=list, description="Chosen configuration, servers and routed rate per (model, server group)."
    )
    unserved: list[Unserved] = Field(default_factory=list, description="Per model, load the plan cannot serve and why.")
    candidates: list[Candidate] = Field(
        default_factory=list, description="Every configuration considered per (model, pool) and its fate."
    )
    solver: SolverReport = Field(description="Solver report.")
    notes: list[str] = Field(
        default_factory=list,
        description="Warnings and provenance notes (e.g. profiles replaced by newer measurements).",
    )

    def compute_id(self) -> str:
        body = json.dumps(
            {
                "a": [a.model_dump(mode="json") for a in self.assignments],
                "u": [u.model_dump(mode="json") for u in self.unserved],
            },
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    def pool(self, name: str) -> NodePool:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)

    def demand(self, model: str) -> Optional[ModelDemand]:
        for d in self.demands:
            if d.model == model:
                return d
        return None

    def server_groups(self) -> list[Server]:
        """The plan's server groups; a plan without ``servers`` (older planners) gets one dedicated group
        per assignment, named after it, so consumers handle a single representation."""
        if self.servers:
            return list(self.servers)
        out = []
        for a in self.assignments:
            cfg = a.config
            out.append(
                Server(
                    name=dedicated_name(a.model, a.pool, cfg.config_id),
                    pool=a.pool,
                    replicas=a.replicas,
                    shared=False,
                    standby=a.routed_rate_rps <= 0,
                    power_mode=cfg.power_mode,
                    cpu_cores=cfg.cpu_cores,
                    memory_mb=cfg.memory_request_mb,
                    accelerators=cfg.accelerators,
                    models=[a.model],
                    routed_rate_rps=a.routed_rate_rps,
                    utilisation=a.utilisation,
                    max_utilisation=a.max_utilisation,
                    power_w=a.energy_w,
                    power_estimated=cfg.power_estimated,
                )
            )
        return out

    def assignments_of(self, server: str) -> list[Assignment]:
        """Assignments hosted by one server group (see :meth:`server_groups`)."""
        if self.servers:
            return [a for a in self.assignments if a.server == server]
        return [a for a in self.assignments if dedicated_name(a.model, a.pool, a.config.config_id) == server]

    def unserved_rate(self) -> float:
        return sum(u.rate_rps for u in self.unserved)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        name = str(path)
        if not path.exists():
            raise InputError("file not found", file=name)
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise InputError("file is empty", file=name)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON: {e.msg}", file=name, row=e.lineno) from None
        return cls.from_data(data, source=name)

    @classmethod
    def from_data(cls, data: object, source: str = "<plan>") -> Plan:
        """Validate an already-parsed plan document (schema version first, then fields)."""
        if not isinstance(data, dict):
            raise InputError("a plan must be a JSON object", file=source)
        ver = data.get("schema_version")
        if ver not in READABLE_VERSIONS:
            raise InputError(
                f"unsupported schema version {ver!r}, expected {SCHEMA_VERSION!r}", file=source, field="schema_version"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise pydantic_error(e, file=source) from None
