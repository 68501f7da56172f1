"""Sweeps: scenario x load x seed x policy -> ``results.csv`` (+ ``utilisation.csv``, ``optimal.csv``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from synergai.models import InputError
from synergai.planner import PlanOptions

from .optimal import solve_best
from .policies import POLICIES, RunContext, get_policy
from .scenarios import Scenario, SkipScenario, build_instance, load_scenarios, make_arrivals
from .sim import simulate

RESULT_COLUMNS = ["scenario", "policy", "seed", "load", "rate_rps", "capacity_rps", "requests", "violations",
                  "violation_rate", "excess_ms_total", "excess_ms_mean", "late_ms_mean", "p50_latency_ms",
                  "p95_latency_ms", "p99_latency_ms", "energy_j", "decision_us_mean", "decision_us_p99", "replicas",
                  "unplaced", "headline", "status", "note"]
#: Columns that hold measured wall time (they differ between identical runs; everything else must not).
TIMING_COLUMNS = ["decision_us_mean", "decision_us_p99"]


def scenario_policies(sc: Scenario, override: Optional[list[str]]) -> list[str]:
    names = override if override is not None else (sc.policies or [n for n, c in POLICIES.items()
                                                                   if not c.optimal or sc.optimal is not None])
    for n in names:
        get_policy(n)
    if sc.optimal is None:
        names = [n for n in names if not POLICIES[n].optimal]
    return names


def run_sweep(scenarios: list[Scenario], *, quick: bool = False, seeds: Optional[int] = None,
              policies: Optional[list[str]] = None, progress: Optional[Callable[[str, int], None]] = None,
              log: Callable[[str], None] = print) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run every scenario; returns (results, utilisation, optimal gap) frames."""
    rows, util_rows, opt_rows = [], [], []
    for sc0 in scenarios:
        sc = sc0.reduced(quick)
        if seeds is not None:
            sc = sc.model_copy(update={"seeds": list(range(seeds))})
        names = scenario_policies(sc, policies)
        online = [n for n in names if not POLICIES[n].optimal]
        want_opt = any(POLICIES[n].optimal for n in names)
        for load in sc.loads:
            try:
                inst = build_instance(sc, load)
            except SkipScenario as e:
                log(f"skipping scenario {sc.name}: {e}")
                if progress:
                    progress(sc.name, len(sc.seeds) * len(names) * (len(sc.loads)))
                break
            plans: dict = {}
            opts = PlanOptions(load_scenarios=load_scenarios(sc.arrivals))
            for seed in sc.seeds:
                arr = make_arrivals(inst, seed)
                deps = []
                base = dict(scenario=sc.name, seed=seed, load=load, rate_rps=sum(d.rate_rps for d in inst.workload.models),
                            capacity_rps=inst.capacity_rps, headline=sc.headline)
                for name in online:
                    try:
                        pol, dep = _deploy(name, inst, seed, arr, plans, opts)
                    except InputError as e:
                        rows.append({**base, "policy": name, "requests": len(arr), "status": "error", "note": str(e)})
                        if progress:
                            progress(sc.name, 1)
                        continue
                    res = simulate(arr, dep, pol, truth=inst.truth)
                    deps.append(dep)
                    m = res.metrics
                    rows.append({**base, "policy": name, **{k: m[k] for k in m if k in RESULT_COLUMNS},
                                 "status": "ok", "note": "; ".join(dep.notes)})
                    for pool, u in res.pool_util.items():
                        util_rows.append({"scenario": sc.name, "policy": name, "seed": seed, "load": load,
                                          "pool": pool, "utilisation": u})
                    if progress:
                        progress(sc.name, 1)
                if want_opt and sc.optimal is not None:
                    head = arr.head(min(sc.optimal.n, len(arr)))
                    best, _ = solve_best(head, deps, truth=inst.truth, time_limit=sc.optimal.time_limit)
                    rows.append({**base, "policy": "optimal", "requests": len(head), "violations": best.violations,
                                 "violation_rate": (best.violations / len(head)) if best.violations is not None else math.nan,
                                 "excess_ms_total": best.excess_ms_total,
                                 "excess_ms_mean": (best.excess_ms_total / len(head)) if best.excess_ms_total is not None else math.nan,
                                 "status": best.status, "note": f"deployment {best.deployment}; {best.seconds:.1f} s; {best.message}".strip("; ")})
                    for name in online:
                        try:
                            pol, dep = _deploy(name, inst, seed, head, plans, opts)
                        except InputError:
                            continue
                        r = simulate(head, dep, pol, truth=inst.truth)
                        opt_rows.append({"scenario": sc.name, "load": load, "seed": seed, "policy": name,
                                         "requests": len(head), "violations": r.metrics["violations"],
                                         "excess_ms_total": r.metrics["excess_ms_total"],
                                         "optimal_violations": best.violations, "optimal_status": best.status,
                                         "optimal_excess_ms_total": best.excess_ms_total})
                    if progress:
                        progress(sc.name, 1)
    res = pd.DataFrame(rows)
    for c in RESULT_COLUMNS:
        if c not in res.columns:
            res[c] = pd.NA
    return res[RESULT_COLUMNS], pd.DataFrame(util_rows), pd.DataFrame(opt_rows)


def _deploy(name: str, inst, seed: int, arrivals, plans: dict, opts: PlanOptions):
    """A fresh policy for one run and its deployment (plans are shared through ``plans``)."""
    ctx = RunContext(inst.profiles, inst.cluster, inst.workload, seed=seed, arrivals=arrivals, plans=plans,
                     options=opts)
    pol = get_policy(name)(ctx)
    return pol, pol.deploy()


def count_tasks(scenarios: list[Scenario], quick: bool, seeds: Optional[int], policies: Optional[list[str]]) -> int:
    total = 0
    for sc0 in scenarios:
        sc = sc0.reduced(quick)
        ns = seeds if seeds is not None else len(sc.seeds)
        total += len(sc.loads) * ns * len(scenario_policies(sc, policies))
    return total


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
