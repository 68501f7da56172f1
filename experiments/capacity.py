"""Neutral load: a policy-independent capacity of a cluster for a model mix.

Load 1.0 is an **upper bound** on the total request rate, at the scenario's model mix, that *any*
deployment of the cluster could serve within the deadlines. It is the optimum of a fluid linear program
over every deadline-feasible (model, configuration, pool) -- no queueing, no integrality, no per-node
packing, no one-power-mode-per-pool rule -- so no real deployment (SynergAI's included) can exceed it:

    maximise   t
    subject to sum_{k in K(m)} x_k = t * mix_m                       for every model m   (mix sums to 1)
               sum_{k in K(p)} x_k / mu_k * c_{k,r} <= n_p * C_{p,r}   for every pool p and resource r
               x_k >= 0

``x_k`` is the rate routed to candidate k = (model, profile configuration, pool), ``mu_k`` its
throughput per replica (req/s), ``c_{k,r}`` one replica's request of resource r (cpu cores, memory MiB,
accelerators), ``n_p`` the pool's node count and ``C_{p,r}`` a node's allocatable amount: a routed rate
x_k keeps x_k / mu_k replicas busy. A candidate is feasible when its architecture matches the pool's, one
replica fits on one node, and ``p99 + RTT + batch wait <= deadline`` (batch wait:
``planner.service.batch_wait_ms``). Solved with HiGHS through ``scipy.optimize.linprog``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

from synergai.models import ClusterSpec, ProfileTable, WorkloadSpec
from synergai.planner.service import batch_wait_ms

RESOURCES = ("cpu", "memory_mb", "accelerators")


@dataclass
class FluidCandidate:
    model: str
    pool: str
    config_id: str
    throughput_rps: float
    res: tuple[float, float, float]


@dataclass
class Capacity:
    """Result of :func:`neutral_capacity`."""

    total_rps: float
    per_model_rps: dict[str, float] = field(default_factory=dict)
    pool_use: dict[str, dict[str, float]] = field(default_factory=dict)  # pool -> resource -> fraction used
    unservable: list[str] = field(default_factory=list)  # models with no feasible candidate
    candidates: int = 0
    status: str = ""


def fluid_candidates(table: ProfileTable, cluster: ClusterSpec, workload: WorkloadSpec) -> list[FluidCandidate]:
    """Every deadline-feasible (model, configuration, pool) whose replica fits one node."""
    out = []
    for d in workload.models:
        for pool in cluster.pools:
            if pool.nodes <= 0:
                continue
            have = (pool.cpu, pool.memory_mb, float(pool.accelerators))
            for r in table.for_model_device(d.model, pool.device):
                if r.architecture != pool.architecture or not r.throughput_rps > 0:
                    continue
                if r.latency_p99_ms + pool.rtt_ms + batch_wait_ms(r) > d.deadline_ms:
                    continue
                need = (float(r.cpu_cores), float(r.memory_request_mb), float(r.accelerators))
                if any(a > b + 1e-9 for a, b in zip(need, have)):
                    continue
                out.append(FluidCandidate(d.model, pool.name, r.config_id, float(r.throughput_rps), need))
    return out


def neutral_capacity(table: ProfileTable, cluster: ClusterSpec, workload: WorkloadSpec) -> Capacity:
    """The fluid-LP capacity (req/s) for ``workload``'s mix (its rates, normalised to sum 1)."""
    demands = [d for d in workload.models if d.rate_rps > 0]
    total = sum(d.rate_rps for d in demands)
    if total <= 0:
        return Capacity(0.0, status="empty mix")
    mix = {d.model: d.rate_rps / total for d in demands}
    cands = fluid_candidates(table, cluster, workload)
    have = {c.model for c in cands}
    missing = [m for m in mix if m not in have]
    if missing:
        return Capacity(
            0.0,
            {m: 0.0 for m in mix},
            unservable=missing,
            candidates=len(cands),
            status="some model has no deadline-feasible configuration",
        )
    models = list(mix)
    pools = [p for p in cluster.pools if p.nodes > 0]
    pidx = {p.name: i for i, p in enumerate(pools)}
    n = len(cands)
    # columns: x_0 .. x_{n-1}, t
    c = np.zeros(n + 1)
    c[-1] = -1.0
    a_eq = np.zeros((len(models), n + 1))
    for j, k in enumerate(cands):
        a_eq[models.index(k.model), j] = 1.0
    for i, m in enumerate(models):
        a_eq[i, -1] = -mix[m]
    a_ub = np.zeros((len(pools) * 3, n + 1))
    b_ub = np.zeros(len(pools) * 3)
    for i, p in enumerate(pools):
        caps = (p.cpu, p.memory_mb, float(p.accelerators))
        for r in range(3):
            b_ub[3 * i + r] = p.nodes * caps[r]
    for j, k in enumerate(cands):
        for r in range(3):
            a_ub[3 * pidx[k.pool] + r, j] = k.res[r] / k.throughput_rps
    res = linprog(
        c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=np.zeros(len(models)), bounds=[(0, None)] * (n + 1), method="highs"
    )
    if res.status == 3:
        return Capacity(math.inf, candidates=n, status="unbounded (a configuration uses no resources)")
    if res.status != 0:
        raise RuntimeError(f"capacity LP failed: {res.message}")
    x, t = res.x[:n], float(res.x[-1])
    use: dict[str, dict[str, float]] = {}
    for i, p in enumerate(pools):
        used = a_ub[3 * i : 3 * i + 3, :n] @ x
        use[p.name] = {
            RESOURCES[r]: (float(used[r] / b_ub[3 * i + r]) if b_ub[3 * i + r] > 0 else 0.0) for r in range(3)
        }
    return Capacity(t, {m: t * mix[m] for m in models}, use, [], n, "optimal")
