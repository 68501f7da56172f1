"""Planner speed: offline solve time and gap per back-end for growing sizes; online decisions per second.

    python experiments/bench_planner.py [--quick] [--solvers highs,cpsat,scip,cbc] [--time-limit 60]

Prints two tables.  Every number of one table comes from the same run, side by side, so
ratios are meaningful on a noisy machine; absolute seconds are this machine's.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from synergai.models import ModelDemand, WorkloadSpec
from synergai.planner import OnlineScheduler, PlanOptions, available_solvers, plan_offline
from synergai.planner.candidates import build_candidates
from synergai.planner.milp import build_milp
from synergai.planner.synthetic import random_instance

SIZES = [(10, 5, 10), (30, 10, 20), (100, 20, 30)]
QUICK_SIZES = [(10, 5, 10), (30, 10, 20)]


def offline(sizes, solvers, time_limit, gap, console):
    t = Table(title=f"offline MILP: time to a {gap:.0%} gap (limit {time_limit:g} s)")
    for c in ("pools x models x configs", "candidates", "binaries+ints", "rows", "data s", "build s", "solver",
              "solve s", "status", "gap", "unserved req/s"):
        t.add_column(c, justify="right")
    for (P, M, C) in sizes:
        prof, cl, wl = random_instance(42, n_pools=P, n_models=M, n_configs=C, max_nodes=8, load=0.4 * P / 10)
        t0 = time.perf_counter()
        cands = build_candidates(prof, cl, wl, PlanOptions())
        t1 = time.perf_counter()
        milp = build_milp(cands, [(d.rate_rps, d.priority) for d in wl.models],
                          [(p.cpu, p.memory_mb, float(p.accelerators), p.nodes) for p in cl.pools], PlanOptions())
        t2 = time.perf_counter()
        for s in solvers:
            if s == "cbc" and P * M * C > 6000:
                t.add_row(f"{P}x{M}x{C}", "", "", "", "", "", s, "skipped", "(too slow: PuLP build + CBC)", "", "")
                continue
            plan = plan_offline(prof, cl, wl, solver=s, time_limit=time_limit, gap=gap)
            r = plan.solver
            t.add_row(f"{P}x{M}x{C}", str(len(cands)), str(int(milp.integer.sum())), str(milp.n_rows),
                      f"{t1 - t0:.2f}", f"{t2 - t1:.3f}", s, f"{r.seconds:.2f}", r.status,
                      "n/a" if r.gap is None else f"{r.gap:.2%}", f"{plan.unserved_rate():.1f}")
        console.print(t) if (P, M, C) == sizes[-1] else None
    return t


def online(console, n_decisions=50_000):
    t = Table(title="online stage: decisions per second (one model, replicas spread over 4 pools)")
    for c in ("replicas per model", "decisions", "us/decision", "decisions/s"):
        t.add_column(c, justify="right")
    prof, cl, _ = random_instance(5, n_pools=4, n_models=1, n_configs=3, max_nodes=1)
    for reps in (10, 100, 1000):
        # scale the cluster so the plan has ~reps replicas of the model
        pools = [p.model_copy(update={"nodes": max(1, reps // 4), "cpu": 64.0, "memory_mb": 1e6,
                                      "accelerators": 8}) for p in cl.pools]
        cl2 = cl.model_copy(update={"pools": pools})
        wl = WorkloadSpec(models=[ModelDemand(model="m0", rate_rps=1e9, deadline_ms=1000.0)])
        plan = plan_offline(prof, cl2, wl)
        # trim replicas to the target count, proportionally
        tot = sum(a.replicas for a in plan.assignments)
        for a in plan.assignments:
            a.replicas = max(1, round(a.replicas * reps / tot))
        sched = OnlineScheduler(plan)
        rng = np.random.default_rng(0)
        times = np.cumsum(rng.exponential(1e-4, n_decisions))
        t0 = time.perf_counter()
        for now in times:
            sched.assign("m0", 50.0, float(now))
        el = time.perf_counter() - t0
        t.add_row(str(sched.n_replicas), str(n_decisions), f"{el / n_decisions * 1e6:.2f}", f"{n_decisions / el:,.0f}")
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes only")
    ap.add_argument("--solvers", default=",".join(available_solvers()))
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--gap", type=float, default=0.01)
    a = ap.parse_args()
    console = Console(width=200)
    sizes = QUICK_SIZES if a.quick else SIZES
    offline(sizes, [s for s in a.solvers.split(",") if s], a.time_limit, a.gap, console)
    online(console)


if __name__ == "__main__":
    main()
