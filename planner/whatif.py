"""Counterfactuals for unserved load: the cheapest change that would serve it.

For every model the plan leaves (partly) unserved, two kinds of change are tried:

- one more node in each pool in turn (a re-plan per pool), reporting how much unserved rate it removes;
- a looser deadline: the smallest deadline under which some configuration on some pool becomes
  deadline-feasible (from the candidates already considered), when none is.
"""

from __future__ import annotations

from dataclasses import dataclass

from synergai.models import ClusterSpec, NodePool, Plan, ProfileTable, WorkloadSpec

from .candidates import PlanOptions
from .offline import plan_offline


@dataclass
class WhatIf:
    model: str
    change: str  # human-readable change
    unserved_before: float
    unserved_after: float

    @property
    def served_gain(self) -> float:
        return self.unserved_before - self.unserved_after


def _unserved(plan: Plan) -> dict[str, float]:
    return {u.model: u.rate_rps for u in plan.unserved}


def what_if(
    plan: Plan,
    profiles: ProfileTable,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    *,
    solver: str = "highs",
    time_limit: float = 10.0,
    options: PlanOptions | None = None,
) -> list[WhatIf]:
    """Suggestions per unserved model, best first (largest unserved rate removed)."""
    before = _unserved(plan)
    if not before:
        return []
    out: list[WhatIf] = []
    for i, pool in enumerate(cluster.pools):
        pools = list(cluster.pools)
        pools[i] = NodePool(**{**pool.model_dump(), "nodes": pool.nodes + 1})
        alt = plan_offline(
            profiles,
            cluster.model_copy(update={"pools": pools}),
            workload,
            solver=solver,
            time_limit=time_limit,
            options=options,
        )
        after = _unserved(alt)
        for m, u in before.items():
            if after.get(m, 0.0) < u - max(0.01, 1e-3 * u):
                out.append(WhatIf(m, f"add one node to pool {pool.name}", u, after.get(m, 0.0)))
    for m, u in before.items():
        d = workload.demand(m)
        feasible = [c for c in plan.candidates if c.model == m and c.status not in ("misses_deadline", "does_not_fit")]
        missing = [c for c in plan.candidates if c.model == m and c.status == "misses_deadline"]
        if not feasible and missing:
            best = min(missing, key=lambda c: c.response_p99_ms)
            out.append(
                WhatIf(
                    m,
                    f"loosen the deadline from {d.deadline_ms:g} ms to {best.response_p99_ms:.1f} ms "
                    f"({best.config_id} on {best.pool} becomes feasible)",
                    u,
                    float("nan"),
                )
            )
    out.sort(key=lambda w: (w.model, -(w.served_gain if w.served_gain == w.served_gain else -1)))
    return out
