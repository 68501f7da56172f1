"""Scheduling policies behind one interface, registered by name.

A policy is built from a ``RunContext`` and has two parts:

- ``deploy() -> Deployment``: the server set it runs (SynergAI uses the offline MILP plan's servers;
  SLO-MAEL one shared server per processor; slo-mael-dedicated and k8s-native per-model replicas sized by
  demand over the same node resources).
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
from synergai.planner.service import ServiceModel

from .sim import Arrivals, Deployment, Replica

POLICIES: dict[str, type[Policy]] = {}


def register_policy(name: str, doc: str = ""):
    def deco(cls):
        cls.name = name
        cls.doc = doc or (cls.__doc__ or "").strip().splitlines()[0]
        POLICIES[name] = cls
        return cls

    return deco


def get_policy(name: str) -> type[Policy]:
    if name not in POLICIES:
        raise InputError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}", field="--policies")
    return POLICIES[name]


@dataclass
class RunContext:
    """Inputs of one (scenario, load, seed): what the policies are told, plus a plan cache they share."""

    profiles: ProfileTable  # the planning table (what policies believe)
    cluster: ClusterSpec
    workload: WorkloadSpec  # expected rates and deadlines
    seed: int = 0
    arrivals: Optional[Arrivals] = None  # whole trace: only look-ahead policies (documented) read it
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
            self.plans[tier] = plan_offline(
                self.profiles, cl, self.workload, solver=self.solver, time_limit=self.time_limit, options=self.options
            )
        return self.plans[tier]


class Policy:
    """Base class: subclasses set ``deploy`` and ``choose``."""

    name = ""
    doc = ""
    needs_feedback = False
    window = 1  # >1: decisions are taken per window; decision time is spread over its requests
    optimal = False
    shed = 0  # requests the policy refused on purpose (counted among the unplaced)

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
            raise RuntimeError(
                f"online stage numbers fallback server of {g.model} as {g.first_replica}, expected {len(dep.replicas)}"
            )
        pool = pools[g.pool]
        rec = by_cfg[(g.model, pool.device, g.config_id)]
        dep.notes.append(f"{g.model}: not in the plan; 1 fallback server on {g.pool} ({g.config_id})")
        dep.replicas.append(
            Replica.single(
                pool, g.model, rec, gidx, fallback=True, name=getattr(g, "server", "") or f"fallback-{g.model}-{g.pool}"
            )
        )
        gidx += 1
    n_sched = sched.n_replicas
    if n_sched != len(dep):
        raise RuntimeError(f"online stage has {n_sched} servers, the simulator deployment {len(dep)}")
    servers = getattr(sched, "servers", None)
    if servers is not None and [s[0] for s in servers] != [r.name for r in dep.replicas]:
        raise RuntimeError("online stage and simulator number the plan's servers differently")
    return dep


def plan_deployment(
    ctx: RunContext, tier: Optional[str] = None, overload: str = "sacrifice"
) -> tuple[Deployment, OnlineScheduler, Plan]:
    plan = ctx.plan(tier)
    sched = OnlineScheduler(plan, clock=lambda: 0.0, overload=overload)
    for d in ctx.workload.models:
        sched.ensure_model(d.model)  # materialise fallback servers up front, so the deployment is fixed
    dep = deployment_from_scheduler(ctx, sched, plan, name=f"plan{'-' + tier if tier else ''}")
    return dep, sched, plan


def _fits(r: ProfileRecord, pool, cores: float, mem: float, accel: Optional[bool]) -> bool:
    """Record ``r`` runs on ``pool`` within ``cores``/``mem``; ``accel``: True = on one accelerator, False = CPU
    engine, None = either."""
    if r.architecture != pool.architecture or r.cpu_cores > cores + 1e-9 or r.memory_request_mb > mem + 1e-9:
        return False
    if accel is None:
        return r.accelerators <= pool.accelerators
    return (r.accelerators == 1 and pool.accelerators >= 1) if accel else r.accelerators == 0


def _fastest_b1(
    ctx: RunContext, pool, models, cores: float, mem: float, accel: Optional[bool]
) -> dict[str, ProfileRecord]:
    """Per model: the lowest batch-1 p50 configuration on the pool's device within the given resources."""
    out = {}
    for m in models:
        cands = [
            r
            for r in ctx.profiles.for_model_device(m, pool.device)
            if r.batch_size == 1 and _fits(r, pool, cores, mem, accel)
        ]
        if cands:
            out[m] = min(cands, key=lambda r: (r.latency_p50_ms, r.config_id))
    return out


def _within_memory(recs: dict[str, ProfileRecord], mem: float) -> dict[str, ProfileRecord]:
    """Drop the largest models until every hosted model is loaded within ``mem`` MiB."""
    recs = dict(recs)
    while recs and sum(r.memory_request_mb for r in recs.values()) > mem + 1e-9:
        del recs[max(recs, key=lambda m: (recs[m].memory_request_mb, m))]
    return recs


def slo_mael_deployment(ctx: RunContext) -> Deployment:
    """SLO-MAEL's deployment as in the original (Seo et al., TACO 2021): every *processor* serves every model.

    Per node of every pool: one shared server per accelerator (hosting, for every model with a batch-1
    profile on one accelerator of the device, its lowest-p50 batch-1 configuration) and one shared server
    for the node's CPU (every model's fastest batch-1 CPU-engine configuration within the cores and memory
    the accelerator servers leave). One FIFO queue per processor, models mixed. When the hosted models do
    not all fit the memory, the largest are dropped (noted). Server group = (pool, processor kind).
    """
    models = [d.model for d in ctx.workload.models if d.rate_rps > 0]
    reps: list[Replica] = []
    notes: list[str] = []
    group = 0
    for pool in ctx.cluster.pools:
        if pool.nodes <= 0:
            continue
        n_acc = int(pool.accelerators)
        acc: dict[str, ProfileRecord] = {}
        if n_acc:
            acc = _within_memory(
                _fastest_b1(ctx, pool, models, pool.cpu, pool.memory_mb / n_acc, True), pool.memory_mb / n_acc
            )
        acc_cores = max((r.cpu_cores for r in acc.values()), default=0.0) * (n_acc if acc else 0)
        acc_mem = sum(r.memory_request_mb for r in acc.values()) * (n_acc if acc else 0)
        cpu_cores, cpu_mem = pool.cpu - acc_cores, pool.memory_mb - acc_mem
        cpu = _within_memory(_fastest_b1(ctx, pool, models, cpu_cores, cpu_mem, False), cpu_mem)
        for kind, recs, per_node in (("accelerator", acc, n_acc), ("cpu", cpu, 1)):
            if not recs:
                continue
            dropped = [
                m
                for m in models
                if m in (_fastest_b1(ctx, pool, [m], pool.cpu, pool.memory_mb, kind == "accelerator")) and m not in recs
            ]
            if dropped:
                notes.append(f"{pool.name} {kind}: {', '.join(dropped)} not hosted (memory)")
            for node in range(pool.nodes):
                for a in range(per_node):
                    reps.append(
                        Replica(pool, recs, group, name=f"{pool.name}-{node}-{kind}{a if per_node > 1 else ''}")
                    )
            group += 1
    return Deployment(reps, name="slo-mael-shared", notes=notes, profiles=ctx.profiles)


def _node_share(rec: ProfileRecord, pool) -> float:
    """Dominant share of one node that a replica of ``rec`` requests."""
    shares = [
        rec.cpu_cores / pool.cpu if pool.cpu > 0 else 0.0,
        rec.memory_request_mb / pool.memory_mb if pool.memory_mb > 0 else 0.0,
    ]
    if pool.accelerators > 0:
        shares.append(rec.accelerators / pool.accelerators)
    return max(shares)


class _Nodes:
    """Free resources per node of every pool; kube-scheduler-like placement (least allocated node that fits)."""

    def __init__(self, pools):
        self.cap = {p.name: np.array([p.cpu, p.memory_mb, float(p.accelerators)]) for p in pools}
        self.free = {p.name: np.tile(self.cap[p.name], (max(0, p.nodes), 1)) for p in pools}

    @staticmethod
    def need(rec: ProfileRecord) -> np.ndarray:
        return np.array([rec.cpu_cores, rec.memory_request_mb, float(rec.accelerators)])

    def node_for(self, pool: str, rec: ProfileRecord) -> int:
        free, cap = self.free[pool], self.cap[pool]
        if not len(free):
            return -1
        fits = np.all(free >= self.need(rec) - 1e-9, axis=1)
        if not fits.any():
            return -1
        share = np.where(cap > 0, free / np.where(cap > 0, cap, 1), 1).min(axis=1)
        return int(np.argmax(np.where(fits, share, -1)))

    def take(self, pool: str, node: int, rec: ProfileRecord) -> None:
        self.free[pool][node] -= self.need(rec)


def _proportional(
    ctx: RunContext, cands: dict[str, list[tuple]], target: dict[str, float], stop_at_target: bool
) -> list[tuple]:
    """Place replicas one at a time: the model with the smallest placed capacity relative to its target first
    (demand-proportional); its first candidate (in the given order) that fits a node, on the least allocated
    node. ``cands[m]``: [(pool, record, capacity req/s), ...]. Returns [(pool, record), ...] placed."""
    nodes = _Nodes(ctx.cluster.pools)
    pools = {p.name: p for p in ctx.cluster.pools}
    have = {m: 0.0 for m in cands}
    live = [m for m in cands if cands[m] and target.get(m, 0) > 0]
    out = []
    while live:
        m = min(live, key=lambda m: (have[m] / target[m], list(cands).index(m)))
        if stop_at_target and have[m] >= target[m]:
            break
        for pool, rec, cap in cands[m]:
            node = nodes.node_for(pool, rec)
            if node >= 0:
                nodes.take(pool, node, rec)
                have[m] += cap
                out.append((pools[pool], m, rec))
                break
        else:
            live.remove(m)
    return out


def _group_replicas(placed: list[tuple], name: str, ctx: RunContext, notes: Optional[list[str]] = None) -> Deployment:
    """Dedicated servers, grouped per (pool, model, configuration), groups in order of first placement."""
    order: dict[tuple, list] = {}
    for pool, m, rec in placed:
        order.setdefault((pool.name, m, rec.key), [pool, m, rec, 0])[3] += 1
    reps = []
    for g, (pool, m, rec, n) in enumerate(order.values()):
        reps.extend(Replica.single(pool, m, rec, g, name=f"{m}-{pool.name}") for _ in range(n))
    return Deployment(reps, name=name, notes=list(notes or []), profiles=ctx.profiles)


def slo_mael_dedicated_deployment(ctx: RunContext) -> Deployment:
    """Per-model replicas sized in proportion to demand: per (model, pool) the lowest-p50 batch-1
    configuration that fits a node and whose p50 + RTT can meet the deadline at all; replicas added one at
    a time to the model with the least placed capacity per unit of demand, on its highest-capacity pool
    with room (least allocated node), until nothing fits (the whole cluster is used, in proportion)."""
    dem = {d.model: d for d in ctx.workload.models if d.rate_rps > 0}
    cands: dict[str, list[tuple]] = {}
    for m, d in dem.items():
        row = []
        for pool in ctx.cluster.pools:
            if pool.nodes <= 0:
                continue
            recs = [
                r
                for r in ctx.profiles.for_model_device(m, pool.device)
                if r.batch_size == 1
                and _fits(r, pool, pool.cpu, pool.memory_mb, None)
                and r.latency_p50_ms + pool.rtt_ms <= d.deadline_ms
            ]
            if recs:
                rec = min(recs, key=lambda r: (r.latency_p50_ms, r.config_id))
                row.append((pool.name, rec, ServiceModel.of(rec).capacity, rec.latency_p50_ms + pool.rtt_ms))
        row.sort(key=lambda c: (-c[2], c[3], c[0]))
        cands[m] = [c[:3] for c in row]
    placed = _proportional(ctx, cands, {m: d.rate_rps for m, d in dem.items()}, stop_at_target=False)
    return _group_replicas(placed, "slo-mael-dedicated", ctx)


K8S_TARGET_UTILISATION = 0.7


def k8s_deployment(ctx: RunContext, target_util: float = K8S_TARGET_UTILISATION) -> Deployment:
    """What a KServe / plain-Kubernetes user deploys: per model and pool, the cheapest configuration that meets
    the deadline on an idle server (batch wait + p99 + RTT <= deadline; cheapest = least dominant node share
    per req/s of capacity, ties by latency); replicas as a utilisation-targeting autoscaler settles at
    (model capacity >= demand / 0.7), added one at a time to the model furthest below its target, on its
    cheapest pool with room (least allocated node), within the pools' nodes."""
    dem = {d.model: d for d in ctx.workload.models if d.rate_rps > 0}
    cands: dict[str, list[tuple]] = {}
    for m, d in dem.items():
        row = []
        for pool in ctx.cluster.pools:
            if pool.nodes <= 0:
                continue
            best = None
            for r in ctx.profiles.for_model_device(m, pool.device):
                if not _fits(r, pool, pool.cpu, pool.memory_mb, None):
                    continue
                sm = ServiceModel.of(r)
                if (sm.batch_wait + sm.quantile(0.99)) * 1e3 + pool.rtt_ms > d.deadline_ms:
                    continue
                key = (_node_share(r, pool) / sm.capacity, r.latency_p50_ms, r.config_id)
                if best is None or key < best[0]:
                    best = (key, r, sm.capacity)
            if best is not None:
                row.append((best[0], pool.name, best[1], best[2]))
        row.sort(key=lambda c: (c[0], c[1]))
        cands[m] = [(p, r, cap) for _, p, r, cap in row]
    target = {m: d.rate_rps / target_util for m, d in dem.items()}
    placed = _proportional(ctx, cands, target, stop_at_target=True)
    notes = []
    have: dict[str, float] = {}
    for pool, m, rec in placed:
        have[m] = have.get(m, 0.0) + ServiceModel.of(rec).capacity
    for m in dem:
        if have.get(m, 0.0) < target[m] - 1e-9:
            notes.append(f"{m}: {have.get(m, 0.0):.1f} of {target[m]:.1f} req/s target capacity fits the cluster")
    return _group_replicas(placed, "k8s-native", ctx, notes)


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
        elif d.shed:
            self.shed += 1
        return d.replica

    def on_complete(self, i, replica, start_s, finish_s):
        self.sched.complete(self.pending.pop(i), finish_s, start_s)


@register_policy("synergai-ll", "SynergAI with the least-lateness overload rule instead of sacrifice (ablation)")
class SynergAILeastLateness(SynergAI):
    overload = "least-lateness"


@register_policy(
    "synergai-shed", "SynergAI with the shed overload rule: answer at once when no server can meet the deadline"
)
class SynergAIShed(SynergAI):
    overload = "shed"


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
    """Per-server backlog from profiled figures, corrected by completion feedback.

    ``free[r]``: when server r's queued work (in server-seconds: a request adds its ``work`` = 1 / capacity,
    the mean call over batch and slots) is done. A request's believed finish is its believed start plus its
    expected runtime; on completion the difference to the real finish shifts the server's backlog (the same
    correction rule as SynergAI's online stage, so SLO-MAEL gets the same information)."""

    def __init__(self, n: int):
        self.free = np.zeros(n)
        self.offset = [0.0] * n
        self.est: dict[int, tuple[float, float]] = {}

    def dispatch(self, i: int, r: int, now: float, work: float, runtime: float = None) -> None:
        s = max(now, self.free[r])
        self.free[r] = s + work
        self.est[i] = (s + (work if runtime is None else runtime), self.offset[r])

    def complete(self, i: int, r: int, finish: float) -> None:
        e, off0 = self.est.pop(i)
        diff = finish - (e + (self.offset[r] - off0))
        self.free[r] += diff
        self.offset[r] += diff


class _SloMaelRule(Policy):
    """SLO-MAEL's rule: expected latency = the server's backlog + the profiled runtime + RTT; a candidate
    meets the SLO when deadline >= 1.5 x expected latency; take the SLO-meeting candidate with the least
    expected latency, else the least expected latency overall. Runtime = mean call (the service model's
    clipped log-normal, ``planner.service``) + batch wait; backlog per request = 1 / usable capacity."""

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
                sm = ServiceModel.of(dep.replicas[r].records[model])
                rt.append(sm.mean + sm.batch_wait)
                occ.append(sm.work_per_request)
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
        self.track.dispatch(req.i, r, req.time_s, occ[k], self.m[req.model][1][k])
        return r

    def on_complete(self, i, replica, start_s, finish_s):
        self.track.complete(i, replica, finish_s)


@register_policy(
    "slo-mael",
    "SLO-MAEL (Seo et al., TACO 2021): every processor serves every model (fastest batch-1, one shared queue), per-request expected-latency rule",
)
class SloMael(_SloMaelRule):
    def _build(self) -> Deployment:
        return slo_mael_deployment(self.ctx)


@register_policy(
    "slo-mael-dedicated", "SLO-MAEL's rule over per-model replicas (fastest batch-1) sized in proportion to demand"
)
class SloMaelDedicated(_SloMaelRule):
    def _build(self) -> Deployment:
        return slo_mael_dedicated_deployment(self.ctx)


@register_policy("slo-mael+plan", "SLO-MAEL's per-request rule over SynergAI's offline deployment")
class SloMaelPlan(_SloMaelRule):
    def _build(self) -> Deployment:
        dep, _, _ = plan_deployment(self.ctx)
        return dep


@register_policy(
    "k8s-native",
    "Kubernetes/KServe practice: cheapest deadline-feasible configuration per pool, replicas at 70% target utilisation, least outstanding requests",
)
class K8sNative(Policy):
    def deploy(self) -> Deployment:
        dep = k8s_deployment(self.ctx)
        self.ids = dep.by_model()
        return dep

    def choose(self, req, state) -> int:
        ids = self.ids.get(req.model)
        if not ids:
            return -1
        out = state.outstanding
        return min(ids, key=out.__getitem__)


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
            reps = reps[: self.max_candidates]
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
        self.track.dispatch(req.i, r, req.time_s, occ[k], rt[k])
        return r


@register_policy(
    "optimal", "exact hindsight schedule (CP-SAT) minimising violations then lateness; small instances only"
)
class Optimal(Policy):
    optimal = True

    def deploy(self) -> Deployment:
        raise InputError("`optimal` is not an online policy; it is solved by experiments.optimal", field="--policies")


ONLINE_POLICIES = [n for n, c in POLICIES.items() if not c.optimal]
