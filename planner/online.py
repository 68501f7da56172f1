"""Online stage: per-request replica choice, warm-started from the offline plan.

State: per replica, when it is expected to become free (a numpy array per replica group,
a group being one (model, pool, configuration) assignment of the plan).  For each arrival:

    estimated finish = max(now, free) + service + RTT     (service = the profile's mean)
    meets            = max(now, free) + service_p90 + RTT <= arrival + deadline

Rule: among groups whose earliest-free replica meets the deadline, take the one furthest
behind the plan's routing share (smooth weighted round-robin over the offline routed rates,
ties to lower energy per request).  If none meets, the request will be late wherever it goes;
``overload="least-lateness"`` sends it where it is least late, ``overload="sacrifice"`` (default)
sends it to the most backlogged replica, which is already of no use to on-time requests, so
the other replicas stay able to meet deadlines once a burst passes (fewer violations, at the
price of more lateness for the requests that were going to be late anyway).  The victim's
lateness is capped at ``sacrifice_cap`` deadlines; past that, least lateness.  A model absent
from the plan falls back to any pool whose candidates list it (one virtual replica each).
Pure and deterministic given the times it is handed; the clock is injectable.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from synergai.models import Plan

from .queueing import LatencyDist


@dataclass
class Group:
    gid: int
    model: str
    pool: str
    tier: str
    config_id: str
    replicas: int
    service_s: float       # mean service time of one call (batch), s
    occupancy_s: float     # time one request occupies a replica (1/throughput), s
    check_s: float         # conservative service time for the deadline check (p90), s
    rtt_s: float
    share: float           # target fraction of the model's requests
    energy_j: float        # J per request
    fallback: bool = False
    free: np.ndarray = field(default_factory=lambda: np.zeros(0))
    first_replica: int = 0
    sent: int = 0
    drift: float = 1.0     # observed / profiled service time (EWMA over completions)


@dataclass
class Decision:
    model: str
    replica: int           # global replica id (-1: nothing can serve this model)
    group: int
    pool: str
    start_s: float
    finish_s: float        # estimated completion incl. RTT
    meets: bool
    lateness_ms: float
    reason: str = ""
    candidates: list[dict] = field(default_factory=list)
    est_free_s: float = 0.0  # when the scheduler believes the replica is free again after this request
    corr: float = 0.0        # the replica's cumulative correction when the decision was made (see complete())


class OnlineScheduler:
    """Greedy per-request placement over a plan's replicas."""

    def __init__(self, plan: Plan, *, clock: Callable[[], float] | None = None, check_quantile: str = "p90",
                 overload: str = "sacrifice", sacrifice_cap: float = 2.0, drift_alpha: float = 0.02):
        if overload not in ("sacrifice", "least-lateness"):
            raise ValueError(f"unknown overload rule {overload!r}")
        self.overload = overload
        self.sacrifice_cap = sacrifice_cap
        self.drift_alpha = drift_alpha
        self.plan = plan
        self.clock = clock or time.monotonic
        self.groups: list[Group] = []
        self.by_model: dict[str, list[Group]] = {}
        self.replica_group: list[int] = []
        self.deadline_ms = {d.model: d.deadline_ms for d in plan.demands}
        pools = {p.name: p for p in plan.pools}
        totals: dict[str, float] = {}
        for a in plan.assignments:
            totals[a.model] = totals.get(a.model, 0.0) + a.routed_rate_rps
        for a in plan.assignments:
            if a.replicas <= 0:
                continue
            cfg = a.config
            dist = LatencyDist(cfg.latency_p50_ms, cfg.latency_p90_ms, cfg.latency_p99_ms)
            check = cfg.latency_p90_ms if check_quantile == "p90" else dist.mean
            tot = totals.get(a.model, 0.0)
            share = a.routed_rate_rps / tot if tot > 0 else 1.0 / max(1, sum(1 for b in plan.assignments if b.model == a.model))
            pw = cfg.power_w if cfg.power_w else 0.0
            self._add(Group(gid=len(self.groups), model=a.model, pool=a.pool, tier=pools[a.pool].tier,
                            config_id=cfg.config_id, replicas=a.replicas, service_s=dist.mean / 1000.0,
                            occupancy_s=1.0 / cfg.throughput_rps, check_s=check / 1000.0,
                            rtt_s=pools[a.pool].rtt_ms / 1000.0, share=share,
                            energy_j=pw / cfg.throughput_rps))
        self._fallback_added: set[str] = set()
        self.corr = np.zeros(len(self.replica_group))

    def _add(self, g: Group) -> None:
        g.first_replica = len(self.replica_group)
        g.free = np.zeros(g.replicas)
        self.replica_group.extend([g.gid] * g.replicas)
        if hasattr(self, "corr"):
            self.corr = np.append(self.corr, np.zeros(g.replicas))
        self.groups.append(g)
        self.by_model.setdefault(g.model, []).append(g)

    def _fallback(self, model: str) -> list[Group]:
        """Virtual replicas for a model the plan does not serve: one per pool with a deadline-feasible candidate."""
        if model in self._fallback_added:
            return self.by_model.get(model, [])
        self._fallback_added.add(model)
        pools = {p.name: p for p in self.plan.pools}
        best: dict[str, object] = {}
        for c in self.plan.candidates:
            if c.model != model or c.status in ("does_not_fit",):
                continue
            if c.pool not in best or c.latency_p99_ms < best[c.pool].latency_p99_ms:
                best[c.pool] = c
        for pool, c in sorted(best.items()):
            s = c.latency_p99_ms / 1000.0
            self._add(Group(gid=len(self.groups), model=model, pool=pool, tier=pools[pool].tier, config_id=c.config_id,
                            replicas=1, service_s=s, occupancy_s=s, check_s=s, rtt_s=pools[pool].rtt_ms / 1000.0,
                            share=1.0 / len(best), energy_j=c.energy_j_per_request or 0.0, fallback=True))
        return self.by_model.get(model, [])

    def ensure_model(self, model: str) -> list[Group]:
        """The groups serving ``model``, creating fallback replicas if the plan has none (idempotent)."""
        return self.by_model.get(model) or self._fallback(model)

    @property
    def n_replicas(self) -> int:
        return len(self.replica_group)

    def reset(self) -> None:
        for g in self.groups:
            g.free[:] = 0.0
            g.sent = 0

    def assign(self, model: str, deadline_ms: Optional[float] = None, now: Optional[float] = None,
               origin: Optional[str] = None, explain: bool = False) -> Decision:
        """Pick a replica for one request arriving at ``now`` (seconds, from the injected clock by default)."""
        if now is None:
            now = self.clock()
        if deadline_ms is None:
            deadline_ms = self.deadline_ms.get(model, float("inf"))
        due = now + deadline_ms / 1000.0
        groups = self.by_model.get(model) or self._fallback(model)
        if not groups:
            return Decision(model, -1, -1, "", now, float("inf"), False, float("inf"),
                            "no pool has a profile for this model")
        best = None
        best_key = None
        late_best = None
        late_key = None
        cands = [] if explain else None
        inf = float("inf")
        for g in groups:
            i = int(g.free.argmin()) if g.replicas > 1 else 0
            start = g.free[i]
            if start < now:
                start = now
            finish = start + g.service_s + g.rtt_s
            meets = start + g.check_s + g.rtt_s <= due
            if meets:
                # furthest behind its routing share first (smooth WRR; the model's total is common to all
                # groups, so it drops out), then the same tier as the origin, then energy
                if g.share > 0:
                    key = ((g.sent + 1) / g.share, 0, origin is not None and g.tier != origin, g.energy_j)
                else:
                    key = (inf, g.sent, origin is not None and g.tier != origin, g.energy_j)
                if best_key is None or key < best_key:
                    best, best_key = (g, i, start, finish), key
            elif late_key is None or finish < late_key:
                late_best, late_key = (g, i, start, finish), finish
            if cands is not None:
                cands.append({"pool": g.pool, "config": g.config_id, "replica": g.first_replica + i,
                              "start_s": float(start), "finish_s": float(finish), "meets": bool(meets),
                              "share": g.share, "sent": g.sent, "fallback": g.fallback})
        victim = None
        if best is None and self.overload == "sacrifice":  # only when the request will be late anyway
            cap_s = self.sacrifice_cap * deadline_ms / 1000.0
            for g in groups:
                j = int(g.free.argmax()) if g.replicas > 1 else 0
                s_j = max(now, g.free[j])
                f_j = s_j + g.service_s + g.rtt_s
                if f_j - due <= cap_s and (victim is None or s_j > victim[2]):
                    victim = (g, j, s_j, f_j)
        if best is not None:
            g, i, start, finish = best
            reason = "meets deadline; furthest behind the plan's routing share"
            meets = True
        elif victim is not None:
            g, i, start, finish = victim
            reason = "no replica meets the deadline; sent to the most backlogged replica (keeps the others on time)"
            meets = False
        else:
            g, i, start, finish = late_best
            reason = "no replica meets the deadline; least lateness"
            meets = False
        g.free[i] = start + g.occupancy_s
        g.sent += 1
        lateness = max(0.0, finish - due) * 1000.0
        r = g.first_replica + i
        return Decision(model, r, g.gid, g.pool, float(start), float(finish), meets, lateness,
                        reason + (" (fallback: model not in plan)" if g.fallback else ""), cands or [],
                        est_free_s=float(g.free[i]), corr=float(self.corr[r]))

    def complete(self, decision: Decision, actual_free_s: float, actual_start_s: Optional[float] = None) -> None:
        """Feed back when the replica really became free after this request (executor/simulator).

        The error against the estimate shifts the replica's queued work; corrections already
        applied since the decision (earlier requests on the same FIFO replica) are not counted twice.
        With ``actual_start_s`` the observed service time also recalibrates the group's estimates
        (EWMA of observed / profiled, weight ``drift_alpha``): profiles that drifted stop misleading
        the deadline check.
        """
        r = decision.replica
        if r < 0:
            return
        if actual_start_s is not None and self.drift_alpha > 0:
            g0 = self.groups[self.replica_group[r]]
            base = g0.service_s / g0.drift
            if base > 0:
                ratio = min(10.0, max(0.1, (actual_free_s - actual_start_s) / base))
                new = (1 - self.drift_alpha) * g0.drift + self.drift_alpha * ratio
                f = new / g0.drift
                g0.service_s *= f
                g0.occupancy_s *= f
                g0.check_s *= f
                g0.drift = new
        believed = decision.est_free_s + (self.corr[r] - decision.corr)
        delta = actual_free_s - believed
        g = self.groups[self.replica_group[r]]
        i = r - g.first_replica
        g.free[i] = max(actual_free_s, g.free[i] + delta)
        self.corr[r] += delta

    def observe(self, replica: int, estimated_free_s: float, actual_free_s: float) -> None:
        """Shift a replica's free time by ``actual - estimated`` (no bookkeeping: prefer ``complete``)."""
        g = self.groups[self.replica_group[replica]]
        i = replica - g.first_replica
        g.free[i] = max(actual_free_s, g.free[i] + (actual_free_s - estimated_free_s))
