"""Discrete-event simulator: replays arrivals against a deployment of servers and an online policy.

Model
-----
- A deployment is a list of servers (``Replica``; replica ids are list positions). A server runs on one
  pool and hosts one or more (model, configuration) pairs (``Replica.records``): a dedicated server hosts
  one, a *shared* server several, with ONE queue and one device whose time its models share.
- A request decided at its arrival time ``a`` travels half the pool's RTT to the server
  (``dispatch = a + rtt/2``), queues, is served in a call, and the answer travels back
  (``response = finish + rtt/2 - a``). It violates its QoS target when ``response > deadline``.
- Service behaviour is :mod:`synergai.planner.service` (the one service model; nothing is re-derived
  here). Configuration ``j`` has batch ``b_j``, batch wait ``w_j = ServiceModel.batch_wait`` and
  ``c_j = ServiceModel.slots`` execution slots.
- Batch formation: a call of ``j`` is *ready* when ``b_j`` requests of its model are queued at the server
  or the oldest of them has waited ``w_j`` (batch 1: as soon as one is queued).
- Device: a call of ``j`` occupies a share ``1/c_j`` of the server for its duration. Calls start in the
  order they become ready (FIFO; ties to the older oldest request), each as soon as the shares of the
  running calls plus its own fit in 1, and never before an earlier call started. A call takes the (up to
  ``b_j``) oldest requests of its model that are at the server when it starts. So a dedicated server with
  ``c`` slots runs ``c`` calls at once, and a shared server mixes its models' calls. (Shares are counted
  exactly in integer units: the server has ``L = lcm(c_j)`` units, a call of ``j`` takes ``L / c_j``.)
- Servers whose calls are all batch 1 are advanced per arrival (a call's start is fixed once it is
  dispatched); batching servers keep per-model queues advanced lazily through a heap of "next call may
  start" times.
- Completions become visible to the policy only once ``finish <= now`` (``on_complete`` feedback and
  ``state.outstanding``): policies never see drawn service times of the future.
- Service times: every request carries one standard normal score ``z`` drawn once per (scenario, seed);
  a call's duration is ``ServiceModel.draw(z)`` of its first request (the clipped log-normal fitted to the
  simulated table's p50/p90/p99): every policy faces the same luck. Trace scenarios with measured service
  times pass ``log_mult`` instead (duration = ``p50 * mult``, clipped the same way). Under drift
  (``truth``), durations and power come from the simulated table, while the server's configuration
  (batch, slots, batch wait) is the believed one it was deployed with.
- Energy: each call is charged ``energy_of_call(serving_power, duration)`` (its slot's share of the
  device's serving power, ``serving_power`` with the simulated table's ``device_power_ceiling``), split
  over its requests; plus the idle power of every node that hosts a server over the simulated span (the
  servers packed per pool with first-fit decreasing).

Deterministic: no wall clock enters simulated time. The policy's wall time per decision is measured with
``perf_counter_ns`` and reported separately (``decision_us``).
"""

from __future__ import annotations

import heapq
import math
import time
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Mapping, Optional

import numpy as np

from synergai.models import NodePool, ProfileRecord, ProfileTable
from synergai.planner.packing import pack_ffd
from synergai.planner.service import ServiceModel, device_power_ceiling, energy_of_call, serving_power


class Replica:
    """One server on a pool hosting one or more (model, configuration) pairs.

    ``records``: model -> the profile record it runs (what the policy believes: the planning table).
    ``group``: index of the server group it belongs to (servers of one group are identical); ``name``:
    that group's name (plan deployments). ``resources``: (cores, MiB, accelerators) the server requests;
    by default the largest cores and accelerators of its configurations and the sum of their memory
    (every hosted model is loaded).
    """

    __slots__ = ("pool", "records", "group", "fallback", "name", "resources")

    def __init__(
        self,
        pool: NodePool,
        records: Mapping[str, ProfileRecord],
        group: int = 0,
        *,
        fallback: bool = False,
        name: str = "",
        resources: Optional[tuple[float, float, float]] = None,
    ):
        if not records:
            raise ValueError("a server hosts at least one model")
        self.pool = pool
        self.records = dict(records)
        self.group = group
        self.fallback = fallback
        self.name = name
        if resources is None:
            rs = self.records.values()
            resources = (
                max(r.cpu_cores for r in rs),
                sum(r.memory_request_mb for r in rs),
                float(max(r.accelerators for r in rs)),
            )
        self.resources = tuple(float(x) for x in resources)

    @classmethod
    def single(cls, pool: NodePool, model: str, record: ProfileRecord, group: int = 0, **kw) -> Replica:
        """A dedicated server: one model, one configuration."""
        return cls(pool, {model: record}, group, **kw)

    @property
    def shared(self) -> bool:
        return len(self.records) > 1

    @property
    def models(self) -> list[str]:
        return list(self.records)

    def _only(self) -> tuple[str, ProfileRecord]:
        if len(self.records) != 1:
            raise ValueError(
                f"server hosts {len(self.records)} models ({', '.join(self.records)}); use .records[model]"
            )
        return next(iter(self.records.items()))

    @property
    def model(self) -> str:
        """The model of a dedicated server (ValueError on a shared one)."""
        return self._only()[0]

    @property
    def record(self) -> ProfileRecord:
        """The configuration of a dedicated server (ValueError on a shared one)."""
        return self._only()[1]

    @property
    def batch(self) -> int:
        """Batch size of a dedicated server (ValueError on a shared one)."""
        return self._only()[1].batch_size

    def __repr__(self) -> str:
        cfg = ", ".join(f"{m}: {r.config_id}" for m, r in self.records.items())
        return f"Replica({self.pool.name}, {{{cfg}}}, group={self.group})"


@dataclass
class Deployment:
    """The server set a policy runs; replica ids are list positions.

    ``profiles``: the planning table the deployment was built from (its device power ceilings impute the
    power of unmeasured configurations when no simulated table is given)."""

    replicas: list[Replica]
    name: str = ""
    notes: list[str] = field(default_factory=list)
    profiles: Optional[ProfileTable] = None

    def __len__(self) -> int:
        return len(self.replicas)

    def by_model(self) -> dict[str, list[int]]:
        """Model -> ids of the servers that host it (shared servers appear under each of their models)."""
        out: dict[str, list[int]] = {}
        for i, r in enumerate(self.replicas):
            for m in r.records:
                out.setdefault(m, []).append(i)
        return out

    def signature(self) -> tuple:
        """Identity of the deployment as a multiset of servers (pool, hosted (model, configuration)s)."""
        return tuple(
            sorted((r.pool.name, tuple(sorted((m, rec.key) for m, rec in r.records.items()))) for r in self.replicas)
        )

    def nodes_used(self) -> dict[str, int]:
        """Nodes that host at least one server, per pool (first-fit decreasing packing of the servers)."""
        out: dict[str, int] = {}
        per_pool: dict[str, list] = {}
        pools: dict[str, NodePool] = {}
        for r in self.replicas:
            per_pool.setdefault(r.pool.name, []).append(r.resources)
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
    model: np.ndarray  # int index into ``models``
    models: list[str]
    deadline_s: np.ndarray
    z: np.ndarray
    log_mult: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.time_s)

    def head(self, n: int) -> Arrivals:
        return Arrivals(
            self.time_s[:n],
            self.model[:n],
            self.models,
            self.deadline_s[:n],
            self.z[:n],
            None if self.log_mult is None else self.log_mult[:n],
        )


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
    """What a policy may look at: the time and, per server, requests sent and not yet finished as of now."""

    __slots__ = ("now", "outstanding", "deployment")

    def __init__(self, deployment: Deployment):
        self.now = 0.0
        self.outstanding = [0] * len(deployment)
        self.deployment = deployment


@dataclass
class ServiceParams:
    """The simulated service behaviour of a deployment, per hosted (server, model) pair ``k``.

    ``of[r][model] = k``; ``models[k]`` is its :class:`ServiceModel` (simulated durations, the deployed
    batch, slots and batch wait), ``records[k]`` the simulated profile record, ``power[k]`` its serving
    power (W), ``config_ids[k]`` the deployed configuration; ``half[r]``: half the server's pool RTT, s."""

    half: list[float]
    of: list[dict[str, int]]
    replica: list[int]
    model_name: list[str]
    models: list[ServiceModel]
    records: list[ProfileRecord]
    power: list[float]
    config_ids: list[str]

    def k(self, r: int, model: Optional[str] = None) -> int:
        of = self.of[r]
        if model is None:
            if len(of) != 1:
                raise ValueError(f"server {r} hosts several models; name one")
            return next(iter(of.values()))
        return of[model]

    def sm(self, r: int, model: Optional[str] = None) -> ServiceModel:
        return self.models[self.k(r, model)]

    def service(self, r: int, score: float, model: Optional[str] = None) -> float:
        """Duration of a call on server ``r`` (of ``model``; optional on a dedicated server) for a score, s."""
        return self.models[self.k(r, model)].draw(score)


def service_params(
    deployment: Deployment, truth: Optional[ProfileTable] = None, *, trace_service: bool = False
) -> ServiceParams:
    """Service behaviour of every hosted (server, model) from the simulated table (``truth``, else the
    believed records); ``trace_service``: duration = p50 x exp(score) (scores are measured log multipliers)."""
    by_key = {r.key: r for r in truth.records} if truth is not None else {}
    table = truth if truth is not None else deployment.profiles
    if table is not None:
        ceiling = device_power_ceiling(table.records)
    else:
        ceiling = device_power_ceiling(rec for rep in deployment.replicas for rec in rep.records.values())
    cache: dict[tuple, tuple] = {}
    sp = ServiceParams([r.pool.rtt_ms / 2e3 for r in deployment.replicas], [], [], [], [], [], [], [])
    for i, rep in enumerate(deployment.replicas):
        of: dict[str, int] = {}
        for model, belief in rep.records.items():
            key = belief.key
            if key not in cache:
                true = by_key.get(key, belief)
                deployed = ServiceModel.of(belief)
                sm = ServiceModel.of(true)
                if trace_service:
                    sm = replace(sm, mu=math.log(true.latency_p50_ms / 1e3), sigma=1.0)
                sm = replace(sm, batch=deployed.batch, slots=deployed.slots, batch_wait=deployed.batch_wait)
                cache[key] = (sm, true, serving_power(true, ceiling)[0])
            sm, true, pw = cache[key]
            of[model] = len(sp.models)
            sp.replica.append(i)
            sp.model_name.append(model)
            sp.models.append(sm)
            sp.records.append(true)
            sp.power.append(pw)
            sp.config_ids.append(belief.config_id)
        sp.of.append(of)
    return sp


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
    hosted: Optional[np.ndarray] = None  # per request: hosted (server, model) index k of ``params`` (-1 unplaced)
    params: Optional[ServiceParams] = None  # the simulated service behaviour

    def requests_frame(self):
        """Per-request log as a DataFrame (arrival, dispatch, start, finish, replica, pool, configuration, ...)."""
        import pandas as pd

        reps = self.deployment.replicas
        ok = self.replica >= 0
        pool = np.array([r.pool.name for r in reps] + [""], dtype=object)[np.where(ok, self.replica, -1)]
        ids = list(self.params.config_ids) if self.params is not None else []
        cfg = np.array(ids + [""], dtype=object)[np.where(ok, self.hosted, -1)]
        return pd.DataFrame(
            {
                "arrival_s": self.arrival,
                "dispatch_s": self.dispatch,
                "start_s": self.start,
                "finish_s": self.finish,
                "replica": self.replica,
                "pool": pool,
                "config": cfg,
                "deadline_ms": self.deadline * 1e3,
                "response_ms": self.response * 1e3,
                "violated": self.violated,
                "lateness_ms": self.lateness * 1e3,
                "energy_j": self.energy,
            }
        )


def _lcm(xs) -> int:
    out = 1
    for x in xs:
        out = out * x // math.gcd(out, x)
    return out


def simulate(arrivals: Arrivals, deployment: Deployment, policy, *, truth: Optional[ProfileTable] = None) -> SimResult:
    """Run one replay. ``policy`` has ``choose(req, state) -> replica id | -1`` and optional ``on_complete``."""
    t_wall = time.perf_counter()
    n = len(arrivals)
    R = len(deployment)
    sp = service_params(deployment, truth, trace_service=arrivals.log_mult is not None)
    half = sp.half
    names = arrivals.models
    # per hosted (server, model) k
    K = len(sp.models)
    draw = [sm.draw for sm in sp.models]
    B = [sm.batch for sm in sp.models]
    W = [sm.batch_wait for sm in sp.models]
    SMS = sp.models
    EJ = [energy_of_call(p, 1.0, sm) for p, sm in zip(sp.power, SMS)]  # J per second of a call (linear)
    SHARE = [1.0 / sm.slots for sm in sp.models]
    # per server: arrival model index -> k; capacity units (sorted free times); last call start
    name_idx = {m: i for i, m in enumerate(names)}
    RC: list[list[int]] = []
    for of in sp.of:
        row = [-1] * len(names)
        for m, k in of.items():
            if m in name_idx:
                row[name_idx[m]] = k
        RC.append(row)
    L = [_lcm(SMS[k].slots for k in of.values()) for of in sp.of]
    U = [0] * K
    for r, of in enumerate(sp.of):
        for k in of.values():
            U[k] = L[r] // SMS[k].slots
    units = [[0.0] * L[r] for r in range(R)]
    last = [0.0] * R
    lazy = [any(B[k] > 1 for k in of.values()) for of in sp.of]  # batching servers: event driven
    KS = [list(of.values()) for of in sp.of]
    Q: list[deque] = [deque() for _ in range(K)]
    busy = [0.0] * R

    T = arrivals.time_s.tolist()
    M = arrivals.model.tolist()
    D = arrivals.deadline_s.tolist()
    Z = (arrivals.log_mult if arrivals.log_mult is not None else arrivals.z).tolist()

    disp = [math.nan] * n
    start = [math.nan] * n
    finish = [math.nan] * n
    energy = [0.0] * n
    rep = [-1] * n
    hosted = [-1] * n
    dns = np.zeros(n, dtype=np.int64)

    state = SimState(deployment)
    outstanding = state.outstanding
    comp: list[tuple[float, int]] = []  # (finish, request) not yet visible to the policy
    bev: list[tuple[float, int]] = []  # (time a call may start, server)
    sched = [math.inf] * R
    choose = policy.choose
    on_complete = policy.on_complete if getattr(policy, "needs_feedback", False) else None
    req = Request()
    heappush, heappop = heapq.heappush, heapq.heappop
    perf = time.perf_counter_ns
    inf = math.inf

    def occupy(r: int, u: int, f: float) -> None:
        """The call ending at ``f`` takes the ``u`` earliest-free units of server r (sorted list)."""
        un = units[r]
        if u == 1:
            del un[0]
            un.insert(bisect_right(un, f), f)
        else:
            del un[:u]
            x = bisect_right(un, f)
            un[x:x] = [f] * u

    def next_call(r: int) -> tuple[float, int]:
        """(start, k) of the next call of batching server r given the requests queued now."""
        best = inf
        bk = -1
        bh = inf
        for k in KS[r]:
            q = Q[k]
            if not q:
                continue
            h = disp[q[0]]
            rd = h + W[k]
            b = B[k]
            if len(q) >= b:
                x = disp[q[b - 1]]
                if x < rd:
                    rd = x
            if rd < best or (rd == best and h < bh):
                best, bk, bh = rd, k, h
        if bk < 0:
            return inf, -1
        s = units[r][U[bk] - 1]
        if s < best:
            s = best
        if s < last[r]:
            s = last[r]
        return s, bk

    def advance(r: int, t: float) -> None:
        """Start every call of server r that starts strictly before t (no request reaches r before t)."""
        while True:
            s, k = next_call(r)
            if k < 0:
                sched[r] = inf
                return
            if s >= t:
                if s != sched[r]:
                    sched[r] = s
                    heappush(bev, (s, r))
                return
            q = Q[k]
            b = B[k]
            members = [q.popleft()]
            while q and len(members) < b and disp[q[0]] <= s:
                members.append(q.popleft())
            svc = draw[k](Z[members[0]])
            f = s + svc
            occupy(r, U[k], f)
            last[r] = s
            busy[r] += svc * SHARE[k]
            e = EJ[k] * svc / len(members)
            for j in members:
                start[j] = s
                finish[j] = f
                energy[j] = e
                heappush(comp, (f, j))

    for i in range(n):
        t = T[i]
        while bev and bev[0][0] < t:
            s, r = heappop(bev)
            if s == sched[r]:
                sched[r] = inf
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
        k = RC[r][mi]
        if k < 0:
            raise ValueError(
                f"policy {getattr(policy, 'name', policy)!r} sent a request of {names[mi]!r} to "
                f"server {r}, which hosts only {', '.join(deployment.replicas[r].records)}"
            )
        rep[i] = r
        hosted[i] = k
        outstanding[r] += 1
        d = t + half[r]
        disp[i] = d
        if lazy[r]:
            Q[k].append(i)
            advance(r, t)
            ns, _ = next_call(r)
            if ns != sched[r]:
                sched[r] = ns
                heappush(bev, (ns, r))
            continue
        # batch-1 server: the call starts as soon as the device has room, after every earlier call
        un = units[r]
        svc = draw[k](Z[i])
        if L[r] == 1:  # one unit: starts are monotone by themselves
            s = un[0]
            if s < d:
                s = d
            f = s + svc
            un[0] = f
        else:
            u = U[k]
            s = un[u - 1]
            if s < d:
                s = d
            if s < last[r]:
                s = last[r]
            f = s + svc
            occupy(r, u, f)
            last[r] = s
        busy[r] += svc * SHARE[k]
        start[i] = s
        finish[i] = f
        energy[i] = EJ[k] * svc
        heappush(comp, (f, i))
    for r in range(R):
        if lazy[r]:
            advance(r, inf)

    res = _collect(arrivals, deployment, disp, start, finish, rep, energy, dns, busy, half, policy)
    res.hosted = np.asarray(hosted, dtype=np.int64)
    res.params = sp
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
    # a request no server could take counts as late by one deadline
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
    pool_util = {
        p: (float(sum(busy[i] for i in ids)) / (len(ids) * span) if span > 0 else 0.0) for p, ids in pools.items()
    }
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
        "idle_energy_j": float(idle_j),
        "decision_us_mean": float(dns.mean() / 1e3) if n else 0.0,
        "decision_us_p99": float(np.percentile(dns, 99) / 1e3) if n else 0.0,
        "replicas": len(deployment),
        "span_s": span,
    }
    return SimResult(
        arrivals.time_s,
        np.asarray(disp),
        np.asarray(start),
        finish,
        rep,
        dl,
        response,
        violated,
        lateness,
        energy,
        dns,
        deployment,
        metrics,
        pool_util,
        0.0,
    )
