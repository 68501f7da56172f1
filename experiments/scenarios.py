"""Scenarios declared as YAML (``experiments/scenarios/*.yaml`` or any path): cluster variant, profile
drift, model mix, deadlines, arrival process, loads, seeds and policies.

Load
----
``load`` is a fraction of the cluster's *capacity under the default plan*: the largest total rate, with
the scenario's model mix and deadlines, for which the offline planner serves everything (no unserved
rate), found by bisection on the plan. Load 1.0 is the edge of what the planner believes it can serve
within the deadlines; above it the cluster is overloaded. ``load_basis: default`` measures it on the
unmodified default cluster (a failure scenario keeps the absolute load while the capacity drops).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from synergai.models import ClusterSpec, InputError, ModelDemand, ProfileTable, WorkloadSpec
from synergai.models.cluster import load_structured
from synergai.models.errors import pydantic_error
from synergai.planner import PlanOptions, plan_offline

from .sim import Arrivals

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "data"
AZURE = {"azure-code": SHARED / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_code.csv",
         "azure-conv": SHARED / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_conv.csv"}
ALIBABA = SHARED / "alibaba-gentd26-diffusion-requests" / "lora_request_trace_2024-12-01_to_2024-12-07.csv"


class SkipScenario(Exception):
    """A scenario that cannot run here (e.g. its trace is absent); the message says why."""


class ClusterVariant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field("default", description="`default` or a ClusterSpec YAML/JSON path (relative to the scenario file).")
    keep_pools: Optional[list[str]] = Field(None, description="Only these pools.")
    remove_pools: list[str] = Field(default_factory=list, description="Pools removed (a failure).")
    edge_nodes: float = Field(1.0, ge=0, description="Multiply every edge pool's node count (rounded, >= 1).")
    cloud_nodes: float = Field(1.0, ge=0, description="Multiply every cloud pool's node count (rounded, >= 1).")
    nodes: dict[str, int] = Field(default_factory=dict, description="Set a pool's node count.")
    load_basis: Literal["scenario", "default"] = Field("scenario", description="Cluster whose capacity defines load 1.0.")


class ProfilesVariant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    perturb: float = Field(0.0, ge=0, lt=1, description="Drift: simulate on latencies x U(1-p, 1+p) per configuration; plan on the original.")
    seed: int = Field(0, description="Seed of the perturbation.")


class WorkloadVariant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mix: Union[Literal["default"], dict[str, float]] = Field("default", description="`default` (the default workload's rates) or {model: weight}.")
    deadlines: Union[Literal["mlperf"], dict[str, float]] = Field("mlperf", description="`mlperf` (the default workload's MLPerf bounds) or {slack: k}: k x the fastest p50 + RTT.")

    @field_validator("mix")
    @classmethod
    def _mix(cls, v):
        if isinstance(v, dict):
            if not v or any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
                raise ValueError("mix weights must be >= 0 with a positive sum")
            return {k.strip().lower(): float(w) for k, w in v.items()}
        return v

    @field_validator("deadlines")
    @classmethod
    def _dl(cls, v):
        if isinstance(v, dict):
            if set(v) != {"slack"} or not v["slack"] > 1:
                raise ValueError("deadlines must be `mlperf` or {slack: k} with k > 1")
        return v


class ArrivalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    process: Literal["poisson", "mmpp", "onoff", "azure-code", "azure-conv", "alibaba"]
    n: int = Field(20000, ge=1, description="Arrivals per run.")
    high: float = Field(3.0, gt=0, description="mmpp/onoff: relative rate of the high state.")
    low: float = Field(0.3, ge=0, description="mmpp: relative rate of the low state (onoff: 0).")
    mean_high_s: float = Field(0.5, gt=0, description="Mean sojourn in the high state, s.")
    mean_low_s: float = Field(1.5, gt=0, description="Mean sojourn in the low state, s.")
    service: Literal["profile", "trace"] = Field("profile", description="alibaba: `trace` scales each request's service time by its measured execution time / median.")


class QuickSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: Optional[int] = Field(None, ge=1)
    loads: Optional[list[float]] = None
    seeds: Optional[list[int]] = None


class OptimalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(150, ge=1, le=600, description="Arrivals solved exactly (the first n of the run).")
    time_limit: float = Field(20.0, gt=0, description="CP-SAT time limit per deployment, s.")


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    headline: bool = Field(False, description="Part of the default set averaged for the headline numbers.")
    cluster: ClusterVariant = Field(default_factory=ClusterVariant)
    profiles: ProfilesVariant = Field(default_factory=ProfilesVariant)
    workload: WorkloadVariant = Field(default_factory=WorkloadVariant)
    arrivals: ArrivalSpec
    loads: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    policies: Optional[list[str]] = Field(None, description="Default: every registered policy (optimal only where `optimal` is set).")
    optimal: Optional[OptimalSpec] = None
    quick: QuickSpec = Field(default_factory=QuickSpec)

    @field_validator("loads")
    @classmethod
    def _loads(cls, v):
        if any(not (x > 0 and math.isfinite(x)) for x in v):
            raise ValueError("loads must be > 0")
        return v

    source: str = Field("", exclude=True)

    def reduced(self, quick: bool) -> "Scenario":
        if not quick:
            return self
        q = self.quick
        arr = self.arrivals.model_copy(update={"n": q.n or min(self.arrivals.n, 2000)})
        upd = {"arrivals": arr, "loads": q.loads or self.loads, "seeds": q.seeds or self.seeds[:1]}
        if self.optimal is not None:
            upd["optimal"] = self.optimal.model_copy(update={"n": min(self.optimal.n, 60),
                                                             "time_limit": min(self.optimal.time_limit, 5.0)})
        return self.model_copy(update=upd)


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    data = load_structured(path)
    if not isinstance(data, dict):
        raise InputError("a scenario must be a mapping", file=str(path))
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as e:
        raise pydantic_error(e, file=str(path)) from None
    sc.source = str(path)
    if sc.policies is not None:
        from .policies import POLICIES
        for i, p in enumerate(sc.policies):
            if p not in POLICIES:
                raise InputError(f"unknown policy {p!r}; choose from {', '.join(POLICIES)}", file=str(path),
                                 field=f"policies.{i}")
    return sc


def builtin_scenarios() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.yaml"))}


def resolve(name: str) -> Scenario:
    """A built-in scenario by name, or a YAML file by path."""
    if name.endswith((".yaml", ".yml", ".json")) or "/" in name:
        return load_scenario(name)
    b = builtin_scenarios()
    if name not in b:
        raise InputError(f"unknown scenario {name!r}; choose from {', '.join(b)} or pass a YAML path", field="--scenario")
    return load_scenario(b[name])


# ---------------------------------------------------------------------------------------------- instance

@dataclass
class Instance:
    """Everything a run of one scenario at one load needs (without the arrivals)."""

    scenario: Scenario
    load: float
    profiles: ProfileTable       # planning table
    truth: Optional[ProfileTable]  # simulated table (drift), None = same as planning
    cluster: ClusterSpec
    workload: WorkloadSpec       # rates at this load, deadlines
    capacity_rps: float


def load_scenarios(spec: "ArrivalSpec") -> tuple:
    """The rate distribution the planner is told about (as a user would know it from history):
    ``((1.0, p_nominal), (factor, p_peak))`` relative to the mean rate, or ``()`` for Poisson.

    MMPP/on-off: the burst state exactly (its rate over the mean, its share of time).  Recorded
    traces: windows of 20 arrivals over the whole file; the peak is the mean rate of the busiest
    20 % of windows.  Never derived from the sampled run itself.  (Measured alternative, not kept:
    counting only bursts longer than twice the largest deadline lost the gains on azure-code.)"""
    if spec.process in ("mmpp", "onoff"):
        low = 0.0 if spec.process == "onoff" else spec.low
        p_high = spec.mean_high_s / (spec.mean_high_s + spec.mean_low_s)
        f = spec.high / (spec.high * p_high + low * (1 - p_high))
        return ((1.0, 1.0 - p_high), (round(f, 4), p_high)) if f > 1.05 else ()
    base = None
    if spec.process in AZURE and AZURE[spec.process].exists():
        base = _azure_times(str(AZURE[spec.process]))
    elif spec.process == "alibaba" and ALIBABA.exists():
        base = np.sort(_alibaba(str(ALIBABA))[0])
    if base is None or len(base) < 200:
        return ()
    rate = (len(base) - 1) / (base[-1] - base[0])
    w = 20.0 / rate
    counts = np.bincount(((base - base[0]) // w).astype(np.int64))
    r = np.sort(counts / w / rate)
    f = float(r[int(0.8 * len(r)):].mean())
    return ((1.0, 0.8), (round(f, 4), 0.2)) if f > 1.05 else ()


def _defaults():
    import synergai.profiling_data as pdd
    return pdd.default_profiles(), pdd.default_cluster(), pdd.default_workload()


def build_cluster(sc: Scenario) -> ClusterSpec:
    cv = sc.cluster
    src = sc.source or "<scenario>"
    if cv.base == "default":
        base = _defaults()[1]
    else:
        p = Path(cv.base)
        if not p.is_absolute() and sc.source:
            p = Path(sc.source).parent / p
        base = ClusterSpec.load(p)
    names = {p.name for p in base.pools}
    for fld, lst in (("cluster.keep_pools", cv.keep_pools or []), ("cluster.remove_pools", cv.remove_pools),
                     ("cluster.nodes", list(cv.nodes))):
        for x in lst:
            if x not in names:
                raise InputError(f"unknown pool {x!r}; pools: {', '.join(sorted(names))}", file=src, field=fld)
    pools = []
    for p in base.pools:
        if cv.keep_pools is not None and p.name not in cv.keep_pools:
            continue
        if p.name in cv.remove_pools:
            continue
        k = cv.edge_nodes if p.tier == "edge" else cv.cloud_nodes
        nodes = max(1, int(round(p.nodes * k))) if k != 1.0 else p.nodes
        nodes = cv.nodes.get(p.name, nodes)
        pools.append(p.model_copy(update={"nodes": nodes}))
    if not pools:
        raise InputError("the cluster variant leaves no pool", file=src, field="cluster")
    return ClusterSpec(name=f"{base.name}:{sc.name}", pools=pools)


def perturbed(table: ProfileTable, p: float, seed: int) -> ProfileTable:
    """Every configuration's latencies x f and throughput / f, f ~ U(1-p, 1+p) (one f per configuration)."""
    rng = np.random.default_rng([seed, 0xD81F7])
    out = []
    for r in table.records:
        f = float(rng.uniform(1 - p, 1 + p))
        out.append(r.model_copy(update={"latency_p50_ms": r.latency_p50_ms * f, "latency_p90_ms": r.latency_p90_ms * f,
                                        "latency_p99_ms": r.latency_p99_ms * f, "throughput_rps": r.throughput_rps / f}))
    return ProfileTable(out, source=f"{table.source}~drift{p:g}@{seed}")


def base_workload(sc: Scenario, table: ProfileTable, cluster: ClusterSpec) -> WorkloadSpec:
    """Mix (relative rates, arbitrary scale) and deadlines of the scenario."""
    default_wl = _defaults()[2]
    src = sc.source or "<scenario>"
    if sc.workload.mix == "default":
        mix = {d.model: d.rate_rps for d in default_wl.models}
    else:
        mix = dict(sc.workload.mix)
    known = set(table.models)
    for m in mix:
        if m not in known:
            raise InputError(f"unknown model {m!r} (no profile has it)", file=src, field="workload.mix")
    total = sum(mix.values())
    dls = {}
    if sc.workload.deadlines == "mlperf":
        dmap = {d.model: d.deadline_ms for d in default_wl.models}
        for m in mix:
            if m not in dmap:
                raise InputError(f"model {m!r} has no MLPerf deadline in the default workload; use deadlines: {{slack: k}}",
                                 file=src, field="workload.deadlines")
            dls[m] = dmap[m]
    else:
        k = sc.workload.deadlines["slack"]
        for m in mix:
            best = math.inf
            for pool in cluster.pools:
                for r in table.for_model_device(m, pool.device):
                    if r.architecture == pool.architecture and r.batch_size == 1:
                        best = min(best, r.latency_p50_ms + pool.rtt_ms)
            if not math.isfinite(best):
                raise InputError(f"model {m!r} has no batch-1 configuration on this cluster", file=src, field="workload.mix")
            dls[m] = round(k * best, 6)
    return WorkloadSpec(name=sc.name, models=[ModelDemand(model=m, rate_rps=w / total, deadline_ms=dls[m])
                                              for m, w in mix.items() if w > 0])


_CAP_CACHE: dict[str, float] = {}


def capacity_rps(table: ProfileTable, cluster: ClusterSpec, unit: WorkloadSpec) -> float:
    """Largest total rate (mix of ``unit``, whose rates sum to 1) the offline plan serves without unserved rate."""
    key = cluster.model_dump_json() + unit.model_dump_json() + table.source + str(len(table))
    if key in _CAP_CACHE:
        return _CAP_CACHE[key]
    opts = PlanOptions(use_spare_capacity=False)

    def ok(rate: float) -> bool:
        p = plan_offline(table, cluster, unit.scaled(rate), time_limit=5.0, options=opts)
        return p.unserved_rate() <= 1e-6 * rate

    lo, hi = 0.0, 100.0
    while ok(hi):
        lo, hi = hi, hi * 4
        if hi > 1e9:
            break
    for _ in range(18):
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
        if hi - lo <= 0.005 * hi:
            break
    _CAP_CACHE[key] = lo
    return lo


def build_instance(sc: Scenario, load: float) -> Instance:
    table, _, _ = _defaults()
    cluster = build_cluster(sc)
    unit = base_workload(sc, table, cluster)
    basis = cluster if sc.cluster.load_basis == "scenario" else _defaults()[1]
    cap = capacity_rps(table, basis, base_workload(sc, table, basis) if basis is not cluster else unit)
    if cap <= 0:
        raise InputError("the planner can serve none of this mix on the cluster (capacity 0)",
                         file=sc.source or "<scenario>", field="workload")
    truth = perturbed(table, sc.profiles.perturb, sc.profiles.seed) if sc.profiles.perturb > 0 else None
    return Instance(sc, load, table, truth, cluster, unit.scaled(load * cap), cap)


# ---------------------------------------------------------------------------------------------- arrivals

def run_rng(sc: Scenario, load: float, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(sc.name.encode()), int(round(load * 1000))])


@lru_cache(maxsize=4)
def _azure_times(path: str) -> np.ndarray:
    df = pd.read_csv(path, usecols=["TIMESTAMP"])
    t = pd.to_datetime(df["TIMESTAMP"], format="%Y-%m-%d %H:%M:%S.%f")
    s = (t - t.iloc[0]).dt.total_seconds().to_numpy()
    return np.sort(s)


@lru_cache(maxsize=2)
def _alibaba(path: str) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(path, usecols=["gmt_create", "predict_status", "exec_time_seconds"])
    df = df[(df["predict_status"] == "SUCCEED") & (df["exec_time_seconds"] > 0)]
    t = pd.to_datetime(df["gmt_create"], format="%Y-%m-%d %H:%M:%S")
    s = (t - t.iloc[0]).dt.total_seconds().to_numpy()
    ex = df["exec_time_seconds"].to_numpy(dtype=float)
    return s, ex / np.median(ex)


def _tile(base: np.ndarray, n: int) -> np.ndarray:
    """Repeat a trace's times end to end until it has n arrivals (gap between copies: its mean gap)."""
    if len(base) >= n:
        return base[:n]
    span = base[-1] - base[0] + (base[-1] - base[0]) / max(1, len(base) - 1)
    reps = -(-n // len(base))
    return np.concatenate([base - base[0] + k * span for k in range(reps)])[:n]


def arrival_times(spec: ArrivalSpec, rate: float, rng: np.random.Generator, source: str = "<scenario>"):
    """(times, log service multipliers or None) at mean ``rate`` req/s."""
    n = spec.n
    if spec.process == "poisson":
        return np.cumsum(rng.exponential(1.0 / rate, n)), None
    if spec.process in ("mmpp", "onoff"):
        low = 0.0 if spec.process == "onoff" else spec.low
        c = rate * (spec.mean_high_s + spec.mean_low_s) / (spec.high * spec.mean_high_s + low * spec.mean_low_s)
        rates = (c * spec.high, c * low)
        means = (spec.mean_high_s, spec.mean_low_s)
        out = []
        t, state, got = 0.0, int(rng.random() < spec.mean_low_s / (spec.mean_high_s + spec.mean_low_s)), 0
        while got < n:
            dur = rng.exponential(means[state])
            lam = rates[state]
            if lam > 0:
                k = rng.poisson(lam * dur)
                if k:
                    out.append(t + np.sort(rng.uniform(0, dur, k)))
                    got += k
            t += dur
            state = 1 - state
        return np.concatenate(out)[:n], None
    if spec.process in AZURE:
        path = AZURE[spec.process]
        if not path.exists():
            raise SkipScenario(f"{path} is absent (Azure LLM inference trace 2023)")
        base = _azure_times(str(path))
        native = (len(base) - 1) / (base[-1] - base[0])
        t = _tile(base, n) * (native / rate)
        return t, None
    if spec.process == "alibaba":
        if not ALIBABA.exists():
            raise SkipScenario(f"{ALIBABA} is absent (Alibaba GenTD26 diffusion request trace)")
        s, mult = _alibaba(str(ALIBABA))
        s = np.sort(s + rng.uniform(0, 1, len(s)))  # 1-second resolution: spread within the second
        native = (len(s) - 1) / (s[-1] - s[0])
        t = _tile(s, n) * (native / rate)
        lm = None
        if spec.service == "trace":
            lm = np.log(np.resize(mult, n))
        return t, lm
    raise InputError(f"unknown arrival process {spec.process!r}", file=source, field="arrivals.process")


def make_arrivals(inst: Instance, seed: int) -> Arrivals:
    sc = inst.scenario
    rng = run_rng(sc, inst.load, seed)
    models = [d.model for d in inst.workload.models]
    rates = np.array([d.rate_rps for d in inst.workload.models])
    total = float(rates.sum())
    t, lm = arrival_times(sc.arrivals, total, rng, sc.source)
    n = len(t)
    m = rng.choice(len(models), size=n, p=rates / total)
    dl = np.array([d.deadline_ms / 1e3 for d in inst.workload.models])[m]
    z = rng.standard_normal(n)
    return Arrivals(np.asarray(t, dtype=np.float64), m.astype(np.int64), models, dl, z, lm)
