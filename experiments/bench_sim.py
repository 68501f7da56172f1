"""Simulator throughput: 1,000,000 Poisson arrivals across ~1,000 replicas (not a timed test).

The default cluster's node counts are multiplied until SynergAI's plan has about 1,000 servers (shared or
dedicated); the workload is the default mix at 0.8 of that cluster's capacity. Simulation time is reported
as wall time and as the process's CPU time (the figure to compare on a machine shared with other work).
Usage::

    python -m synergai.experiments.bench_sim [--arrivals 1000000] [--replicas 1000] [--policies synergai,slo-mael,round-robin]
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from .policies import RunContext, get_policy
from .scenarios import Scenario, build_instance, make_arrivals
from .sim import simulate


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrivals", type=int, default=1_000_000)
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--policies", default="synergai,slo-mael,round-robin")
    ap.add_argument("--load", type=float, default=0.8)
    a = ap.parse_args(argv)
    console = Console(width=150)

    def instance(k: float):
        sc = Scenario.model_validate(
            {
                "name": "bench",
                "cluster": {"edge_nodes": k, "cloud_nodes": k},
                "arrivals": {"process": "poisson", "n": a.arrivals},
                "loads": [a.load],
            }
        )
        return build_instance(sc, a.load)

    k, inst = 1.0, instance(1.0)
    for _ in range(12):
        ctx = RunContext(inst.profiles, inst.cluster, inst.workload)
        n_rep = sum(g.replicas for g in ctx.plan().server_groups())
        if n_rep >= a.replicas * 0.9:
            break
        k *= max(1.2, min(4.0, a.replicas / max(n_rep, 1)))
        inst = instance(k)
    t0 = time.perf_counter()
    arr = make_arrivals(inst, 0)
    gen_s = time.perf_counter() - t0
    table = Table(
        title=f"simulator benchmark (node counts x{k:.1f}, capacity {inst.capacity_rps:,.0f} req/s, "
        f"load {a.load}; arrivals generated in {gen_s:.2f} s)"
    )
    for c in (
        "arrivals",
        "servers",
        "shared",
        "policy",
        "deploy s",
        "simulate s",
        "cpu s",
        "arrivals/s (cpu)",
        "decision us",
        "violation rate",
    ):
        table.add_column(c, justify="right" if c not in ("policy",) else "left")
    for name in [p.strip() for p in a.policies.split(",") if p.strip()]:
        ctx = RunContext(inst.profiles, inst.cluster, inst.workload, arrivals=arr)
        t0 = time.perf_counter()
        pol = get_policy(name)(ctx)
        dep = pol.deploy()
        t1 = time.perf_counter()
        c1 = time.process_time()
        res = simulate(arr, dep, pol)
        c2 = time.process_time()
        t2 = time.perf_counter()
        shared = sum(1 for r in dep.replicas if r.shared)
        table.add_row(
            f"{len(arr):,}",
            f"{len(dep):,}",
            f"{shared:,}",
            name,
            f"{t1 - t0:.2f}",
            f"{t2 - t1:.2f}",
            f"{c2 - c1:.2f}",
            f"{len(arr) / (c2 - c1):,.0f}",
            f"{res.metrics['decision_us_mean']:.2f}",
            f"{res.metrics['violation_rate']:.4f}",
        )
        console.print(f"{name}: {t2 - t1:.1f} s")
    console.print(table)


if __name__ == "__main__":
    main()
