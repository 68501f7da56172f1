"""Data step: enumerate (model, pool, configuration) candidates and reject the hopeless ones.

Plain data in (profiles, cluster, workload), plain data out (``Candidates``): the
MILP builder never sees a pydantic object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from synergai.models import ClusterSpec, InputError, ProfileRecord, ProfileTable, WorkloadSpec
from synergai.models.plan import Candidate

from .queueing import LatencyDist, max_utilisation

#: Power estimate (W) when a profile has none: per CPU core and per accelerator.
WATTS_PER_CORE = 4.0
WATTS_PER_ACCELERATOR = 60.0


@dataclass
class PlanOptions:
    """Planner knobs; defaults are what the CLI uses."""

    util_cap: float = 0.85
    """Hard upper bound on a replica's utilisation, whatever the queueing model allows (0-1)."""
    quantile: float = 0.99
    """Response-time quantile that must meet the deadline."""
    objective: str = "lexicographic"
    """`lexicographic` (unserved first, then energy+resources, two solves) or `weighted` (one solve)."""
    unserved_weight: float = 1e5
    """Weight of 1 req/s unserved (times priority) in the weighted objective (W-equivalents)."""
    resource_weight: float = 1e-2
    """Weight of one pool-capacity-normalised replica footprint in phase 2 (W-equivalents)."""
    headroom: float = 1.5
    """Phase H: after the unserved optimum, grow deadline-feasible capacity for every served model up to
    this factor of its served load before minimising energy (1 = off: pure energy after unserved)."""
    load_scenarios: tuple = ()
    """Optional ``((factor, probability), ...)`` including ``(1.0, p)``: the plan must also do well when
    every rate is multiplied by ``factor`` (e.g. an MMPP's burst state); minimises expected unserved."""
    use_spare_capacity: bool = True
    """After solving, add replicas of the chosen configurations into idle capacity (lowers queueing)."""
    prune_dominated: bool = True


@dataclass
class Candidates:
    """Feasible candidates as parallel arrays plus the reports of every candidate considered."""

    models: list[str]
    pools: list[str]
    records: list[ProfileRecord] = field(default_factory=list)
    m: list[int] = field(default_factory=list)          # model index
    p: list[int] = field(default_factory=list)          # pool index
    cap_rps: list[float] = field(default_factory=list)  # usable rate per replica (rho* x mu)
    rho: list[float] = field(default_factory=list)      # utilisation cap
    energy_j: list[float] = field(default_factory=list)  # J per request
    power_w: list[float] = field(default_factory=list)   # W while serving (possibly imputed)
    res: list[tuple[float, float, float]] = field(default_factory=list)  # cpu, mem, acc per replica
    nmax: list[int] = field(default_factory=list)
    response_ms: list[float] = field(default_factory=list)
    batch_wait_ms: list[float] = field(default_factory=list)
    reports: list[Candidate] = field(default_factory=list)
    report_index: list[int] = field(default_factory=list)  # candidate -> index into reports

    def __len__(self) -> int:
        return len(self.m)


BATCH_WAIT_FRACTION = 0.5


def batch_wait_ms(rec: ProfileRecord) -> float:
    """Longest a request waits for its batch to fill (the runtime's max queue delay): half a median
    batch call, so a partly filled batch starts rather than idling (0 for batch 1).  The simulator
    and the executor (env MAX_BATCH_DELAY_MS) use the same bound."""
    return 0.0 if rec.batch_size <= 1 else BATCH_WAIT_FRACTION * rec.latency_p50_ms


def _power(rec: ProfileRecord, device_median: dict[str, float]) -> tuple[float, bool]:
    if rec.power_w is not None:
        return rec.power_w, False
    if rec.device in device_median:
        return device_median[rec.device], True
    return WATTS_PER_CORE * rec.cpu_cores + WATTS_PER_ACCELERATOR * rec.accelerators, True


def check_inputs(profiles: ProfileTable, cluster: ClusterSpec, workload: WorkloadSpec,
                 cluster_file: str | None = None, workload_file: str | None = None) -> None:
    """Cross-file checks the single-file validators cannot do."""
    devices = set(profiles.devices)
    for i, pool in enumerate(cluster.pools):
        if pool.device not in devices:
            raise InputError(f"unknown device {pool.device!r} (no profile has it; known: {', '.join(sorted(devices))})",
                             file=cluster_file or "<cluster>", field=f"pools.{i}.device")
    models = set(profiles.models)
    for i, d in enumerate(workload.models):
        if d.model not in models:
            raise InputError(f"unknown model {d.model!r} (no profile has it; known: {', '.join(sorted(models))})",
                             file=workload_file or "<workload>", field=f"models.{i}.model")


def build_candidates(profiles: ProfileTable, cluster: ClusterSpec, workload: WorkloadSpec,
                     opts: PlanOptions | None = None) -> Candidates:
    opts = opts or PlanOptions()
    pools = [p for p in cluster.pools]
    models = [d.model for d in workload.models]
    cands = Candidates(models=models, pools=[p.name for p in pools])

    powered: dict[str, list[float]] = {}
    for r in profiles.records:
        if r.power_w is not None:
            powered.setdefault(r.device, []).append(r.power_w)
    device_median = {d: float(np.median(v)) for d, v in powered.items()}

    by_md: dict[tuple[str, str], list[ProfileRecord]] = {}
    for r in profiles.records:
        by_md.setdefault((r.model, r.device), []).append(r)

    for mi, dem in enumerate(workload.models):
        for pi, pool in enumerate(pools):
            feas: list[dict] = []
            for rec in by_md.get((dem.model, pool.device), []):
                wait = batch_wait_ms(rec)
                resp = rec.latency_p99_ms + pool.rtt_ms + wait
                pw, _ = _power(rec, device_median)
                epr = pw / rec.throughput_rps
                rep = Candidate(model=dem.model, pool=pool.name, config_id=rec.config_id,
                                latency_p99_ms=rec.latency_p99_ms, response_p99_ms=round(resp, 6), capacity_rps=0.0,
                                energy_j_per_request=round(epr, 9), status="not_chosen")
                cands.reports.append(rep)
                if pool.architecture != rec.architecture:
                    rep.status, rep.detail = "does_not_fit", f"profile is {rec.architecture}, pool is {pool.architecture}"
                    continue
                if resp > dem.deadline_ms:
                    rep.status = "misses_deadline"
                    rep.detail = (f"p99 {rec.latency_p99_ms:.3g} ms + rtt {pool.rtt_ms:.3g} ms"
                                  + (f" + batch wait {wait:.3g} ms" if wait else "")
                                  + f" = {resp:.3g} ms > deadline {dem.deadline_ms:.3g} ms")
                    continue
                need = (rec.cpu_cores, rec.memory_request_mb, float(rec.accelerators))
                have = (pool.cpu, pool.memory_mb, float(pool.accelerators))
                short = [n for n, a, b in zip(("cpu", "memory", "accelerators"), need, have) if a > b + 1e-9]
                if short:
                    rep.status = "does_not_fit"
                    rep.detail = "one replica needs more " + ", ".join(short) + " than a node has"
                    continue
                if pool.nodes == 0:
                    rep.status, rep.detail = "does_not_fit", "pool has no nodes"
                    continue
                dist = LatencyDist(rec.latency_p50_ms, rec.latency_p90_ms, rec.latency_p99_ms)
                per_req = 1000.0 / rec.throughput_rps
                rho = min(opts.util_cap, max_utilisation(dist, dem.deadline_ms - pool.rtt_ms - wait, cap=opts.util_cap,
                                                         q=opts.quantile, per_request_mean_ms=per_req))
                if rho <= 1e-6:
                    rep.status = "misses_deadline"
                    rep.detail = "no queueing headroom: any load pushes the p99 response past the deadline"
                    continue
                per_node = min(math.floor(h / n + 1e-9) if n > 0 else 10 ** 6 for n, h in zip(need, have))
                cap_rps = rho * rec.throughput_rps
                need_for_all = math.ceil(dem.rate_rps / cap_rps - 1e-9) if dem.rate_rps > 0 else 0
                nmax = min(per_node * pool.nodes, max(need_for_all, 0))
                rep.capacity_rps = round(cap_rps, 6)
                if nmax <= 0:
                    rep.status = "not_chosen"
                    rep.detail = "no demand" if dem.rate_rps <= 0 else "no room"
                    continue
                feas.append(dict(records=rec, m=mi, p=pi, cap_rps=cap_rps, rho=rho, energy_j=epr, power_w=pw,
                                 res=need, nmax=nmax, response_ms=resp, batch_wait_ms=wait,
                                 report_index=len(cands.reports) - 1))
            if opts.prune_dominated and len(feas) > 1:
                feas = _prune_dominated(cands.reports, feas)
            for e in feas:
                for k, v in e.items():
                    getattr(cands, k).append(v)
    return cands


def _prune_dominated(reports: list[Candidate], group: list[dict]) -> list[dict]:
    """Drop a candidate when another of the same (model, pool) and power mode is at least as good in every respect.

    Safe: swapping the dominated configuration for the dominating one with the same replica
    count keeps every constraint satisfied and does not raise the objective.
    """
    drop = set()
    for i, a in enumerate(group):
        for j, b in enumerate(group):
            if i == j or j in drop or a["records"].power_mode != b["records"].power_mode:
                continue
            better_eq = (b["cap_rps"] >= a["cap_rps"] and b["energy_j"] <= a["energy_j"]
                         and all(x <= y for x, y in zip(b["res"], a["res"])))
            strictly = (b["cap_rps"] > a["cap_rps"] or b["energy_j"] < a["energy_j"]
                        or any(x < y for x, y in zip(b["res"], a["res"])) or j < i)
            if better_eq and strictly:
                drop.add(i)
                rep = reports[a["report_index"]]
                rep.status = "dominated"
                rep.detail = f"{b['records'].config_id} serves at least as much with no more energy or resources"
                break
    return [e for k, e in enumerate(group) if k not in drop]
