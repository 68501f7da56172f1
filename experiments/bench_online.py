"""Decision cost of the online stage (``planner.OnlineScheduler``) against the number of servers.

    python -m synergai.experiments.bench_online [--per-server 40] [--sizes 10,100,1000] [--repeats 2]

Synthetic plan: 4 models, 3 pools (two edge pools, RTT 2 and 5 ms, batch 1; one cloud pool, RTT 20 ms,
batch 4), log-normal calls (p50 5-40 ms, sigma 0.3).  ``dedicated``: every model has one group per pool,
N servers per model in all (4 N servers).  ``shared``: one group per pool whose servers host all 4 models,
N servers in all, so a model can use N servers and shares them with the others.  Poisson arrivals at
``load`` times the servers' usable capacity (each model in proportion to its capacity), completions fed back with
``complete()`` once their end of service (a draw of the profiled service law) has passed; the same number of arrivals per server at every
size (``--per-server``), so overload builds the same backlog per server.  The second half of the replay is timed per call with
``perf_counter`` (wall time; ``assign`` and ``complete`` separately) and as a whole with the process CPU time
(loop overhead subtracted; per request, its ``complete`` included), which a loaded machine inflates less.
Each cell is the fastest of ``--repeats`` interleaved runs; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import math
import os
import random
import time
from bisect import bisect_right

from synergai.models import ModelDemand, NodePool
from synergai.models.plan import Assignment, ConfigChoice, Plan, Server, SolverReport
from synergai.planner.online import OVERLOAD_RULES, OnlineScheduler
from synergai.planner.service import Z90, Z99, ServiceModel, fixed_delay

MODELS = ("m0", "m1", "m2", "m3")
POOLS = (("edge-a", "edge", 2.0, 1), ("edge-b", "edge", 5.0, 1), ("cloud", "cloud", 20.0, 4))


def _cfg(p50: float, batch: int) -> ConfigChoice:
    s = 0.3
    return ConfigChoice(
        config_id=f"e/fp32/b{batch}",
        engine="e",
        precision="fp32",
        batch_size=batch,
        power_mode="default",
        accelerator="none",
        latency_p50_ms=p50,
        latency_p90_ms=p50 * math.exp(s * Z90),
        latency_p99_ms=p50 * math.exp(s * Z99),
        throughput_rps=batch * 1000.0 / p50,
        power_w=10.0,
        cpu_cores=1,
        memory_request_mb=100,
        accelerators=0,
    )


def synthetic_plan(n: int, shared: bool, seed: int = 0) -> tuple[Plan, float, list[float]]:
    """(plan, usable capacity in req/s, model mix that loads every model's servers evenly)."""
    rng = random.Random(seed)
    p50 = {(m, p[0]): rng.uniform(5.0, 40.0) * (2.0 if p[3] > 1 else 1.0) for m in MODELS for p in POOLS}
    pools = [
        NodePool(
            name=name,
            device=f"d-{name}",
            architecture="arm64",
            tier=tier,
            nodes=10_000,
            cpu=8,
            memory_mb=8192,
            rtt_ms=rtt,
        )
        for name, tier, rtt, _ in POOLS
    ]
    # every group meets its deadline when idle, with half of its p99 response to spare for queueing
    deadlines = {
        m: 1.5e3 * max(fixed_delay(ServiceModel.of(_cfg(p50[(m, p[0])], p[3])), 0.99, p[2] / 1e3) for p in POOLS)
        for m in MODELS
    }
    per_pool = [n // len(POOLS) + (1 if i < n % len(POOLS) else 0) for i in range(len(POOLS))]
    servers, assigns = [], []
    capacity = {m: 0.0 for m in MODELS}  # req/s of each model if it had its servers to itself
    for (name, _, _, batch), k in zip(POOLS, per_pool):
        groups = [(f"{name}-shared", list(MODELS))] if shared else [(f"{name}-{m}", [m]) for m in MODELS]
        for gname, hosted in groups:
            cfgs = {m: _cfg(p50[(m, name)], batch) for m in hosted}
            for m, c in cfgs.items():
                capacity[m] += k / ServiceModel.of(c).work_per_request
            servers.append(
                Server(
                    name=gname,
                    pool=name,
                    replicas=k,
                    shared=len(hosted) > 1,
                    cpu_cores=1,
                    memory_mb=100,
                    models=hosted,
                    routed_rate_rps=0.0,
                    utilisation=0.0,
                    max_utilisation=0.9,
                )
            )
            for m, c in cfgs.items():
                assigns.append(
                    Assignment(
                        model=m,
                        pool=name,
                        server=gname,
                        config=c,
                        replicas=k,
                        routed_rate_rps=k / ServiceModel.of(c).work_per_request,
                        utilisation=0.0,
                        max_utilisation=0.9,
                        predicted_latency_ms=0.0,
                        energy_w=0.0,
                    )
                )
    plan = Plan(
        pools=pools,
        demands=[ModelDemand(model=m, rate_rps=1.0, deadline_ms=d) for m, d in deadlines.items()],
        servers=servers,
        assignments=assigns,
        solver=SolverReport(backend="bench", status="optimal", seconds=0),
    )
    # models arrive in proportion to their capacity; shared servers are split between the models
    total = sum(capacity.values()) / (len(MODELS) if shared else 1)
    return plan, total, [capacity[m] / sum(capacity.values()) for m in MODELS]


def _ops(plan: Plan, capacity: float, mix: list[float], rule: str, load: float, arrivals: int, seed: int):
    """The replay as a list of operations: ("a", model, now) and ("c", index of the assign, end, start).
    Built by running it once (the scheduler is deterministic, so replays decide the same)."""
    sched = OnlineScheduler(plan, overload=rule, clock=lambda: 0.0)
    rng = random.Random(seed)
    rate = load * capacity
    cum = [sum(mix[: i + 1]) for i in range(len(mix))]
    pending: list = []  # (actual end of service, assign index, decision, actual start of the call)
    ops: list = []
    t = 0.0
    for i in range(arrivals):
        t += rng.expovariate(rate)
        while pending and pending[0][0] <= t:
            end, j, d, call_start = heapq.heappop(pending)
            ops.append(("c", j, end, call_start))
            sched.complete(d, end, call_start)
        m = MODELS[min(bisect_right(cum, rng.random()), len(MODELS) - 1)]
        ops.append(("a", m, t))
        d = sched.assign(m, now=t)
        if d.replica >= 0:  # the call really lasts a draw of the profiled law (not the drift-scaled estimate)
            g = sched.groups[d.group]
            call_start = d.end_s - g.mean_s  # the estimated start, plus the batch wait if the server was idle
            heapq.heappush(pending, (call_start + g.sm.draw(rng.gauss(0.0, 1.0)), i, d, call_start))
    return ops


def run(plan: Plan, capacity: float, mix: list[float], rule: str, load: float, per_server: int, seed: int = 1) -> dict:
    """Replay ``per_server`` Poisson arrivals per server; the first half warms the queues up, the second is
    timed twice: per call (wall clock) and as a whole (process CPU time, loop overhead subtracted)."""
    arrivals = per_server * sum(g.replicas for g in plan.server_groups())
    ops = _ops(plan, capacity, mix, rule, load, arrivals, seed)
    gc.collect()
    gc.disable()  # the replay keeps every decision alive: cyclic GC passes would grow with the run's length
    try:
        return _timed(plan, rule, ops)
    finally:
        gc.enable()


def _timed(plan: Plan, rule: str, ops: list) -> dict:
    half = next(k for k, op in enumerate(ops) if op[0] == "a" and k >= len(ops) // 2)
    perf = time.perf_counter
    # per call, wall clock
    sched = OnlineScheduler(plan, overload=rule, clock=lambda: 0.0)
    ds: list = []
    t_a = t_c = 0.0
    n_a = n_c = meets = shed = 0
    for k, op in enumerate(ops):
        timed = k >= half
        t0 = perf()
        if op[0] == "a":
            d = sched.assign(op[1], now=op[2])
            dt = perf() - t0
            ds.append(d)
            if timed:
                t_a += dt
                n_a += 1
                meets += d.meets
                shed += d.shed
        else:
            sched.complete(ds[op[1]], op[2], op[3])
            dt = perf() - t0
            if timed:
                t_c += dt
                n_c += 1
    # as a whole, CPU time: the same replay, and the same loop without the scheduler
    cpu = time.process_time
    sched = OnlineScheduler(plan, overload=rule, clock=lambda: 0.0)
    ds = []
    assign, complete, append = sched.assign, sched.complete, ds.append
    for op in ops[:half]:
        if op[0] == "a":
            append(assign(op[1], now=op[2]))
        else:
            complete(ds[op[1]], op[2], op[3])
    c0 = cpu()
    for op in ops[half:]:
        if op[0] == "a":
            append(assign(op[1], now=op[2]))
        else:
            complete(ds[op[1]], op[2], op[3])
    c1 = cpu()
    for op in ops[half:]:
        if op[0] == "a":
            append(op)
        else:
            ds[op[1]]
    c2 = cpu()
    return {
        "us_assign": t_a / n_a * 1e6,
        "us_complete": t_c / max(1, n_c) * 1e6,
        "cpu_us_event": max(0.0, (c1 - c0) - (c2 - c1)) / n_a * 1e6,
        "meets": meets / n_a,
        "shed": shed / n_a,
        "servers": sched.n_replicas,
    }


def reference_ns() -> float:
    """ns per iteration of an empty Python loop now (to compare runs on a loaded machine)."""
    t0 = time.perf_counter()
    for _ in range(1_000_000):
        pass
    return (time.perf_counter() - t0) * 1e3


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-server", type=int, default=60, help="arrivals per server and run (half warm up)")
    ap.add_argument("--sizes", default="10,100,1000", help="servers per model")
    ap.add_argument(
        "--loads", default="0.8,2", help="offered load / usable capacity (a lower bound for shared servers)"
    )
    ap.add_argument("--repeats", type=int, default=2, help="runs per cell, interleaved; the fastest is kept")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    loads = [float(x) for x in args.loads.split(",")]
    ref = [reference_ns()]
    print(
        "| layout | rule | load | servers/model | servers | us/assign (wall) | assigns/s | x vs smallest "
        "| us/complete (wall) | CPU us/request (assign + its complete) | x vs smallest | met | shed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for shared in (False, True):
        plans = {n: synthetic_plan(n, shared) for n in sizes}
        for rule in OVERLOAD_RULES:
            for load in loads:
                best: dict = {}
                cpus: dict = {n: [] for n in sizes}
                for _ in range(args.repeats):  # interleaved, so a burst of load on the machine hits every size
                    for n in sizes:
                        r = run(*plans[n], rule, load, args.per_server)
                        cpus[n].append(r)
                        if n not in best or r["us_assign"] < best[n]["us_assign"]:
                            best[n] = r
                base = best[sizes[0]]["us_assign"]
                cbase = max(1e-9, min(r["cpu_us_event"] for r in cpus[sizes[0]]))
                for n in sizes:
                    r = best[n]
                    c = min(x["cpu_us_event"] for x in cpus[n])
                    print(
                        f"| {'shared' if shared else 'dedicated'} | {rule} | {load:g} | {n:,} | {r['servers']:,} "
                        f"| {r['us_assign']:.2f} | {1e6 / r['us_assign']:,.0f} | {r['us_assign'] / base:.2f} "
                        f"| {r['us_complete']:.2f} | {c:.2f} | {c / cbase:.2f} | {r['meets']:.1%} "
                        f"| {r['shed']:.1%} |",
                        flush=True,
                    )
        ref.append(reference_ns())
    ref.append(reference_ns())
    print(
        f"\nempty Python loop iteration: {min(ref):.0f}-{max(ref):.0f} ns during the run "
        f"(about 15-25 ns on an idle core); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
