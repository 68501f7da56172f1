"""Planner speed and the cost of its restrictions: offline solve time and gap per back-end for growing sizes.

    python experiments/bench_planner.py [--quick] [--solvers highs,cpsat,scip,cbc] [--time-limit 60]

Prints two tables: (1) time to a 1% gap per size and back-end (for HiGHS also with the lexicographic phases
solved one by one, ``optimistic=False``: the path taken when the one-solve shortcut has no plan, e.g. when not
every model can be served with full headroom; "build s" is candidates + model, "solve s" the plan's solver
seconds, which include re-building the model); (2) on small instances, the plan with
shared servers limited to ``shared_configs=3`` configurations per (model, pool) against the unrestricted
model (every configuration offered), and against no shared servers at all.  Every number of one table
comes from the same run, side by side, so ratios are meaningful on a noisy machine; absolute seconds are
this machine's.  The online stage's speed is in ``experiments/bench_online.py``.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from synergai.planner import PlanOptions, available_solvers, plan_offline
from synergai.planner.offline import build_model
from synergai.planner.synthetic import random_instance

SIZES = [(10, 5, 10), (30, 10, 20), (100, 20, 30)]
QUICK_SIZES = [(10, 5, 10), (30, 10, 20)]


def offline(sizes, solvers, time_limit, gap, console, phased=True):
    t = Table(title=f"offline MILP: time to a {gap:.0%} gap (limit {time_limit:g} s)")
    for c in (
        "pools x models x configs",
        "dedicated",
        "shared",
        "integers",
        "rows",
        "build s",
        "solver",
        "solve s",
        "status",
        "gap",
        "unserved req/s",
        "phases",
    ):
        t.add_column(c, justify="right")
    for P, M, C in sizes:
        prof, cl, wl = random_instance(42, n_pools=P, n_models=M, n_configs=C, max_nodes=8, load=0.4 * P / 10)
        t0 = time.perf_counter()
        milp, lay, cands = build_model(prof, cl, wl, PlanOptions())
        t1 = time.perf_counter()
        runs = [(s, s, PlanOptions()) for s in solvers]
        if phased and "highs" in solvers:  # the phase-by-phase path (taken when the one-solve shortcut fails)
            runs.append(("highs", "highs, phases", PlanOptions(optimistic=False)))
        for s, label, opts in runs:
            if s == "cbc" and P * M * C > 6000:
                t.add_row(f"{P}x{M}x{C}", "", "", "", "", "", s, "skipped", "(too slow: PuLP build + CBC)", "", "", "")
                continue
            plan = plan_offline(prof, cl, wl, solver=s, time_limit=time_limit, gap=gap, options=opts)
            r = plan.solver
            t.add_row(
                f"{P}x{M}x{C}",
                str(lay.K),
                str(lay.J),
                str(int(milp.integer.sum())),
                str(milp.n_rows),
                f"{t1 - t0:.2f}",
                label,
                f"{r.seconds:.2f}",
                r.status,
                "n/a" if r.gap is None else f"{r.gap:.2%}",
                f"{plan.unserved_rate():.1f}",
                " ".join(f"{p['phase']}:{p['seconds']:.1f}" for p in r.phases),
            )
    console.print(t)
    return t


def restriction(console, seeds=range(12), time_limit=60.0):
    """Loss of offering shared servers at most 3 configurations per (model, pool), on small instances."""
    t = Table(title="shared-server restriction on small instances (same run): unserved req/s and energy W")
    for c in (
        "seed",
        "no shared: unserved",
        "k=3: unserved",
        "all configs: unserved",
        "no shared: W",
        "k=3: W",
        "all configs: W",
        "k=3 s",
        "all s",
    ):
        t.add_column(c, justify="right")
    for seed in seeds:
        prof, cl, wl = random_instance(seed, n_pools=3, n_models=4, n_configs=6, max_nodes=3, load=1.2)
        row = [str(seed)]
        plans = []
        secs = []
        for opts in (PlanOptions(shared_servers=False), PlanOptions(shared_configs=3), PlanOptions(shared_configs=0)):
            t0 = time.perf_counter()
            plans.append(plan_offline(prof, cl, wl, gap=1e-6, time_limit=time_limit, options=opts))
            secs.append(time.perf_counter() - t0)
        row += [f"{p.unserved_rate():.2f}" for p in plans]
        row += [f"{p.solver.objective:.1f}" if p.solver.objective is not None else "n/a" for p in plans]
        row += [f"{secs[1]:.2f}", f"{secs[2]:.2f}"]
        t.add_row(*row)
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes only")
    ap.add_argument("--solvers", default=",".join(available_solvers()))
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--gap", type=float, default=0.01)
    ap.add_argument("--skip-restriction", action="store_true")
    a = ap.parse_args()
    console = Console(width=220)
    sizes = QUICK_SIZES if a.quick else SIZES
    offline(sizes, [s for s in a.solvers.split(",") if s], a.time_limit, a.gap, console)
    if not a.skip_restriction:
        restriction(console, range(4) if a.quick else range(12))


if __name__ == "__main__":
    main()
