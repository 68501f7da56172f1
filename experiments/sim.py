"""Discrete-event simulator: replays arrivals against a deployment (replicas) and an online policy.

Model
-----
- Every replica is a single server with a FIFO queue. A request decided at its arrival time ``a`` travels
  half the pool's RTT to the replica (``dispatch = a + rtt/2``), waits, is served, and the answer travels
  back (``response = finish + rtt/2 - a``). It violates its QoS target when ``response > deadline``.
- Batch size 1: ``start = max(dispatch, replica free)``, ``finish = start + service``. Because replicas are
  FIFO and non-preemptive and the policy decides at arrival, this per-arrival recurrence *is* the event
  simulation; no event heap is needed for it.
- Batch size b > 1: a batch starts as soon as an execution slot of the replica is free and either b
  requests are queued or the oldest queued request has waited ``max_wait`` (one median batch latency, the
  same bound the planner assumes). It takes up to b requests that are already at the replica. A batching
  replica has ``c = max(1, round(throughput * p50 / b))`` slots: MLPerf Server rows report a throughput
  that needs several batches in flight (c is 2 for BERT b16 on an L4), and the planner sizes replicas by
  that throughput. Each batch-serving replica keeps a small state machine advanced lazily through a heap
  of "next batch may start" times. Batch-1 replicas have one slot.
- Completions become visible to the policy only once ``finish <= now`` (``on_complete`` feedback and
  ``state.outstanding``): policies never see drawn service times of the future.
- Service times: a log-normal per configuration fitted by least squares to ln p50, ln p90, ln p99 (the
  three profiled quantiles against their standard normal scores), clipped to ``[0.5 p50, 3 p99]`` so no
  draw is negative or absurd. Every request carries one standard normal score ``z`` drawn once per
  (scenario, seed); its service time on replica r is ``exp(mu_r + sigma_r z)`` -- every policy faces the
  same luck. Trace scenarios with measured service times pass ``log_mult`` instead (service =
  ``p50_r * mult``, clipped the same way). A batch uses the score of its first request.
- Energy: serving power (profile ``power_w``; else the device's median profiled power; else 4 W per core +
  60 W per accelerator, as the planner imputes) times service time, shared by the batch; plus the idle power
  of every node that hosts a replica over the simulated span.

Deterministic: no wall clock enters simulated time. The policy's wall time per decision is measured with
``perf_counter_ns`` and reported separately (``decision_us``).
"""
from __future__ import annotations

import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from synergai.models import NodePool, ProfileRecord, ProfileTable
from synergai.planner.candidates import WATTS_PER_ACCELERATOR, WATTS_PER_CORE
from synergai.planner.offline import pack_ffd

Z90 = 1.2815515655446004
Z99 = 2.3263478740408408
CLIP_LO = 0.5   # x p50
CLIP_HI = 3.0   # x p99


def fit_lognormal(p50: float, p90: float, p99: float) -> tuple[float, float]:
    """(mu, sigma) of the log-normal closest (least squares in log space) to the three profiled quantiles."""
    z = np.array([0.0, Z90, Z99])
    y = np.log([p50, p90, p99])
    zc = z - z.mean()
    sigma = max(0.0, float((zc * (y - y.mean())).sum() / (zc * zc).sum()))
    mu = float(y.mean() - sigma * z.mean())
    return mu, sigma


@dataclass
class Replica:
    """One server: a model's configuration on a pool. ``record`` is what the policy believes (planning table)."""

    pool: NodePool
    model: str
    record: ProfileRecord
    group: int = 0
    fallback: bool = False

    @property
    def batch(self) -> int:
        return self.record.batch_size


@dataclass
class Deployment:
    """The replica set a policy runs; replica ids are list positions."""

    replicas: list[Replica]
    name: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.replicas)

    def by_model(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, r in enumerate(self.replicas):
            out.setdefault(r.model, []).append(i)
        return out

    def signature(self) -> tuple:
        """Identity of the deployment as a multiset of (pool, model, configuration), for de-duplication."""
        return tuple(sorted((r.pool.name, r.model, r.record.key) for r in self.replicas))

    def nodes_used(self) -> dict[str, int]:
        """Nodes that host at least one replica, per pool (first-fit decreasing packing)."""
        out: dict[str, int] = {}
        per_pool: dict[str, list] = {}
        pools: dict[str, NodePool] = {}
        for r in self.replicas:
            per_pool.setdefault(r.pool.name, []).append(
                (r.record.cpu_cores, r.record.memory_request_mb, float(r.record.accelerators)))
            pools[r.pool.name] = r.pool
        for name, items in per_pool.items():
            p = pools[name]
            placed = pack_ffd(items, (p.cpu, p.memory_mb, float(p.accelerators)), p.nodes)
            out[name] = p.nodes if placed is None else sum(1 for x in placed if x)
        return out


@dataclass
class Arrivals:
    """Requests of one run, sorted by time. ``z``: the per-request service-time score shared by all policies."""

    time_s: np.ndarray
    model: np.ndarray          # int index into ``models``
    models: list[str]
    deadline_s: np.ndarray
    z: np.ndarray
    log_mult: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.time_s)

    def head(self, n: int) -> "Arrivals":
        return Arrivals(self.time_s[:n], self.model[:n], self.models, self.deadline_s[:n], self.z[:n],
                        None if self.log_mult is None else self.log_mult[:n])


class Request:
    """The request a policy is asked to place (one reused object: valid during the ``choose`` call only)."""

    __slots__ = ("i", "model", "model_idx", "time_s", "deadline_s")

    def __init__(self):
        self.i = 0
        self.model = ""
        self.model_idx = 0
        self.time_s = 0.0
        self.deadline_s = 0.0


class SimState:
    """What a policy may look at: the time and, per replica, requests sent and not yet finished as of now."""

    __slots__ = ("now", "outstanding", "deployment")

    def __init__(self, deployment: Deployment):
        self.now = 0.0
        self.outstanding = [0] * len(deployment)
        self.deployment = deployment


@dataclass
class SimResult:
    arrival: np.ndarray
    dispatch: np.ndarray
    start: np.ndarray
    finish: np.ndarray
    replica: np.ndarray
    deadline: np.ndarray
    response: np.ndarray
    violated: np.ndarray
    lateness: np.ndarray
    energy: np.ndarray
    decision_ns: np.ndarray
    deployment: Deployment
    metrics: dict
    pool_util: dict[str, float]
    wall_s: float
    slot: Optional[np.ndarray] = None        # execution slot per request (0 unless a batching replica has several)
    slots: Optional[list[int]] = None        # execution slots per replica

    def requests_frame(self):
        """Per-request log as a DataFrame (arrival, dispatch, start, finish, replica, pool, configuration, ...)."""
        import pandas as pd

        reps = self.deployment.replicas
        ok = self.replica >= 0
        pool = np.array([r.pool.name for r in reps] + [""], dtype=object)[np.where(ok, self.replica, -1)]
        cfg = np.array([r.record.config_id for r in reps] + [""], dtype=object)[np.where(ok, self.replica, -1)]
        return pd.DataFrame({"arrival_s": self.arrival, "dispatch_s": self.dispatch, "start_s": self.start,
                             "finish_s": self.finish, "replica": self.replica, "pool": pool, "config": cfg,
                             "deadline_ms": self.deadline * 1e3, "response_ms": self.response * 1e3,
                             "violated": self.violated, "lateness_ms": self.lateness * 1e3, "energy_j": self.energy})


def _power(rec: ProfileRecord, device_median: dict[str, float]) -> float:
    if rec.power_w is not None:
        return rec.power_w
    if rec.device in device_median:
        return device_median[rec.device]
    return WATTS_PER_CORE * rec.cpu_cores + WATTS_PER_ACCELERATOR * rec.accelerators


class _TrueTable:
    """Service behaviour the simulator uses: the simulated table (drift) where it has the configuration."""

    def __init__(self, truth: Optional[ProfileTable]):
        self.by_key = {r.key: r for r in truth.records} if truth is not None else {}
        powered: dict[str, list[float]] = {}
        for r in (truth.records if truth is not None else []):
            if r.power_w is not None:
                powered.setdefault(r.device, []).append(r.power_w)
        self.device_median = {d: float(np.median(v)) for d, v in powered.items()}

    def record(self, belief: ProfileRecord) -> ProfileRecord:
        return self.by_key.get(belief.key, belief)


@dataclass
class ServiceParams:
    """Per replica: the simulated service-time law and constants (lists, for fast scalar access)."""

    recs: list
    mu: list
    sig: list
    lo: list
    hi: list
    power: list
    half: list
    batch: list
    wait: list

    def service(self, r: int, score: float) -> float:
        x = math.exp(self.mu[r] + self.sig[r] * score)
        return min(max(x, self.lo[r]), self.hi[r])


def service_params(deployment: Deployment, truth: Optional[ProfileTable] = None, *,
                   trace_service: bool = False) -> ServiceParams:
    """Service law per replica from the simulated table; ``trace_service``: ln s = ln p50 + score."""
    tt = _TrueTable(truth)
    recs = [tt.record(r.record) for r in deployment.replicas]
    mu, sig, lo, hi = [], [], [], []
    for rec in recs:
        if trace_service:
            m, sg = math.log(rec.latency_p50_ms / 1e3), 1.0
        else:
            m, sg = fit_lognormal(rec.latency_p50_ms / 1e3, rec.latency_p90_ms / 1e3, rec.latency_p99_ms / 1e3)
        mu.append(m)
        sig.append(sg)
        lo.append(CLIP_LO * rec.latency_p50_ms / 1e3)
        hi.append(CLIP_HI * rec.latency_p99_ms / 1e3)
    return ServiceParams(recs, mu, sig, lo, hi, [_power(rec, tt.device_median) for rec in recs],
                         [r.pool.rtt_ms / 2e3 for r in deployment.replicas], [r.batch for r in deployment.replicas],
                         [rec.latency_p50_ms / 1e3 for rec in recs])


def simulate(arrivals: Arrivals, deployment: Deployment, policy, *, truth: Optional[ProfileTable] = None) -> SimResult:
    """Run one replay. ``policy`` has ``choose(req, state) -> replica id | -1`` and optional ``on_complete``."""
    t_wall = time.perf_counter()
    n = len(arrivals)
    R = len(deployment)
    sp = service_params(deployment, truth, trace_service=arrivals.log_mult is not None)
    mu, sig, lo, hi, power, half, batch, wait = sp.mu, sp.sig, sp.lo, sp.hi, sp.power, sp.half, sp.batch, sp.wait
    recs = sp.recs
    free = [0.0] * R
    busy = [0.0] * R
    slots = {r: [0.0] * max(1, int(round(recs[r].throughput_rps * recs[r].latency_p50_ms / 1e3 / batch[r])))
             for r in range(R) if batch[r] > 1}

    T = arrivals.time_s.tolist()
    M = arrivals.model.tolist()
    names = arrivals.models
    D = arrivals.deadline_s.tolist()
    Z = (arrivals.log_mult if arrivals.log_mult is not None else arrivals.z).tolist()

    disp = [math.nan] * n
    start = [math.nan] * n
    finish = [math.nan] * n
    energy = [0.0] * n
    rep = [-1] * n
    slot_of = [0] * n
    dns = np.zeros(n, dtype=np.int64)

    state = SimState(deployment)
    outstanding = state.outstanding
    comp: list[tuple[float, int]] = []           # (finish, request) not yet visible to the policy
    bev: list[tuple[float, int]] = []            # (time a batch may start, replica)
    queues: dict[int, deque] = {r: deque() for r in range(R) if batch[r] > 1}
    sched = [math.inf] * R
    choose = policy.choose
    on_complete = policy.on_complete if getattr(policy, "needs_feedback", False) else None
    req = Request()
    heappush, heappop = heapq.heappush, heapq.heappop
    exp = math.exp
    perf = time.perf_counter_ns

    def next_start(r: int) -> float:
        q = queues[r]
        b = batch[r]
        full_at = disp[q[b - 1]] if len(q) >= b else math.inf
        first_due = disp[q[0]] + wait[r]
        s = full_at if full_at < first_due else first_due
        fr = min(slots[r])
        return fr if fr > s else s

    def advance(r: int, t: float) -> None:
        """Start every batch of replica r that starts strictly before t (no arrival to r before t)."""
        q = queues[r]
        b = batch[r]
        while q:
            s = next_start(r)
            if s >= t:
                if s != sched[r]:
                    sched[r] = s
                    heappush(bev, (s, r))
                return
            k = 0
            while k < len(q) and k < b and disp[q[k]] <= s:
                k += 1
            members = [q.popleft() for _ in range(k)]
            x = exp(mu[r] + sig[r] * Z[members[0]])
            svc = lo[r] if x < lo[r] else (hi[r] if x > hi[r] else x)
            f = s + svc
            sl = slots[r]
            slot = sl.index(min(sl))
            sl[slot] = f
            busy[r] += svc
            e = power[r] * svc / k
            for j in members:
                slot_of[j] = slot
                start[j] = s
                finish[j] = f
                energy[j] = e
                heappush(comp, (f, j))
        sched[r] = math.inf

    for i in range(n):
        t = T[i]
        while bev and bev[0][0] < t:
            s, r = heappop(bev)
            if s == sched[r]:
                sched[r] = math.inf
                advance(r, t)
        while comp and comp[0][0] <= t:
            f, j = heappop(comp)
            r = rep[j]
            outstanding[r] -= 1
            if on_complete is not None:
                on_complete(j, r, start[j], f)
        state.now = t
        req.i = i
        mi = M[i]
        req.model_idx = mi
        req.model = names[mi]
        req.time_s = t
        req.deadline_s = D[i]
        t0 = perf()
        r = choose(req, state)
        dns[i] = perf() - t0
        if r < 0:
            continue
        rep[i] = r
        outstanding[r] += 1
        d = t + half[r]
        disp[i] = d
        if batch[r] == 1:
            s = free[r] if free[r] > d else d
            x = exp(mu[r] + sig[r] * Z[i])
            svc = lo[r] if x < lo[r] else (hi[r] if x > hi[r] else x)
            f = s + svc
            free[r] = f
            busy[r] += svc
            start[i] = s
            finish[i] = f
            energy[i] = power[r] * svc
            heappush(comp, (f, i))
        else:
            queues[r].append(i)
            advance(r, t)
            ns = next_start(r)
            if ns != sched[r]:
                sched[r] = ns
                heappush(bev, (ns, r))
    for r in queues:
        advance(r, math.inf)

    nslots = [len(slots[r]) if r in slots else 1 for r in range(R)]
    busy = [b / k for b, k in zip(busy, nslots)]
    res = _collect(arrivals, deployment, disp, start, finish, rep, energy, dns, busy, half, policy)
    res.slot = np.asarray(slot_of)
    res.slots = nslots
    res.wall_s = time.perf_counter() - t_wall
    return res


def _collect(arrivals, deployment, disp, start, finish, rep, energy, dns, busy, half, policy) -> SimResult:
    n = len(arrivals)
    rep = np.asarray(rep, dtype=np.int64)
    finish = np.asarray(finish, dtype=np.float64)
    ok = rep >= 0
    halfa = np.asarray(half + [0.0])[np.where(ok, rep, -1)]
    response = np.where(ok, finish + halfa - arrivals.time_s, np.inf)
    dl = arrivals.deadline_s
    violated = response > dl + 1e-12
    # a request no replica could take counts as late by one deadline
    lateness = np.where(ok, np.maximum(0.0, response - dl), dl)
    energy = np.asarray(energy)
    window = int(getattr(policy, "window", 1) or 1)
    dns = dns.astype(np.float64)
    if window > 1 and n:
        pad = (-n) % window
        w = np.concatenate([dns, np.zeros(pad)]).reshape(-1, window)
        counts = np.full(len(w), window, dtype=float)
        if pad:
            counts[-1] = window - pad
        dns = np.repeat(w.sum(axis=1) / counts, window)[:n]
    span = 0.0
    if n:
        last = float(np.nanmax(np.where(ok, finish, arrivals.time_s))) if ok.any() else float(arrivals.time_s[-1])
        span = max(0.0, last - float(arrivals.time_s[0]))
    idle_j = 0.0
    for name, k in deployment.nodes_used().items():
        pool = next(r.pool for r in deployment.replicas if r.pool.name == name)
        idle_j += pool.idle_power_w * k * span
    pools: dict[str, list[int]] = {}
    for i, r in enumerate(deployment.replicas):
        pools.setdefault(r.pool.name, []).append(i)
    pool_util = {p: (float(sum(busy[i] for i in ids)) / (len(ids) * span) if span > 0 else 0.0)
                 for p, ids in pools.items()}
    resp_ok = response[ok] * 1e3
    pct = (lambda q: float(np.percentile(resp_ok, q))) if len(resp_ok) else (lambda q: float("nan"))
    v = int(violated.sum())
    metrics = {
        "requests": n,
        "violations": v,
        "violation_rate": v / n if n else 0.0,
        "unplaced": int((~ok).sum()),
        "excess_ms_total": float(lateness.sum() * 1e3),
        "excess_ms_mean": float(lateness.sum() * 1e3 / n) if n else 0.0,
        "late_ms_mean": float(lateness[violated].mean() * 1e3) if v else 0.0,
        "p50_latency_ms": pct(50),
        "p95_latency_ms": pct(95),
        "p99_latency_ms": pct(99),
        "energy_j": float(energy.sum() + idle_j),
        "serving_energy_j": float(energy.sum()),
        "decision_us_mean": float(dns.mean() / 1e3) if n else 0.0,
        "decision_us_p99": float(np.percentile(dns, 99) / 1e3) if n else 0.0,
        "replicas": len(deployment),
        "span_s": span,
    }
    return SimResult(arrivals.time_s, np.asarray(disp), np.asarray(start), finish, rep, dl, response, violated,
                     lateness, energy, dns, deployment, metrics, pool_util, 0.0)
