"""Scenarios declared as YAML (``experiments/scenarios/*.yaml`` or any path): inputs (profile tables,
cluster, workload: the embedded defaults or the user's own files), cluster variant, profile drift, model
mix, deadlines, arrival process (synthetic or a recorded trace by path), loads, seeds and policies.

Load
----
``load`` is a fraction of the cluster's **neutral capacity** (``experiments.capacity``): an upper bound on the
total rate, at the scenario's model mix, that any deployment could serve within the deadlines (a fluid LP
over every deadline-feasible (model, configuration, pool), no queueing, no integrality). It is the same for
every policy; no policy's own planner defines it. Results report the absolute rate beside the factor.
``load_basis: default`` measures it on the unmodified base cluster (a failure scenario keeps the absolute
load while the capacity drops).

Inputs
------
``profiles: {files: [a.csv, b.parquet]}``, ``cluster: {base: my_cluster.yaml}`` and
``workload: {base: my_workload.yaml}`` (paths relative to the scenario file) replace the embedded defaults;
``synergai experiment --profiles/--cluster/--workload`` override them for every scenario run (a scenario
whose variant does not apply to the given cluster or models, e.g. it removes a pool the cluster lacks, is
skipped with one line).

No peeking
----------
Planning inputs (burst load scenarios, the model mix of a trace with a model column) come from the
trace's *training* window; runs replay its later *replay* window (``experiments.traces``). Synthetic
processes give the planner their known parameters (an MMPP's burst state), never the sampled run.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synergai.models import ClusterSpec, InputError, ModelDemand, ProfileTable, WorkloadSpec
from synergai.models.cluster import load_structured
from synergai.models.errors import pydantic_error

from .capacity import neutral_capacity
from .sim import Arrivals
from .traces import SkipScenario, Trace, TraceSpec, Window, load_trace, split, tile, window_stats

__all__ = [
    "SkipScenario",
    "Scenario",
    "DataOptions",
    "Instance",
    "build_instance",
    "make_arrivals",
    "resolve",
    "load_scenario",
    "builtin_scenarios",
    "load_scenarios",
]

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
#: Legacy process names of the bundled traces -> their trace declarations (paths under the data directory).
LEGACY_TRACES = {
    "azure-code": dict(
        path="azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv",
        time_column="TIMESTAMP",
        time_unit="datetime",
        optional=True,
    ),
    "azure-conv": dict(
        path="azure-llm-inference-2023/AzureLLMInferenceTrace_conv.csv",
        time_column="TIMESTAMP",
        time_unit="datetime",
        optional=True,
    ),
    "alibaba": dict(
        path="alibaba-gentd26-diffusion-requests/lora_request_trace_2024-12-01_to_2024-12-07.csv",
        time_column="gmt_create",
        time_unit="datetime:%Y-%m-%d %H:%M:%S",
        filter={"predict_status": "SUCCEED"},
        optional=True,
    ),
}


@dataclass(frozen=True)
class DataOptions:
    """Inputs that override every scenario's (the CLI's ``--profiles/--cluster/--workload/--data-dir``)."""

    profiles: tuple[str, ...] = ()
    cluster: Optional[str] = None
    workload: Optional[str] = None
    data_dir: Optional[str] = None
    skip_unprofiled: bool = False  # plan around pools whose device has no profile (PlanOptions.skip_unprofiled)

    @property
    def overrides(self) -> bool:
        return bool(self.profiles or self.cluster or self.workload)


class ClusterVariant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field(
        "default",
        description="`default` (embedded), a named built-in cluster (`edge-lite`) or a ClusterSpec YAML/JSON path (relative to the scenario file).",
    )
    keep_pools: Optional[list[str]] = Field(None, description="Only these pools.")
    remove_pools: list[str] = Field(default_factory=list, description="Pools removed (a failure).")
    edge_nodes: float = Field(1.0, ge=0, description="Multiply every edge pool's node count (rounded, >= 1).")
    cloud_nodes: float = Field(1.0, ge=0, description="Multiply every cloud pool's node count (rounded, >= 1).")
    nodes: dict[str, int] = Field(default_factory=dict, description="Set a pool's node count.")
    load_basis: Literal["scenario", "default"] = Field(
        "scenario", description="Cluster whose capacity defines load 1.0."
    )


class ProfilesVariant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[str] = Field(
        default_factory=list,
        description="Profile CSV/Parquet files (merged, newer wins; relative to the scenario file). Default: the embedded MLPerf table.",
    )

    perturb: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Drift: simulate on latencies x U(1-p, 1+p) per configuration; plan on the original.",
    )
    seed: int = Field(0, description="Seed of the perturbation.")


class WorkloadVariant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field(
        "default",
        description="`default` (embedded) or a WorkloadSpec YAML/JSON path (relative to the scenario file): its rates are the `default` mix, its deadlines the `mlperf`/`workload` deadlines.",
    )
    mix: Union[Literal["default"], dict[str, float]] = Field(
        "default",
        description="`default` (the base workload's rates; for a trace with a model column: the training window's counts) or {model: weight}.",
    )
    deadlines: Union[Literal["mlperf", "workload"], dict[str, float]] = Field(
        "mlperf",
        description="`mlperf`/`workload` (the base workload's deadlines; the embedded one has MLPerf's bounds) or {slack: k}: k x the fastest p50 + RTT.",
    )

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
                raise ValueError("deadlines must be `mlperf`, `workload` or {slack: k} with k > 1")
        return v


_TRACE_FIELDS = (
    "path",
    "format",
    "time_column",
    "time_unit",
    "model_column",
    "service_column",
    "filter",
    "tick_s",
    "rate",
    "train",
    "replay",
    "optional",
)


class ArrivalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    process: Literal["poisson", "mmpp", "onoff", "trace", "azure-code", "azure-conv", "alibaba"] = Field(
        description="poisson | mmpp | onoff | trace (a recorded file, fields below); azure-code, azure-conv and "
        "alibaba are shorthands for the bundled traces."
    )
    n: int = Field(20000, ge=1, description="Arrivals per run.")
    high: float = Field(3.0, gt=0, description="mmpp/onoff: relative rate of the high state.")
    low: float = Field(0.3, ge=0, description="mmpp: relative rate of the low state (onoff: 0).")
    mean_high_s: float = Field(0.5, gt=0, description="Mean sojourn in the high state, s.")
    mean_low_s: float = Field(1.5, gt=0, description="Mean sojourn in the low state, s.")
    service: Literal["profile", "trace"] = Field(
        "profile",
        description="alibaba shorthand: `trace` scales each request's service time by its measured execution time / median.",
    )
    # process: trace (see experiments.traces.TraceSpec)
    path: Optional[str] = Field(None, description="trace: file (relative: data directory, then the scenario's folder).")
    format: Optional[Literal["csv", "jsonl", "parquet"]] = None
    time_column: Optional[str] = None
    time_unit: str = "s"
    model_column: Optional[str] = None
    service_column: Optional[str] = None
    filter: dict[str, str] = Field(default_factory=dict)
    tick_s: Optional[float] = Field(None, gt=0)
    rate: Union[Literal["scale", "native"], float] = "scale"
    train: Window = Field(default_factory=lambda: Window(start=0.0, end=0.5))
    replay: Window = Field(default_factory=lambda: Window(start=0.5, end=1.0))
    optional: bool = False

    @model_validator(mode="after")
    def _trace(self) -> ArrivalSpec:
        if self.process == "trace":
            if not self.path or not self.time_column:
                raise ValueError("process: trace needs `path` and `time_column`")
            self.trace_spec()  # validates the trace fields together
        elif self.path is not None or self.time_column is not None:
            raise ValueError(f"path/time_column only apply to process: trace (got process: {self.process})")
        return self

    @property
    def is_trace(self) -> bool:
        return self.process in ("trace", *LEGACY_TRACES)

    def trace_spec(self) -> TraceSpec:
        if self.process in LEGACY_TRACES:
            extra = dict(LEGACY_TRACES[self.process])
            if self.process == "alibaba" and self.service == "trace":
                extra["service_column"] = "exec_time_seconds"
            return TraceSpec(**extra, train=self.train, replay=self.replay, rate=self.rate)
        data = {k: getattr(self, k) for k in _TRACE_FIELDS}
        try:
            return TraceSpec(**data)
        except ValidationError as e:
            raise ValueError(e.errors()[0]["msg"]) from None


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
    clusters: list[str] = Field(
        default_factory=list,
        description="Also run the scenario on these cluster bases (named built-in clusters such as `edge-lite`, or paths), as `NAME@CLUSTER`; skipped when --cluster is given.",
    )
    policies: Optional[list[str]] = Field(
        None, description="Default: every registered policy (optimal only where `optimal` is set)."
    )
    optimal: Optional[OptimalSpec] = None
    quick: QuickSpec = Field(default_factory=QuickSpec)

    @field_validator("loads")
    @classmethod
    def _loads(cls, v):
        if any(not (x > 0 and math.isfinite(x)) for x in v):
            raise ValueError("loads must be > 0")
        return v

    source: str = Field("", exclude=True)

    def reduced(self, quick: bool) -> Scenario:
        if not quick:
            return self
        q = self.quick
        arr = self.arrivals.model_copy(update={"n": q.n or min(self.arrivals.n, 2000)})
        upd = {"arrivals": arr, "loads": q.loads or self.loads, "seeds": q.seeds or self.seeds[:1]}
        if self.optimal is not None:
            upd["optimal"] = self.optimal.model_copy(
                update={"n": min(self.optimal.n, 60), "time_limit": min(self.optimal.time_limit, 5.0)}
            )
        return self.model_copy(update=upd)

    def on_clusters(self, data: Optional[DataOptions] = None) -> list[Scenario]:
        """The scenario, then one copy per extra cluster base (``name@cluster``, that base, no further copies).
        A ``--cluster`` override runs the scenario once, on the given cluster."""
        out = [self]
        if data is not None and data.cluster:
            return out
        for base in self.clusters:
            tag = Path(base).stem if base not in NAMED_CLUSTERS else base
            cv = self.cluster.model_copy(update={"base": base})
            out.append(self.model_copy(update={"name": f"{self.name}@{tag}", "cluster": cv, "clusters": []}))
        return out


#: Built-in clusters a scenario can name as ``cluster: {base: NAME}`` (files in ``profiling_data``).
NAMED_CLUSTERS = {"edge-lite": "edge_lite_cluster.yaml"}


def cluster_label(sc: Scenario, data: Optional[DataOptions] = None) -> str:
    """Which base cluster a scenario runs on: `default`, a named cluster, or the file's stem."""
    if data is not None and data.cluster:
        return Path(data.cluster).stem
    b = sc.cluster.base
    return b if b == "default" or b in NAMED_CLUSTERS else Path(b).stem


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
                raise InputError(
                    f"unknown policy {p!r}; choose from {', '.join(POLICIES)}", file=str(path), field=f"policies.{i}"
                )
    return sc


def builtin_scenarios() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.yaml"))}


def resolve(name: str) -> Scenario:
    """A built-in scenario by name, or a YAML file by path."""
    if name.endswith((".yaml", ".yml", ".json")) or "/" in name:
        return load_scenario(name)
    b = builtin_scenarios()
    if name not in b:
        raise InputError(
            f"unknown scenario {name!r}; choose from {', '.join(b)} or pass a YAML path", field="--scenario"
        )
    return load_scenario(b[name])


# ---------------------------------------------------------------------------------------------- instance


@dataclass
class Instance:
    """Everything a run of one scenario at one load needs (without the arrivals)."""

    scenario: Scenario
    load: float
    profiles: ProfileTable  # planning table
    truth: Optional[ProfileTable]  # simulated table (drift), None = same as planning
    cluster: ClusterSpec
    workload: WorkloadSpec  # rates at this load, deadlines
    capacity_rps: float  # neutral capacity (load 1.0), req/s
    load_scenarios: tuple = ()  # burst states the planner is told about (training data only)
    replay: Optional[Trace] = None  # the replayed window of a trace scenario
    train: Optional[Trace] = None  # its training window (planning statistics)


def load_scenarios(spec: ArrivalSpec, train: Optional[Trace] = None) -> tuple:
    """The rate distribution the planner is told about (as a user would know it from history):
    ``((1.0, p_nominal), (factor, p_peak))`` relative to the mean rate, or ``()`` for Poisson.

    MMPP/on-off: the burst state exactly (its rate over the mean, its share of time).  Recorded
    traces: windows of 20 arrivals over the *training window* only; the peak is the mean rate of the
    busiest 20 % of windows.  Never derived from the replayed arrivals.  (Measured alternative, not kept:
    counting only bursts longer than twice the largest deadline lost the gains on azure-code.)"""
    if spec.process in ("mmpp", "onoff"):
        low = 0.0 if spec.process == "onoff" else spec.low
        p_high = spec.mean_high_s / (spec.mean_high_s + spec.mean_low_s)
        f = spec.high / (spec.high * p_high + low * (1 - p_high))
        return ((1.0, 1.0 - p_high), (round(f, 4), p_high)) if f > 1.05 else ()
    if train is None:
        return ()
    return window_stats(train)


def _defaults():
    import synergai.profiling_data as pdd

    return pdd.default_profiles(), pdd.default_cluster(), pdd.default_workload()


def _rel(sc: Scenario, path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and sc.source:
        p = Path(sc.source).parent / p
    return p


def _input_file(loader, sc: Scenario, cli_path: Optional[str], cli_flag: str, own: str, own_field: str, default):
    """A CLI override file, else the scenario's own file (relative to it), else the embedded default."""
    if cli_path:
        if not Path(cli_path).is_file():
            raise InputError("file not found", file=cli_path, field=cli_flag)
        return loader(cli_path)
    if own == "default":
        return default
    p = _rel(sc, own)
    if not p.is_file():
        raise InputError(f"file not found: {p}", file=sc.source or "<scenario>", field=own_field)
    return loader(p)


@lru_cache(maxsize=8)
def _profiles_from(paths: tuple[str, ...]) -> ProfileTable:
    tables = [ProfileTable.load(p) for p in paths]
    return tables[0] if len(tables) == 1 else ProfileTable.merge(tables)


def build_profiles(sc: Scenario, data: Optional[DataOptions] = None) -> ProfileTable:
    """``--profiles`` files, else the scenario's ``profiles.files``, else the embedded table (merged, newer wins)."""
    if data is not None and data.profiles:
        for f in data.profiles:  # each must exist (one line naming it)
            _input_file(str, sc, f, "--profiles", "default", "", None)
        return _profiles_from(tuple(data.profiles))
    for i, f in enumerate(sc.profiles.files):
        _input_file(str, sc, None, "", f, f"profiles.files.{i}", None)
    if sc.profiles.files:
        return _profiles_from(tuple(str(_rel(sc, f)) for f in sc.profiles.files))
    return _defaults()[0]


def base_cluster(sc: Scenario, data: Optional[DataOptions] = None) -> ClusterSpec:
    own = sc.cluster.base
    if own in NAMED_CLUSTERS and not (data is not None and data.cluster):
        import synergai.profiling_data as pdd

        return ClusterSpec.load(Path(pdd.__file__).resolve().parent / NAMED_CLUSTERS[own])
    return _input_file(
        ClusterSpec.load, sc, data.cluster if data else None, "--cluster", own, "cluster.base", _defaults()[1]
    )


def base_workload_spec(sc: Scenario, data: Optional[DataOptions] = None) -> WorkloadSpec:
    return _input_file(
        WorkloadSpec.load,
        sc,
        data.workload if data else None,
        "--workload",
        sc.workload.base,
        "workload.base",
        _defaults()[2],
    )


def build_cluster(sc: Scenario, data: Optional[DataOptions] = None) -> ClusterSpec:
    cv = sc.cluster
    src = sc.source or "<scenario>"
    base = base_cluster(sc, data)
    names = {p.name for p in base.pools}
    for fld, lst in (
        ("cluster.keep_pools", cv.keep_pools or []),
        ("cluster.remove_pools", cv.remove_pools),
        ("cluster.nodes", list(cv.nodes)),
    ):
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
        out.append(
            r.model_copy(
                update={
                    "latency_p50_ms": r.latency_p50_ms * f,
                    "latency_p90_ms": r.latency_p90_ms * f,
                    "latency_p99_ms": r.latency_p99_ms * f,
                    "throughput_rps": r.throughput_rps / f,
                }
            )
        )
    return ProfileTable(out, source=f"{table.source}~drift{p:g}@{seed}")


def base_workload(
    sc: Scenario,
    table: ProfileTable,
    cluster: ClusterSpec,
    data: Optional[DataOptions] = None,
    train: Optional[Trace] = None,
) -> WorkloadSpec:
    """Mix (relative rates summing to 1) and deadlines of the scenario."""
    base_wl = base_workload_spec(sc, data)
    src = sc.source or "<scenario>"
    if sc.workload.mix != "default":
        mix = dict(sc.workload.mix)
    elif train is not None and train.models is not None:
        names, counts = np.unique(train.models, return_counts=True)
        mix = {str(m): float(c) for m, c in zip(names, counts)}
    else:
        mix = {d.model: d.rate_rps for d in base_wl.models}
    known = set(table.models)
    for m in mix:
        if m not in known:
            fld = (
                "workload.mix"
                if sc.workload.mix != "default"
                else ("arrivals.model_column" if train is not None and train.models is not None else "workload.base")
            )
            raise InputError(f"unknown model {m!r} (no profile has it)", file=src, field=fld)
    total = sum(mix.values())
    dls = {}
    if sc.workload.deadlines in ("mlperf", "workload"):
        dmap = {d.model: d.deadline_ms for d in base_wl.models}
        for m in mix:
            if m not in dmap:
                raise InputError(
                    f"model {m!r} has no deadline in the base workload; use deadlines: {{slack: k}}",
                    file=src,
                    field="workload.deadlines",
                )
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
                raise InputError(
                    f"model {m!r} has no batch-1 configuration on this cluster", file=src, field="workload.mix"
                )
            dls[m] = round(k * best, 6)
    return WorkloadSpec(
        name=sc.name,
        models=[ModelDemand(model=m, rate_rps=w / total, deadline_ms=dls[m]) for m, w in mix.items() if w > 0],
    )


def trace_windows(sc: Scenario, data: Optional[DataOptions] = None) -> tuple[Optional[Trace], Optional[Trace]]:
    """(training, replay) windows of a trace scenario, or (None, None). May raise ``SkipScenario``."""
    if not sc.arrivals.is_trace:
        return None, None
    spec = sc.arrivals.trace_spec()
    tr = load_trace(spec, sc.source, data.data_dir if data else None)
    return split(tr, spec, sc.source)


def capacity_rps(table: ProfileTable, cluster: ClusterSpec, unit: WorkloadSpec) -> float:
    """Neutral capacity (req/s) of ``cluster`` for ``unit``'s mix: see ``experiments.capacity``."""
    return neutral_capacity(table, cluster, unit).total_rps


def build_instance(sc: Scenario, load: float, data: Optional[DataOptions] = None) -> Instance:
    """The instance at ``load``; raises ``SkipScenario`` when the scenario cannot run here (optional trace
    absent, or its variant does not apply to the cluster/models given with ``--cluster``/``--profiles``)."""
    train, replay = trace_windows(sc, data)
    table = build_profiles(sc, data)
    try:
        cluster = build_cluster(sc, data)
        unit = base_workload(sc, table, cluster, data, train)
    except InputError as e:
        if data is not None and data.overrides:
            raise SkipScenario(f"does not apply to the given inputs ({e})") from None
        raise
    if sc.cluster.load_basis == "scenario":
        cap_res = neutral_capacity(table, cluster, unit)
    else:
        basis = base_cluster(sc, data)
        cap_res = neutral_capacity(table, basis, base_workload(sc, table, basis, data, train))
    cap = cap_res.total_rps
    if not (cap > 0 and math.isfinite(cap)):
        why = (
            f"no deadline-feasible configuration for {', '.join(cap_res.unservable)}"
            if cap_res.unservable
            else cap_res.status
        )
        raise InputError(f"neutral capacity is {cap:g} req/s: {why}", file=sc.source or "<scenario>", field="workload")
    truth = perturbed(table, sc.profiles.perturb, sc.profiles.seed) if sc.profiles.perturb > 0 else None
    rate = load * cap
    spec = sc.arrivals.trace_spec() if sc.arrivals.is_trace else None
    if spec is not None and spec.rate != "scale":
        rate = replay.rate() if spec.rate == "native" else float(spec.rate)
        load = rate / cap
    return Instance(
        sc,
        load,
        table,
        truth,
        cluster,
        unit.scaled(rate),
        cap,
        load_scenarios=load_scenarios(sc.arrivals, train),
        replay=replay,
        train=train,
    )


def run_loads(sc: Scenario) -> list[float]:
    """The loads a sweep runs: the scenario's, or one run for a trace replayed at a fixed rate."""
    if sc.arrivals.is_trace and sc.arrivals.rate != "scale":
        return [sc.loads[0]]
    return list(sc.loads)


# ---------------------------------------------------------------------------------------------- arrivals


def run_rng(sc: Scenario, load: float, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(sc.name.encode()), int(round(load * 1000))])


def synthetic_times(spec: ArrivalSpec, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times of a synthetic process at mean ``rate`` req/s."""
    n = spec.n
    if spec.process == "poisson":
        return np.cumsum(rng.exponential(1.0 / rate, n))
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
        return np.concatenate(out)[:n]
    raise ValueError(f"not a synthetic process: {spec.process}")


def make_arrivals(inst: Instance, seed: int) -> Arrivals:
    """The run's arrivals. Trace scenarios replay the replay window (repeated end to end when the run needs
    more), time-scaled to the workload's total rate unless the trace's rate is fixed; models come from the
    trace's model column when it has one, else are drawn by the mix; a service column becomes per-request
    log service multipliers (value / training-window median)."""
    sc = inst.scenario
    rng = run_rng(sc, inst.load, seed)
    models = [d.model for d in inst.workload.models]
    rates = np.array([d.rate_rps for d in inst.workload.models])
    total = float(rates.sum())
    lm = None
    n = sc.arrivals.n
    if inst.replay is not None:
        rp = inst.replay
        t = tile(rp.times, n)
        spec = sc.arrivals.trace_spec()
        if spec.rate != "native":
            t = t * (rp.rate() / total)
        n = len(t)
        if rp.service is not None:
            med = (
                float(np.median(inst.train.service))
                if inst.train is not None and inst.train.service is not None
                else float(np.median(rp.service))
            )
            lm = np.log(np.resize(rp.service, n) / med)
        if rp.models is not None:
            idx = {m: i for i, m in enumerate(models)}
            names = np.resize(rp.models, n)
            unknown = sorted(set(names) - set(idx))
            if unknown:
                raise InputError(
                    f"model {unknown[0]!r} of the replay window is not in the scenario's mix ({', '.join(models)})",
                    file=rp.file,
                    field=spec.model_column,
                )
            m = np.array([idx[x] for x in names], dtype=np.int64)
        else:
            m = rng.choice(len(models), size=n, p=rates / total)
    else:
        t = synthetic_times(sc.arrivals, total, rng)
        m = rng.choice(len(models), size=n, p=rates / total)
    dl = np.array([d.deadline_ms / 1e3 for d in inst.workload.models])[m]
    z = rng.standard_normal(n)
    return Arrivals(np.asarray(t, dtype=np.float64), m.astype(np.int64), models, dl, z, lm)
