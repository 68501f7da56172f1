"""The CP-SAT hindsight optimum is a lower bound: never worse than any policy on the same instance."""

from __future__ import annotations

import pytest

from synergai.experiments.optimal import solve_best
from synergai.experiments.policies import RunContext, get_policy
from synergai.experiments.sim import simulate
from synergai.planner.synthetic import random_instance

from .test_sim import _arrivals

POLS = [
    "synergai",
    "slo-mael",
    "slo-mael-bw",
    "round-robin",
    "least-loaded",
    "offline-only",
    "slo-mael+plan",
    "slo-mael-dedicated",
    "k8s-native",
]


def _batch1(table):
    from synergai.models import ProfileTable

    return ProfileTable([r for r in table.records if r.batch_size == 1], on_duplicate="newest")


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_optimal_never_worse_than_any_policy(seed):
    table, cluster, wl = random_instance(seed, n_pools=2, n_models=2, n_configs=3, max_nodes=1, load=0.6)
    table = _batch1(table)  # batching servers are not modelled by the optimum
    arr = _arrivals(wl, 70, seed, 2.0)
    deps, viol = [], {}
    for name in POLS:
        ctx = RunContext(table, cluster, wl, seed=seed, arrivals=arr)
        pol = get_policy(name)(ctx)
        dep = pol.deploy()
        deps.append(dep)
        viol[name] = simulate(arr, dep, pol).metrics["violations"]
    best, each = solve_best(arr, deps, time_limit=10)
    if best.status != "optimal":
        pytest.skip(f"CP-SAT did not prove optimality here ({best.status})")
    assert best.violations <= min(viol.values()), (best, viol)
    assert all(r.proven for r in each)
