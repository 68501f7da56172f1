"""Sweeps: scenario x load x seed x policy -> ``results.csv`` (+ ``utilisation.csv``, ``optimal.csv``).

The unit of work is a *cell*: one (scenario, load) with all its seeds and policies (the policies' plans are
shared across seeds). Cells run in this process (``jobs=1``), in local worker processes (``jobs=N``) or on a
Ray cluster (``ray="ADDRESS"``); every cell is deterministic given its scenario, load and seeds, and results
are assembled in cell order, so the output does not depend on how cells were scheduled.

Load factors are fractions of the scenario's neutral capacity (``experiments.capacity``), the same for every
policy; ``rate_rps`` and ``capacity_rps`` give the absolute rates.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from synergai.models import InputError
from synergai.planner import PlanOptions

from .optimal import solve_best
from .policies import POLICIES, RunContext, get_policy
from .scenarios import (
    DataOptions,
    Scenario,
    SkipScenario,
    build_instance,
    cluster_label,
    make_arrivals,
    run_loads,
    trace_windows,
)
from .sim import simulate

RESULT_COLUMNS = [
    "scenario",
    "cluster",
    "policy",
    "seed",
    "load",
    "rate_rps",
    "capacity_rps",
    "requests",
    "violations",
    "violation_rate",
    "excess_ms_total",
    "excess_ms_mean",
    "late_ms_mean",
    "late_p50_dl",
    "late_p99_dl",
    "late_max_dl",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "energy_j",
    "serving_energy_j",
    "idle_energy_j",
    "energy_j_per_request",
    "decision_us_mean",
    "decision_us_p99",
    "replicas",
    "unplaced",
    "shed",
    "headline",
    "status",
    "note",
]
#: Columns that hold measured wall time (they differ between identical runs; everything else must not).
TIMING_COLUMNS = ["decision_us_mean", "decision_us_p99"]


def default_jobs() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def scenario_policies(sc: Scenario, override: Optional[list[str]]) -> list[str]:
    names = (
        override
        if override is not None
        else (sc.policies or [n for n, c in POLICIES.items() if not c.optimal or sc.optimal is not None])
    )
    for n in names:
        get_policy(n)
    if sc.optimal is None:
        names = [n for n in names if not POLICIES[n].optimal]
    return names


@dataclass
class Cell:
    """One (scenario, load): every seed and policy."""

    scenario: Scenario
    load: float
    policies: list[str]
    data: Optional[DataOptions] = None

    @property
    def tasks(self) -> int:
        want_opt = any(POLICIES[n].optimal for n in self.policies) and self.scenario.optimal is not None
        return len(self.scenario.seeds) * len([n for n in self.policies if not POLICIES[n].optimal]) + (
            len(self.scenario.seeds) if want_opt else 0
        )


@dataclass
class CellResult:
    rows: list = field(default_factory=list)
    util: list = field(default_factory=list)
    opt: list = field(default_factory=list)
    skip: str = ""
    error: str = ""


def prepare(
    scenarios: list[Scenario],
    *,
    quick: bool = False,
    seeds: Optional[int] = None,
    policies: Optional[list[str]] = None,
    data: Optional[DataOptions] = None,
    arrivals: Optional[int] = None,
) -> list[Cell]:
    cells = []
    for sc0 in (x for s in scenarios for x in s.on_clusters(data)):
        sc = sc0.reduced(quick)
        if seeds is not None:
            sc = sc.model_copy(update={"seeds": list(range(seeds))})
        if arrivals is not None:
            sc = sc.model_copy(update={"arrivals": sc.arrivals.model_copy(update={"n": int(arrivals)})})
        names = scenario_policies(sc, policies)
        for load in run_loads(sc):
            cells.append(Cell(sc, load, names, data))
    return cells


def run_cell(cell: Cell, progress: Optional[Callable[[str, int], None]] = None) -> CellResult:
    """Run one cell. Never raises for bad input: the one-line message comes back in ``error``."""
    try:
        return _run_cell(cell, progress)
    except SkipScenario as e:
        return CellResult(skip=str(e))
    except InputError as e:
        return CellResult(error=str(e))


def _run_cell(cell: Cell, progress) -> CellResult:
    sc, load, names = cell.scenario, cell.load, cell.policies
    out = CellResult()
    online = [n for n in names if not POLICIES[n].optimal]
    want_opt = any(POLICIES[n].optimal for n in names)
    inst = build_instance(sc, load, cell.data)
    plans: dict = {}
    opts = PlanOptions(load_scenarios=inst.load_scenarios)
    if cell.data is not None and cell.data.skip_unprofiled:
        opts.skip_unprofiled = True
    for seed in sc.seeds:
        arr = make_arrivals(inst, seed)
        deps = []
        base = dict(
            scenario=sc.name,
            cluster=cluster_label(sc, cell.data),
            seed=seed,
            load=round(inst.load, 6),
            rate_rps=sum(d.rate_rps for d in inst.workload.models),
            capacity_rps=inst.capacity_rps,
            headline=sc.headline,
        )
        for name in online:
            try:
                pol, dep = _deploy(name, inst, seed, arr, plans, opts)
            except InputError as e:
                out.rows.append({**base, "policy": name, "requests": len(arr), "status": "error", "note": str(e)})
                if progress:
                    progress(sc.name, 1)
                continue
            res = simulate(arr, dep, pol, truth=inst.truth)
            deps.append(dep)
            m = res.metrics
            out.rows.append(
                {
                    **base,
                    "policy": name,
                    **{k: m[k] for k in m if k in RESULT_COLUMNS},
                    **lateness_stats(res),
                    "shed": int(getattr(pol, "shed", 0)),
                    "energy_j_per_request": m["energy_j"] / max(1, m["requests"]),
                    "status": "ok",
                    "note": "; ".join(dep.notes),
                }
            )
            for pool, u in res.pool_util.items():
                out.util.append(
                    {
                        "scenario": sc.name,
                        "policy": name,
                        "seed": seed,
                        "load": base["load"],
                        "pool": pool,
                        "utilisation": u,
                    }
                )
            if progress:
                progress(sc.name, 1)
        if want_opt and sc.optimal is not None:
            head = arr.head(min(sc.optimal.n, len(arr)))
            best, each = solve_best(head, deps, truth=inst.truth, time_limit=sc.optimal.time_limit)
            solved = "; ".join(f"{r.deployment}: {r.status}" for r in each)
            out.rows.append(
                {
                    **base,
                    "policy": "optimal",
                    "requests": len(head),
                    "violations": best.violations,
                    "violation_rate": (best.violations / len(head)) if best.violations is not None else math.nan,
                    "excess_ms_total": best.excess_ms_total,
                    "excess_ms_mean": (best.excess_ms_total / len(head))
                    if best.excess_ms_total is not None
                    else math.nan,
                    "status": best.status,
                    "note": f"deployment {best.deployment}; {best.seconds:.1f} s; {best.message}".strip("; "),
                }
            )
            for name in online:
                try:
                    pol, dep = _deploy(name, inst, seed, head, plans, opts)
                except InputError:
                    continue
                r = simulate(head, dep, pol, truth=inst.truth)
                out.opt.append(
                    {
                        "scenario": sc.name,
                        "load": base["load"],
                        "seed": seed,
                        "policy": name,
                        "requests": len(head),
                        "violations": r.metrics["violations"],
                        "excess_ms_total": r.metrics["excess_ms_total"],
                        "optimal_violations": best.violations,
                        "optimal_status": best.status,
                        "optimal_excess_ms_total": best.excess_ms_total,
                        "optimal_deployments": solved,
                    }
                )
            if progress:
                progress(sc.name, 1)
    return out


def lateness_stats(res) -> dict:
    """Violating requests' lateness in deadlines (p50, p99, max; unplaced requests count as one deadline
    late, as the simulator's lateness does); 0 when nothing violated."""
    v = res.violated
    if not v.any():
        return {"late_p50_dl": 0.0, "late_p99_dl": 0.0, "late_max_dl": 0.0}
    x = res.lateness[v] / res.deadline[v]
    return {
        "late_p50_dl": float(np.percentile(x, 50)),
        "late_p99_dl": float(np.percentile(x, 99)),
        "late_max_dl": float(x.max()),
    }


def _run_cell_remote(cell: Cell) -> CellResult:  # picklable top-level entry for worker processes
    return run_cell(cell)


def run_sweep(
    scenarios: list[Scenario],
    *,
    quick: bool = False,
    seeds: Optional[int] = None,
    policies: Optional[list[str]] = None,
    progress: Optional[Callable[[str, int], None]] = None,
    log: Callable[[str], None] = print,
    data: Optional[DataOptions] = None,
    jobs: int = 1,
    ray: Optional[str] = None,
    arrivals: Optional[int] = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run every scenario; returns (results, utilisation, optimal gap) frames.

    A scenario that cannot run here (optional trace absent, variant not applicable to the given inputs) is
    skipped with one ``log`` line; bad input raises ``InputError`` (one line)."""
    cells = prepare(scenarios, quick=quick, seeds=seeds, policies=policies, data=data, arrivals=arrivals)
    skipped: set[str] = set()
    runnable = []
    for c in cells:  # absent optional traces: skip here, in order, before any worker starts
        name = c.scenario.name
        if name not in skipped:
            try:
                trace_windows(c.scenario, data)
            except SkipScenario as e:
                skipped.add(name)
                log(f"skipping scenario {name}: {e}")
        if name in skipped:
            if progress:
                progress(name, c.tasks)
            continue
        runnable.append(c)
    cells = runnable
    results: list[Optional[CellResult]] = [None] * len(cells)

    def done(i: int, r: CellResult, fine_grained: bool) -> None:
        results[i] = r
        name = cells[i].scenario.name
        if r.error:
            raise InputError(r.error)
        if r.skip and name not in skipped:
            skipped.add(name)
            log(f"skipping scenario {name}: {r.skip}")
        if progress and (r.skip or not fine_grained):
            progress(name, cells[i].tasks)

    if ray:
        _run_ray(cells, ray, done)
    elif jobs > 1 and len(cells) > 1:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        # fork where available: workers inherit the imported modules and caches (spawn re-imports ~3 s per
        # worker). Workers only simulate; they never touch the console the parent's progress thread uses.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(cells)), mp_context=ctx) as ex:
            pending = {ex.submit(_run_cell_remote, c): i for i, c in enumerate(cells)}
            try:
                while pending:
                    fin, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                    for f in fin:
                        done(pending.pop(f), f.result(), False)
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
    else:
        for i, c in enumerate(cells):
            if c.scenario.name in skipped:
                done(i, CellResult(skip="(see above)"), True)
                continue
            done(i, run_cell(c, progress), True)
    rows, util_rows, opt_rows = [], [], []
    for r in results:
        if r is not None:
            rows += r.rows
            util_rows += r.util
            opt_rows += r.opt
    res = pd.DataFrame(rows)
    for c in RESULT_COLUMNS:
        if c not in res.columns:
            res[c] = pd.NA
    return res[RESULT_COLUMNS], pd.DataFrame(util_rows), pd.DataFrame(opt_rows)


def _run_ray(cells: list[Cell], address: str, done) -> None:
    try:
        import ray
    except ImportError:
        raise InputError("Ray is not installed; pip install 'ray[default]'", field="--ray") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(_run_cell_remote)
    refs = {remote.remote(c): i for i, c in enumerate(cells)}
    pending = list(refs)
    while pending:
        fin, pending = ray.wait(pending, num_returns=1)
        for f in fin:
            done(refs[f], ray.get(f), False)


def _deploy(name: str, inst, seed: int, arrivals, plans: dict, opts: PlanOptions):
    """A fresh policy for one run and its deployment (plans are shared through ``plans``)."""
    ctx = RunContext(
        inst.profiles, inst.cluster, inst.workload, seed=seed, arrivals=arrivals, plans=plans, options=opts
    )
    pol = get_policy(name)(ctx)
    return pol, pol.deploy()


def count_tasks(
    scenarios: list[Scenario],
    quick: bool,
    seeds: Optional[int],
    policies: Optional[list[str]],
    data: Optional[DataOptions] = None,
    arrivals: Optional[int] = None,
) -> int:
    cells = prepare(scenarios, quick=quick, seeds=seeds, policies=policies, data=data, arrivals=arrivals)
    return sum(c.tasks for c in cells)


def write_outputs(out: Path, results: pd.DataFrame, util: pd.DataFrame, opt: pd.DataFrame) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.csv"]
    results.to_csv(paths[0], index=False, float_format="%.6g")
    if len(util):
        util.to_csv(out / "utilisation.csv", index=False, float_format="%.6g")
        paths.append(out / "utilisation.csv")
    if len(opt):
        opt.to_csv(out / "optimal.csv", index=False, float_format="%.6g")
        paths.append(out / "optimal.csv")
    return paths
