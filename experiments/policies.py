"""Scheduling policies behind one interface, registered by name.

A policy is built from a ``RunContext`` and has two parts:

- ``deploy() -> Deployment``: the replica set it runs (SynergAI uses the offline MILP plan's replicas;
  SLO-MAEL spreads its fixed configuration over the same node resources).
- ``choose(req, state) -> replica id`` (``-1``: nothing can serve it), called at each arrival with the
  simulated time in ``req.time_s``; optional ``on_complete(i, replica, start_s, finish_s)`` feedback for
  policies that set ``needs_feedback`` (delivered once ``finish <= now``).

Adding a policy is one decorated class here or in any imported module; the simulator never changes.
Policies never read drawn service times: they estimate with profiled figures and correct on feedback.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from synergai.models import ClusterSpec, InputError, Plan, ProfileRecord, ProfileTable, WorkloadSpec
from synergai.planner import OnlineScheduler, PlanOptions, plan_offline
from synergai.planner.queueing import LatencyDist

from .sim import Arrivals, Deployment, Replica

POLICIES: dict[str, type["Policy"]] = {}


def register_policy(name: str, doc: str = ""):
    def deco(cls):
        cls.name = name
        cls.doc = doc or (cls.__doc__ or "").strip().splitlines()[0]
        POLICIES[name] = cls
        return cls
    return deco


def get_policy(name: str) -> type["Policy"]:
    if name not in POLICIES:
        raise InputError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}", field="--policies")
    return POLICIES[name]


@dataclass
class RunContext:
    """Inputs of one (scenario, load, seed): what the policies are told, plus a plan cache they share."""

    profiles: ProfileTable       # the planning table (what policies believe)
    cluster: ClusterSpec
    workload: WorkloadSpec       # expected rates and deadlines
    seed: int = 0
    arrivals: Optional[Arrivals] = None   # whole trace: only look-ahead policies (documented) read it
    options: PlanOptions = field(default_factory=PlanOptions)
    solver: str = "highs"
    time_limit: float = 10.0
    plans: dict = field(default_factory=dict)

    def plan(self, tier: Optional[str] = None) -> Plan:
        """The offline plan for this context (cached), optionally on one tier's pools only."""
        if tier not in self.plans:
            cl = self.cluster
            if tier is not None:
                pools = [p for p in cl.pools if p.tier == tier]
                if not pools:
                    raise InputError(f"cluster {cl.name!r} has no {tier} pool", field="cluster")
                cl = cl.model_copy(update={"pools": pools})
            self.plans[tier] = plan_offline(self.profiles, cl, self.workload, solver=self.solver,
                                            time_limit=self.time_limit, options=self.options)
        return self.plans[tier]


class Policy:
    """Base class: subclasses set ``deploy`` and ``choose``."""

    name = ""
    doc = ""
    needs_feedback = False
    window = 1          # >1: decisions are taken per window; decision time is spread over its requests
    optimal = False

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def deploy(self) -> Deployment:
        raise NotImplementedError

    def choose(self, req, state) -> int:
        raise NotImplementedError

    def on_complete(self, i: int, replica: int, start_s: float, finish_s: float) -> None:
        return None


# ---------------------------------------------------------------------------------------------- deployments

def _record_index(profiles: ProfileTable) -> dict[tuple, ProfileRecord]:
    return {r.key: r for r in profiles.records}


def _find_record(index: dict, model: str, device: str, cfg) -> ProfileRecord:
    key = (model, cfg.engine, device, cfg.precision, cfg.batch_size, cfg.threads, cfg.power_mode)
    rec = index.get(key)
    if rec is None:
        raise InputError(f"plan configuration {model}/{device}/{cfg.config_id} is not in the profiles")
    return rec


def deployment_from_plan(plan: Plan, profiles: ProfileTable, *, name: str = "plan") -> Deployment:
    """One simulator server per server of the plan, in ``plan.server_groups()`` order, each group's servers
    consecutive (the online stage's global server numbering). Groups without servers or assignments are
    skipped, as the online stage skips them. ``Replica.group`` is the group's position in
    ``server_groups()``, ``Replica.name`` its name; a server's resources are the group's requests."""
    index = _record_index(profiles)
    pools = {p.name: p for p in plan.pools}
    reps: list[Replica] = []
    for gi, g in enumerate(plan.server_groups()):
        assigns = plan.assignments_of(g.name)
        if g.replicas <= 0 or not assigns:
            continue
        pool = pools[g.pool]
        records = {a.model: _find_record(index, a.model, pool.device, a.config) for a in assigns}
        res = (g.cpu_cores, g.memory_mb, float(g.accelerators))
        reps.extend(Replica(pool, records, gi, name=g.name, resources=res) for _ in range(g.replicas))
    return Deployment(reps, name=name, profiles=profiles)


def deployment_from_scheduler(ctx: RunContext, sched: OnlineScheduler, plan: Plan, name: str) -> Deployment:
    """The plan's servers (:func:`deployment_from_plan`) followed by the scheduler's fallback servers, so a
    ``Decision.replica`` is the simulator's replica id."""
    dep = deployment_from_plan(plan, ctx.profiles, name=name)
    by_cfg = {(r.model, r.device, r.config_id): r for r in ctx.profiles.records}
    pools = {p.name: p for p in plan.pools}
    gidx = len(plan.server_groups())
    for g in sorted((g for g in sched.groups if g.fallback), key=lambda g: g.first_replica):
        if g.first_replica != len(dep.replicas) or g.replicas != 1:
            raise RuntimeError(f"online stage numbers fallback server of {g.model} as {g.first_replica}, "
                               f"expected {len(dep.replicas)}")
        pool = pools[g.pool]
        rec = by_cfg[(g.model, pool.device, g.config_id)]
        dep.notes.append(f"{g.model}: not in the plan; 1 fallback server on {g.pool} ({g.config_id})")
        dep.replicas.append(Replica.single(pool, g.model, rec, gidx, fallback=True,
                                           name=getattr(g, "server", "") or f"fallback-{g.model}-{g.pool}"))
        gidx += 1
    n_sched = sched.n_replicas
    if n_sched != len(dep):
        raise RuntimeError(f"online stage has {n_sched} servers, the simulator deployment {len(dep)}")
    servers = getattr(sched, "servers", None)
    if servers is not None and [s[0] for s in servers] != [r.name for r in dep.replicas]:
        raise RuntimeError("online stage and simulator number the plan's servers differently")
    return dep


def plan_deployment(ctx: RunContext, tier: Optional[str] = None,
                    overload: str = "sacrifice") -> tuple[Deployment, OnlineScheduler, Plan]:
    plan = ctx.plan(tier)
    sched = OnlineScheduler(plan, clock=lambda: 0.0, overload=overload)
    for d in ctx.workload.models:
        sched.ensure_model(d.model)  # materialise fallback servers up front, so the deployment is fixed
    dep = deployment_from_scheduler(ctx, sched, plan, name=f"plan{'-' + tier if tier else ''}")
    return dep, sched, plan


def slo_mael_deployment(ctx: RunContext) -> Deployment:
    """SLO-MAEL's deployment: per pool, per model, the lowest batch-1 p50 configuration, spread evenly.

    Skips (model, pool) pairs whose strongest configuration cannot meet the deadline even when idle
    (p50 + RTT > deadline): SLO-MAEL would never pick them, and they would only take resources from
    models that can use them. Power modes are not reconciled per node (an advantage for the baseline).
    """
    deadlines = {d.model: d.deadline_ms for d in ctx.workload.models if d.rate_rps > 0}
    reps: list[Replica] = []
    group = 0
    for pool in ctx.cluster.pools:
        chosen: list[ProfileRecord] = []
        for model in deadlines:
            cands = [r for r in ctx.profiles.for_model_device(model, pool.device)
                     if r.batch_size == 1 and r.architecture == pool.architecture
                     and r.cpu_cores <= pool.cpu + 1e-9 and r.memory_request_mb <= pool.memory_mb + 1e-9
                     and r.accelerators <= pool.accelerators and r.latency_p50_ms + pool.rtt_ms <= deadlines[model]]
            if cands and pool.nodes > 0:
                chosen.append(min(cands, key=lambda r: (r.latency_p50_ms, r.config_id)))
        if not chosen:
            continue
        cap = np.array([pool.cpu, pool.memory_mb, float(pool.accelerators)])
        free = np.tile(cap, (pool.nodes, 1))
        counts = [0] * len(chosen)
        placed = True
        while placed:
            placed = False
            for k, rec in enumerate(chosen):
                need = np.array([rec.cpu_cores, rec.memory_request_mb, float(rec.accelerators)])
                fits = np.all(free >= need - 1e-9, axis=1)
                if not fits.any():
                    continue
                share = np.where(cap > 0, free / np.where(cap > 0, cap, 1), 1).min(axis=1)
                node = int(np.argmax(np.where(fits, share, -1)))
                free[node] -= need
                counts[k] += 1
                placed = True
        for k, rec in enumerate(chosen):
            reps.extend(Replica.single(pool, rec.model, rec, group) for _ in range(counts[k]))
            group += 1
    return Deployment(reps, name="slo-mael-even", profiles=ctx.profiles)


# ---------------------------------------------------------------------------------------------- SynergAI

@register_policy("synergai", "offline MILP plan + online heuristic (planner.OnlineScheduler)")
class SynergAI(Policy):
    needs_feedback = True
    tier: Optional[str] = None
    overload = "sacrifice"

    def deploy(self) -> Deployment:
        dep, self.sched, self.plan = plan_deployment(self.ctx, self.tier, self.overload)
        self.pending: dict[int, object] = {}
        return dep

    def choose(self, req, state) -> int:
        d = self.sched.assign(req.model, req.deadline_s * 1e3, now=req.time_s)
        if d.replica >= 0:
            self.pending[req.i] = d
        return d.replica

    def on_complete(self, i, replica, start_s, finish_s):
        self.sched.complete(self.pending.pop(i), finish_s, start_s)


@register_policy("synergai-ll", "SynergAI with the least-lateness overload rule instead of sacrifice (ablation)")
class SynergAILeastLateness(SynergAI):
    overload = "least-lateness"


@register_policy("edge-only", "SynergAI restricted to the edge pools (plan and online stage)")
class EdgeOnly(SynergAI):
    tier = "edge"


@register_policy("cloud-only", "SynergAI restricted to the cloud pools (plan and online stage)")
class CloudOnly(SynergAI):
    tier = "cloud"


@register_policy("offline-only", "the MILP plan's routing weights (smooth weighted round-robin), no online adaptation")
class OfflineOnly(Policy):
    def deploy(self) -> Deployment:
        dep, sched, _ = plan_deployment(self.ctx)
        self.groups: dict[str, list] = {}
        for g in sched.groups:
            ids = list(range(g.first_replica, g.first_replica + g.replicas))
            self.groups.setdefault(g.model, []).append([g.share, 0, ids, 0])  # share, sent, replicas, cursor
        return dep

    def choose(self, req, state) -> int:
        gs = self.groups.get(req.model)
        if not gs:
            return -1
        total = sum(g[1] for g in gs) + 1
        g = min(gs, key=lambda g: (g[1] + 1) / (g[0] * total + 1e-12))
        g[1] += 1
        r = g[2][g[3]]
        g[3] = (g[3] + 1) % len(g[2])
        return r


# ---------------------------------------------------------------------------------------------- simple online rules

class _PlanReplicas(Policy):
    """Online rules that run over the plan's replicas."""

    def deploy(self) -> Deployment:
        dep, _, _ = plan_deployment(self.ctx)
        self.ids = dep.by_model()
        return dep


@register_policy("round-robin", "cyclic over the model's replicas of the plan")
class RoundRobin(_PlanReplicas):
    def deploy(self) -> Deployment:
        dep = super().deploy()
        self.cur = {m: 0 for m in self.ids}
        return dep

    def choose(self, req, state) -> int:
        ids = self.ids.get(req.model)
        if not ids:
            return -1
        k = self.cur[req.model]
        self.cur[req.model] = (k + 1) % len(ids)
        return ids[k]


@register_policy("random", "uniformly random over the model's replicas of the plan")
class RandomPolicy(_PlanReplicas):
    def deploy(self) -> Deployment:
        dep = super().deploy()
        self.rng = np.random.default_rng([self.ctx.seed, 0x5EED])
        self.u = self.rng.random(len(self.ctx.arrivals) if self.ctx.arrivals is not None else 1 << 16)
        self.k = 0
        return dep

    def choose(self, req, state) -> int:
        ids = self.ids.get(req.model)
        if not ids:
            return -1
        if self.k >= len(self.u):
            self.u = self.rng.random(len(self.u))
            self.k = 0
        x = self.u[self.k]
        self.k += 1
        return ids[int(x * len(ids))]


@register_policy("least-loaded", "fewest outstanding requests among the model's replicas of the plan")
class LeastLoaded(_PlanReplicas):
    def choose(self, req, state) -> int:
        ids = self.ids.get(req.model)
        if not ids:
            return -1
        out = state.outstanding
        return min(ids, key=out.__getitem__)


# ---------------------------------------------------------------------------------------------- SLO-MAEL

class _FreeTracker:
    """Per-replica estimated free time from profiled runtimes, corrected by completion feedback.

    Gives SLO-MAEL exactly the information SynergAI's online stage has (same correction rule).
    """

    def __init__(self, n: int):
        self.free = np.zeros(n)
        self.offset = [0.0] * n
        self.est: dict[int, tuple[float, float]] = {}

    def dispatch(self, i: int, r: int, now: float, work: float) -> None:
        f = max(now, self.free[r]) + work
        self.free[r] = f
        self.est[i] = (f, self.offset[r])

    def complete(self, i: int, r: int, finish: float) -> None:
        e, off0 = self.est.pop(i)
        believed = e + (self.offset[r] - off0)
        self.free[r] = max(finish, self.free[r] + (finish - believed))
        self.offset[r] += finish - believed


class _SloMaelRule(Policy):
    """SLO-MAEL's rule: expected latency = the replica's queued work + profiled runtime (+ RTT); a
    candidate meets the SLO when deadline >= 1.5 x expected latency; take the SLO-meeting candidate with
    the least expected latency, else the least expected latency overall."""

    needs_feedback = True
    slack = 1.5

    def _build(self) -> Deployment:
        raise NotImplementedError

    def deploy(self) -> Deployment:
        dep = self._build()
        self.track = _FreeTracker(len(dep))
        self.m: dict[str, tuple] = {}
        for model, ids in dep.by_model().items():
            rt, occ, rtt = [], [], []
            for r in ids:
                rec = dep.replicas[r].records[model]
                mean = LatencyDist(rec.latency_p50_ms, rec.latency_p90_ms, rec.latency_p99_ms).mean / 1e3
                rt.append(mean)
                occ.append(mean / rec.batch_size)
                rtt.append(dep.replicas[r].pool.rtt_ms / 1e3)
            self.m[model] = (np.array(ids), np.array(rt), np.array(occ), np.array(rtt))
        return dep

    def expected(self, model: str, now: float):
        ids, rt, occ, rtt = self.m[model]
        return ids, np.maximum(self.track.free[ids] - now, 0.0) + rt + rtt, occ

    def choose(self, req, state) -> int:
        if req.model not in self.m:
            return -1
        ids, lat, occ = self.expected(req.model, req.time_s)
        meets = req.deadline_s >= self.slack * lat
        k = int(np.argmin(np.where(meets, lat, np.inf))) if meets.any() else int(np.argmin(lat))
        r = int(ids[k])
        self.track.dispatch(req.i, r, req.time_s, occ[k])
        return r

    def on_complete(self, i, replica, start_s, finish_s):
        self.track.complete(i, replica, finish_s)


@register_policy("slo-mael", "SLO-MAEL (Seo et al., TACO 2021): fixed fastest configuration everywhere, per-request expected-latency rule")
class SloMael(_SloMaelRule):
    def _build(self) -> Deployment:
        return slo_mael_deployment(self.ctx)


@register_policy("slo-mael+plan", "SLO-MAEL's per-request rule over SynergAI's offline deployment")
class SloMaelPlan(_SloMaelRule):
    def _build(self) -> Deployment:
        dep, _, _ = plan_deployment(self.ctx)
        return dep


@register_policy("slo-mael-bw", "SLO-MAEL batch-window variant: jointly places windows of W requests by enumeration")
class SloMaelWindow(SloMael):
    """Enumerates every assignment of a window's requests to candidates and scores it with SLO-MAEL's rule
    (most SLO-meeting requests, then least total expected latency).

    Candidates per request: the least-loaded replica of each (pool, configuration) group, at most ``C``
    of them (fastest expected first), so a window costs at most C**W evaluations (4**6 = 4096).
    Optimistic: it sees the window's later arrivals at the first one's arrival instead of holding the
    first back until the window fills, so its violations are if anything flattered; its decision time
    (the window's total, spread evenly over the W requests) is measured as it runs.
    """

    window = 6
    max_candidates = 4

    def deploy(self) -> Deployment:
        dep = super().deploy()
        self.groups_of: dict[str, list[np.ndarray]] = {}
        for model, (ids, *_rest) in self.m.items():
            by_g: dict[int, list[int]] = {}
            for pos, r in enumerate(ids):
                by_g.setdefault(dep.replicas[r].group, []).append(pos)
            self.groups_of[model] = [np.array(v) for v in by_g.values()]
        self.plan_of: dict[int, int] = {}
        self.combos: dict[tuple[int, ...], np.ndarray] = {}
        return dep

    def _combos(self, sizes: tuple[int, ...]) -> np.ndarray:
        c = self.combos.get(sizes)
        if c is None:
            c = np.array(list(itertools.product(*[range(s) for s in sizes])), dtype=np.int64).reshape(-1, len(sizes))
            self.combos[sizes] = c
        return c

    def _plan_window(self, i0: int) -> None:
        arr = self.ctx.arrivals
        n = len(arr)
        idx = list(range(i0, min(n, i0 + self.window)))
        cand_r, cand_rt, cand_occ, a, dl, keep = [], [], [], [], [], []
        for i in idx:
            model = arr.models[arr.model[i]]
            if model not in self.m:
                continue
            ids, rt, occ, rtt = self.m[model]
            t = float(arr.time_s[i])
            lat = np.maximum(self.track.free[ids] - t, 0.0) + rt + rtt
            reps = [g[np.argmin(lat[g])] for g in self.groups_of[model]]
            reps.sort(key=lambda p: lat[p])
            reps = reps[:self.max_candidates]
            cand_r.append(ids[reps])
            cand_rt.append(rt[reps] + rtt[reps])
            cand_occ.append(occ[reps])
            a.append(t)
            dl.append(float(arr.deadline_s[i]))
            keep.append(i)
        if not keep:
            return
        combos = self._combos(tuple(len(c) for c in cand_r))
        N = len(combos)
        uni = np.unique(np.concatenate(cand_r))
        pos = {int(r): k for k, r in enumerate(uni)}
        F = np.tile(self.track.free[uni], (N, 1))
        rows = np.arange(N)
        meets = np.zeros(N)
        total = np.zeros(N)
        for w in range(len(keep)):
            c = combos[:, w]
            u = np.array([pos[int(r)] for r in cand_r[w]])[c]
            s = np.maximum(F[rows, u], a[w])
            lat = s - a[w] + cand_rt[w][c]
            F[rows, u] = s + cand_occ[w][c]
            meets += dl[w] >= self.slack * lat
            total += lat
        best = int(np.lexsort((total, -meets))[0])
        for w, i in enumerate(keep):
            self.plan_of[i] = int(cand_r[w][combos[best, w]])

    def choose(self, req, state) -> int:
        if req.model not in self.m:
            return -1
        r = self.plan_of.pop(req.i, None)
        if r is None:
            self._plan_window(req.i)
            r = self.plan_of.pop(req.i)
        ids, rt, occ, rtt = self.m[req.model]
        k = int(np.searchsorted(ids, r))  # ids are ascending
        self.track.dispatch(req.i, r, req.time_s, occ[k])
        return r


@register_policy("optimal", "exact hindsight schedule (CP-SAT) minimising violations then lateness; small instances only")
class Optimal(Policy):
    optimal = True

    def deploy(self) -> Deployment:
        raise InputError("`optimal` is not an online policy; it is solved by experiments.optimal", field="--policies")


ONLINE_POLICIES = [n for n, c in POLICIES.items() if not c.optimal]
