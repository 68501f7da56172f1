r"""Online stage: per-request server choice, warm-started from the offline plan.

Servers
    Every server of every group of ``plan.server_groups()`` gets a global id, in that order (a group's
    servers are consecutive; ``sched.servers[i] = (group name, index in group)``).  A request of model
    ``m`` may go to any server of any group that hosts ``m``.  A *shared* group's servers host several
    models behind one queue, so a server's state is one estimate for all of them:

        free[s]  = when server s has done all the work queued on it (s, estimated)
        on assigning a request of m:   start = max(now, free[s]);  free[s] = start + w_m

    with ``w_m = ServiceModel.work_per_request`` of m's configuration on that group (server-seconds per
    request, i.e. 1 / usable capacity; slots and batching included): a request waits behind the work
    of *every* model queued on the server.  Within a group all servers are interchangeable for a given
    model, so each group keeps its servers sorted by free time (a bisect-maintained list): the earliest
    free server is read in O(1), updates cost O(log n) comparisons, and no decision scans servers.
    The cost of a decision grows with the number of groups hosting the model, not with servers.

Deadline check (the planner's service model, :mod:`synergai.planner.service`)
    check  = start + batch_wait + S(q) + RTT      (``fixed_delay(sm, q, rtt)``; S(q) scaled by drift;
                                                   dedicated batching servers: see below)
    meets  = check <= arrival + deadline;  slack = arrival + deadline - check
    ``q`` is ``check_quantile`` (default 0.99, the planner's quantile; ``"p90"`` and ``"mean"`` are
    accepted for compatibility and mean 0.9 and the mean call).  ``Decision.finish_s`` is the expected
    finish (start, + batch wait if the server was idle, + mean call + RTT); ``Decision.check_s`` the
    quantile finish; ``lateness_ms`` = max(0, check - due), so ``meets`` <=> ``lateness_ms == 0``.

Batching servers
    On a dedicated server of batch ``b > 1`` the requests of this request's own (forming) batch are
    served in the same call, so they are not waited for twice.  Each server keeps the estimated start of
    the call of the last batch formed and how many requests it holds: a request joins it while it has
    fewer than ``b`` and has not started (``now < start``), and is then estimated to start with it;
    otherwise it opens a new batch, whose call starts when the device has done its queued work and the
    batch wait is over: ``max(free[s], now + batch_wait)`` -- the batch wait and the wait for the device
    overlap, as in the service model (one or the other, not their sum).  ``check`` = that start +
    S(q) + RTT.  (On shared servers the other models' work interleaves, so every queued request counts
    as ahead and the batch wait is added in full.)

Co-hosted models (shared servers)
    A shared server's slack for model m may belong to a tighter model m' it also hosts.  Every m' has
    the queueing budget ``deadline(m') - fixed(m')``; ``harm_s`` (of m there) is the smallest budget of
    the other hosted models, ``protect_s = (1 - slack_fraction) harm_s``.  A request of m that would
    leave more than ``harm_s`` makes the next request of m' miss: it does not count as
    meeting there (nor as a sacrifice victim), so it is used only when no other group can take the
    request (least lateness ranks it last); with ``shed`` it is still used rather than refusing a request
    that can meet its deadline.  Beyond ``protect_s`` it counts as meeting but never
    as comfortable, and ranks after the groups that stay within it.

Choice among groups that meet (prefer slack)
    A meeting group is *comfortable* when its slack is at least ``slack_fraction`` (default 0.2) of
    its own queueing budget (the deadline minus its load-independent delay: batch wait, call quantile,
    RTT), i.e. when queueing has not eaten most of the room it had, and (shared servers) the backlog
    it leaves is within ``protect_s``.  (A fraction of the whole deadline
    would call a configuration that is slow by design -- a large batch near its deadline -- never
    comfortable, and divert its planned traffic to fast servers the plan gave to other models.)  Among comfortable groups: smooth weighted round-robin over the plan's routing shares
    (the group furthest behind its share, ``(sent + 1) / share``, first; groups with no planned traffic
    -- standby -- only after those with a share; then the origin's tier, then energy per request).  If
    groups meet but none comfortably: the one with the most slack (those within ``protect_s`` first).  So groups that barely meet are
    never picked while another has room, and the plan's split is followed while everything has room.

Overload (no group meets): ``overload=``
    ``"sacrifice"`` (default)  the most backlogged server whose *pessimistic* lateness stays within
        ``sacrifice_cap`` deadlines: pessimistic finish = start + z sqrt(backlog * Var(S) / (c E[S]))
        + fixed_delay(sm, cap_quantile, rtt), i.e. the queued work's mean plus a ``cap_quantile``
        margin for its randomness (calls ahead treated as independent), then this request's own
        ``cap_quantile`` service.  Servers already past the cap are skipped (never "the most backlogged
        regardless").  A sacrificed server is of no use to on-time requests, so the others stay able to
        meet deadlines once a burst passes.  If no server is within the cap: ``beyond_cap`` rule
        (``"least-lateness"`` by default, or ``"shed"``).
        Guaranteed: every sacrificed request's predicted ``cap_quantile`` lateness, given the queue as
        estimated at decision time, is <= the cap.  Not guaranteed: its real lateness -- the estimate can
        be wrong (profiles drift before recalibration catches up, completion feedback arrives late,
        queued calls are longer than a ``cap_quantile`` margin covers, shared servers' mixed variance is
        approximated by the victim model's own), and requests sent by ``least-lateness`` past the cap
        are not bounded at all.  For a hard rule use ``"shed"``.
    ``"least-lateness"``  the server with the least predicted lateness (earliest quantile finish).
    ``"shed"``  answer at once that the deadline cannot be met: a Decision with ``replica=-1``,
        ``group=-1``, ``meets=False``, ``shed=True``, reason ``"shed"`` (nothing is queued; callers count
        it as a violation, the gateway answers 503).

Feedback and drift
    ``complete(decision, actual_end_s, actual_start_s)`` shifts the server's queue by the error of this
    request's end of service against the expected end the decision was made with; corrections already
    applied since the decision (earlier requests on the same FIFO server) are not counted twice.  With
    the start, the observed call duration over the profiled mean updates an EWMA (``drift_alpha``) per
    (group, model) that scales that model's service quantile, mean and work on that group.

Models absent from the plan get fallback servers: one virtual server per pool with a deadline-feasible
candidate (``plan.candidates``: fits and p99 response <= the deadline; any that fits when no deadline is
known), its service taken as the candidate's p99 (deterministic, conservative).
Pure and deterministic given the times it is handed; the clock is injectable.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right, insort
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from synergai.models import Plan

from .service import ServiceModel, z_score

DEFAULT_QUANTILE = 0.99
"""The planner's response quantile (``PlanOptions.quantile``): the default deadline check."""
OVERLOAD_RULES = ("sacrifice", "least-lateness", "shed")
INF = math.inf
BIG = 1e9  # seconds: ranks unprotected meeting groups after every protected one


@dataclass(eq=False)
class ServerGroup:
    """One group of identical servers (a plan server group, or a fallback's virtual server)."""

    index: int
    name: str
    pool: str
    tier: str
    rtt_s: float
    replicas: int
    first: int  # global id of the group's first server
    shared: bool
    models: list[str]
    fallback: bool = False
    order: list = field(default_factory=list)  # [(free_s, global server id)], sorted
    routes: list = field(default_factory=list)  # the Groups (one per hosted model) on these servers


@dataclass(eq=False)
class Group:
    """One model on one server group: what callers know as ``sched.groups[gid]`` (``Decision.group``).

    On a shared server group several routes (one per hosted model) share the same servers
    (``first_replica .. first_replica + replicas - 1``)."""

    gid: int
    model: str
    pool: str
    tier: str
    config_id: str
    server: str  # server group name
    sg: ServerGroup
    sm: ServiceModel
    replicas: int
    first_replica: int
    rtt_s: float
    share: float  # plan's fraction of the model's traffic routed here
    energy_j: float  # J per request
    q: Optional[float]  # check quantile (None: the mean call)
    fallback: bool = False
    shared: bool = False
    sent: int = 0
    drift: float = 1.0  # observed / profiled call duration (EWMA)
    # derived, recomputed by _calibrate()
    work_s: float = 0.0  # server-seconds per request
    mean_s: float = 0.0  # mean call duration
    fixed_s: float = 0.0  # batch wait + S(q) + RTT
    call_fixed_s: float = 0.0  # S(q) + RTT: after the call starts (dedicated batching servers' check)
    cap_fixed_s: float = 0.0  # batch wait + S(cap quantile) + RTT
    var_rate: float = 0.0  # Var(S) / (slots * E[S]): backlog variance per second of backlog
    inv_share: float = INF
    batch: int = 1  # requests per call on a dedicated server (1 on shared servers: see assign)
    harm_s: float = INF  # backlog beyond which the next request of a co-hosted model would miss
    protect_s: float = INF  # most backlog this model may leave on a shared server (see _protect)
    order: list = field(default_factory=list)  # the server group's order list (shared, mutated in place)
    _base: Optional[tuple] = None

    def _calibrate(self, cap_q: float) -> None:
        """Derive the per-decision constants (the service model's figures, computed once, times drift)."""
        if self._base is None:
            sm = self.sm
            var = max(0.0, sm.second_moment - sm.mean**2)
            self._base = (
                sm.work_per_request,
                sm.mean,
                sm.mean if self.q is None else sm.quantile(self.q),
                sm.quantile(cap_q),
                var / (sm.slots * sm.mean) if sm.mean > 0 else 0.0,
            )
        work, mean, svc, svc_cap, var_rate = self._base
        d = self.drift
        self.work_s = work * d
        self.mean_s = mean * d
        self.call_fixed_s = svc * d + self.rtt_s
        self.fixed_s = self.sm.batch_wait + self.call_fixed_s
        self.cap_fixed_s = self.sm.batch_wait + max(svc, svc_cap) * d + self.rtt_s
        self.var_rate = var_rate * d  # Var scales with d^2, the mean with d
        self.inv_share = 1.0 / self.share if self.share > 0 else INF

    # compatibility with callers of the former per-assignment groups
    @property
    def service_s(self) -> float:
        return self.mean_s


@dataclass(slots=True)
class Decision:
    model: str
    replica: int  # global server id (-1: not served -- unknown model, or shed)
    group: int  # index in sched.groups (-1 when replica is -1)
    pool: str
    start_s: float  # estimated start (the server's queued work done)
    finish_s: float  # expected finish incl. RTT
    meets: bool  # check_s <= arrival + deadline
    lateness_ms: float  # max(0, check_s - due)
    reason: str = ""
    candidates: list = field(default_factory=list)
    est_free_s: float = 0.0  # when the scheduler believes the server is free again after this request
    corr: float = 0.0  # the server's cumulative correction when the decision was made (see complete())
    server: str = ""  # server group name
    check_s: float = 0.0  # the check-quantile finish the deadline was checked with
    end_s: float = 0.0  # expected end of service (finish without the RTT): complete() compares with it
    shed: bool = False  # overload="shed" refused it: count as a violation


def _quantile(check_quantile: Union[float, str, None]) -> Optional[float]:
    if check_quantile is None or check_quantile == "mean":
        return None
    if isinstance(check_quantile, str):
        if check_quantile.startswith("p"):
            return float(check_quantile[1:]) / 100.0
        raise ValueError(f"unknown check quantile {check_quantile!r}")
    q = float(check_quantile)
    if not 0.0 < q < 1.0:
        raise ValueError(f"check_quantile must be in (0, 1), got {q}")
    return q


def _fallback_model(p99_ms: float) -> ServiceModel:
    s = p99_ms / 1000.0
    return ServiceModel(
        mu=math.log(s), sigma=0.0, lo=0.5 * s, hi=3.0 * s, batch=1, slots=1, batch_wait=0.0, throughput=1.0 / s
    )


class OnlineScheduler:
    """Greedy per-request placement over a plan's servers (see the module docstring)."""

    def __init__(
        self,
        plan: Plan,
        *,
        clock: Callable[[], float] | None = None,
        check_quantile: Union[float, str] = DEFAULT_QUANTILE,
        overload: str = "sacrifice",
        sacrifice_cap: float = 2.0,
        beyond_cap: str = "least-lateness",
        cap_quantile: float = 0.999,
        slack_fraction: float = 0.2,
        drift_alpha: float = 0.02,
    ):
        if not 0.0 <= slack_fraction <= 1.0:
            raise ValueError(f"slack_fraction must be in [0, 1], got {slack_fraction}")
        if overload not in OVERLOAD_RULES:
            raise ValueError(f"unknown overload rule {overload!r} (one of {', '.join(OVERLOAD_RULES)})")
        if beyond_cap not in ("least-lateness", "shed"):
            raise ValueError(f"unknown beyond_cap rule {beyond_cap!r}")
        self.overload = overload
        self.beyond_cap = beyond_cap
        self.sacrifice_cap = sacrifice_cap
        self.q = _quantile(check_quantile)
        self.cap_q = max(float(cap_quantile), self.q or 0.0)
        self._z_cap = z_score(self.cap_q)
        self.slack_fraction = slack_fraction
        self.drift_alpha = drift_alpha
        self.plan = plan
        self.clock = clock or time.monotonic
        self.server_groups: list[ServerGroup] = []
        self.servers: list[tuple[str, int]] = []
        self.groups: list[Group] = []
        self.by_model: dict[str, list[Group]] = {}
        self.free: list[float] = []
        self.corr: list[float] = []
        self.tail_start: list[float] = []  # batching servers: estimated start of the last batch formed
        self.tail_n: list[int] = []  # and how many requests it holds
        self.deadline_ms = {d.model: d.deadline_ms for d in plan.demands}
        self._pools = {p.name: p for p in plan.pools}
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        for a in plan.assignments:
            totals[a.model] = totals.get(a.model, 0.0) + a.routed_rate_rps
            counts[a.model] = counts.get(a.model, 0) + 1
        for srv in plan.server_groups():
            if srv.replicas <= 0:
                continue
            assigns = plan.assignments_of(srv.name)
            if not assigns:
                continue
            sg = self._add_servers(
                srv.name, srv.pool, srv.replicas, srv.shared or len(assigns) > 1, sorted({a.model for a in assigns})
            )
            for a in assigns:
                cfg = a.config
                sm = ServiceModel.of(cfg)
                tot = totals.get(a.model, 0.0)
                share = a.routed_rate_rps / tot if tot > 0 else 1.0 / counts[a.model]
                energy = (cfg.power_w or 0.0) * sm.work_per_request
                self._add_route(sg, a.model, cfg.config_id, sm, share, energy)
        self._fallback_added: set[str] = set()

    # ------------------------------------------------------------------ construction
    def _add_servers(
        self, name: str, pool: str, n: int, shared: bool, models: list[str], fallback: bool = False
    ) -> ServerGroup:
        p = self._pools[pool]
        first = len(self.servers)
        sg = ServerGroup(
            index=len(self.server_groups),
            name=name,
            pool=pool,
            tier=p.tier,
            rtt_s=p.rtt_ms / 1000.0,
            replicas=n,
            first=first,
            shared=shared,
            models=models,
            fallback=fallback,
        )
        sg.order = [(0.0, first + i) for i in range(n)]
        self.servers.extend((name, i) for i in range(n))
        self.free.extend([0.0] * n)
        self.corr.extend([0.0] * n)
        self.tail_start.extend([-INF] * n)
        self.tail_n.extend([0] * n)
        self.server_groups.append(sg)
        return sg

    def _add_route(
        self, sg: ServerGroup, model: str, config_id: str, sm: ServiceModel, share: float, energy: float
    ) -> Group:
        g = Group(
            gid=len(self.groups),
            model=model,
            pool=sg.pool,
            tier=sg.tier,
            config_id=config_id,
            server=sg.name,
            sg=sg,
            sm=sm,
            replicas=sg.replicas,
            first_replica=sg.first,
            rtt_s=sg.rtt_s,
            share=share,
            energy_j=energy,
            q=self.q,
            fallback=sg.fallback,
            shared=sg.shared,
        )
        g.order = sg.order
        g.batch = sm.batch if not sg.shared else 1
        g._calibrate(self.cap_q)
        sg.routes.append(g)
        self._protect(sg)
        self.groups.append(g)
        self.by_model.setdefault(model, []).append(g)
        return g

    def _protect(self, sg: ServerGroup) -> None:
        """Backlog limits that keep every co-hosted model comfortable on a shared server.

        A model m' on the server has the queueing budget ``deadline(m') - fixed(m')``; it stays
        comfortable while the backlog is at most ``(1 - slack_fraction)`` of it.  A request of m may
        leave at most the smallest such backlog of the *other* models (``protect_s``); beyond it the
        server is not comfortable for m, whatever m's own slack: m's slack there would be paid for by
        tighter models sharing the device."""
        keep = 1.0 - self.slack_fraction
        budgets = []
        for r in sg.routes:
            dl = self.deadline_ms.get(r.model)
            budgets.append(INF if dl is None else max(0.0, dl / 1000.0 - r.fixed_s))
        for i, r in enumerate(sg.routes):
            r.harm_s = min((b for j, b in enumerate(budgets) if j != i), default=INF)
            r.protect_s = keep * r.harm_s if r.harm_s < INF else INF

    def _fallback(self, model: str) -> list[Group]:
        """Virtual servers for a model the plan does not serve: one per pool with a deadline-feasible candidate."""
        if model in self._fallback_added:
            return self.by_model.get(model, [])
        self._fallback_added.add(model)
        deadline = self.deadline_ms.get(model)
        best: dict = {}
        for c in self.plan.candidates:
            if c.model != model or c.status == "does_not_fit" or c.pool not in self._pools:
                continue
            if deadline is not None and c.response_p99_ms > deadline:
                continue
            if c.pool not in best or (c.latency_p99_ms, c.config_id) < (
                best[c.pool].latency_p99_ms,
                best[c.pool].config_id,
            ):
                best[c.pool] = c
        for pool, c in sorted(best.items()):
            sg = self._add_servers(f"fallback-{model}-{pool}", pool, 1, False, [model], fallback=True)
            self._add_route(
                sg,
                model,
                c.config_id,
                _fallback_model(c.latency_p99_ms),
                1.0 / len(best),
                c.energy_j_per_request or 0.0,
            )
        return self.by_model.get(model, [])

    def ensure_model(self, model: str) -> list[Group]:
        """The groups serving ``model``, creating fallback servers if the plan has none (idempotent)."""
        return self.by_model.get(model) or self._fallback(model)

    @property
    def n_replicas(self) -> int:
        """Servers, fallbacks included (global ids are 0 .. n_replicas - 1)."""
        return len(self.servers)

    def reset(self) -> None:
        """Forget queued work, routing counts and corrections (drift calibration is kept)."""
        for i in range(len(self.free)):
            self.free[i] = 0.0
            self.corr[i] = 0.0
            self.tail_start[i] = -INF
            self.tail_n[i] = 0
        for sg in self.server_groups:
            sg.order[:] = [(0.0, sg.first + i) for i in range(sg.replicas)]
        for g in self.groups:
            g.sent = 0

    def _move(self, sg: ServerGroup, s: int, new: float) -> None:
        """Set server s's free time, keeping its group's order sorted."""
        order = sg.order
        old = self.free[s]
        if order[0][1] == s:
            del order[0]
        else:
            k = bisect_right(order, (old, s)) - 1
            del order[k]
        self.free[s] = new
        insort(order, (new, s))

    # ------------------------------------------------------------------ decisions
    def assign(
        self,
        model: str,
        deadline_ms: Optional[float] = None,
        now: Optional[float] = None,
        origin: Optional[str] = None,
        explain: bool = False,
    ) -> Decision:
        """Pick a server for one request arriving at ``now`` (seconds, from the injected clock by default)."""
        if now is None:
            now = self.clock()
        if deadline_ms is None:
            deadline_ms = self.deadline_ms.get(model, INF)
        dl = deadline_ms / 1000.0
        due = now + dl
        groups = self.by_model.get(model) or self._fallback(model)
        if not groups:
            return Decision(
                model, -1, -1, "", now, INF, False, INF, "no pool has a profile for this model", check_s=INF, end_s=INF
            )
        frac = self.slack_fraction
        best: Optional[tuple] = None
        best_key = None
        tight: Optional[tuple] = None
        tight_slack = -INF
        late: Optional[tuple] = None
        late_check = INF
        cands: Optional[list[dict]] = [] if explain else None
        harm_meet: Optional[tuple] = None
        harm_slack = -INF
        for g in groups:
            free, s = g.order[0]
            backlog = free - now if free > now else 0.0
            start = now + backlog
            if g.batch > 1:
                if self.tail_n[s] < g.batch and now < self.tail_start[s]:
                    start = self.tail_start[s]  # joins the batch still forming: served in its call
                elif start < now + g.sm.batch_wait:
                    start = now + g.sm.batch_wait  # opens a batch: it waits for the device or its batch wait
                check = start + g.call_fixed_s
            else:
                check = start + g.fixed_s
            slack = due - check
            margin = frac * (dl - g.fixed_s)
            after = backlog + g.work_s  # this server's backlog afterwards
            harms = after > g.harm_s  # the next request of a co-hosted model would then miss
            if harms and slack >= 0.0 and slack > harm_slack:
                harm_meet, harm_slack = (g, s, start, check), slack
            if slack >= 0.0 and not harms:
                protected = after <= g.protect_s
                if protected and slack >= margin:
                    key = ((g.sent + 1) * g.inv_share, g.sent, origin is not None and g.tier != origin, g.energy_j)
                    if best_key is None or key < best_key:
                        best, best_key = (g, s, start, check), key
                else:
                    # groups that keep co-hosted models comfortable first, then the most slack
                    tk = slack if protected else slack - BIG
                    if tk > tight_slack:
                        tight, tight_slack = (g, s, start, check), tk
            else:
                lk = check + BIG if harms else check
                if lk < late_check:
                    late, late_check = (g, s, start, check), lk
            if cands is not None:
                cands.append(
                    {
                        "server": g.server,
                        "pool": g.pool,
                        "config": g.config_id,
                        "replica": s,
                        "shared": g.shared,
                        "start_s": float(start),
                        "check_s": float(check),
                        "slack_ms": float(slack * 1000.0),
                        "meets": slack >= 0.0,
                        "harms_co_hosted": harms,
                        "comfortable": slack >= margin and after <= g.protect_s,
                        "share": g.share,
                        "sent": g.sent,
                        "fallback": g.fallback,
                    }
                )
        pick: Optional[tuple]
        if best is not None:
            pick, reason = best, "meets deadline with slack; furthest behind the plan's routing share"
        elif tight is not None:
            pick, reason = tight, "meets deadline; no group with comfortable slack, so the most slack"
        else:
            pick = None
            rule = self.overload
            if rule == "sacrifice":
                pick = self._victim(groups, now, due, dl)
                if pick is not None:
                    reason = "no server meets the deadline; sent to the most backlogged server within the cap"
                else:
                    rule = self.beyond_cap
            if pick is None and harm_meet is not None and rule == "shed":
                # never refuse a request that can meet its deadline: it goes where a co-hosted model may miss
                pick, reason = harm_meet, "meets deadline only on a shared server whose tighter models may then miss"
            if pick is None:
                assert late is not None  # groups is non-empty, so some server was considered
                if rule == "shed":
                    g, s, start, check = late
                    return Decision(
                        model,
                        -1,
                        -1,
                        g.pool,
                        start,
                        INF,
                        False,
                        max(0.0, check - due) * 1000.0,
                        "shed",
                        cands or [],
                        server="",
                        check_s=check,
                        end_s=INF,
                        shed=True,
                    )
                pick = late
                reason = "no server meets the deadline; least lateness" + (
                    " (no server within the sacrifice cap)" if self.overload == "sacrifice" else ""
                )
        assert pick is not None
        g, s, start, check = pick
        if g.batch > 1:
            if start == self.tail_start[s] and self.tail_n[s] < g.batch:
                self.tail_n[s] += 1
            else:
                self.tail_start[s], self.tail_n[s] = start, 1
        free_before = self.free[s]
        est = (free_before if free_before > now else now) + g.work_s
        self._move(g.sg, s, est)
        g.sent += 1
        if g.batch > 1:  # start is the call's (batch wait included)
            end = start + g.mean_s
        else:
            end = start + (g.sm.batch_wait if free_before <= now else 0.0) + g.mean_s
        return Decision(
            model,
            s,
            g.gid,
            g.pool,
            start,
            end + g.rtt_s,
            check <= due,
            max(0.0, check - due) * 1000.0,
            reason + (" (fallback: model not in plan)" if g.fallback else ""),
            cands or [],
            est,
            self.corr[s],
            g.server,
            check,
            end,
        )

    def _victim(self, groups: list[Group], now: float, due: float, dl: float):
        """Most backlogged server whose pessimistic finish stays within the sacrifice cap (None if none)."""
        limit = due + self.sacrifice_cap * dl
        z = self._z_cap
        best = None
        for g in groups:
            # largest backlog x >= 0 with  x + z sqrt(var_rate x) + cap_fixed <= limit - now
            room = limit - now - g.cap_fixed_s
            if room < 0.0:
                continue
            k = z * math.sqrt(g.var_rate)
            r = (-k + math.sqrt(k * k + 4.0 * room)) / 2.0
            x_max = min(r * r, g.harm_s - g.work_s)  # never push a co-hosted model past its budget
            if x_max < 0.0:
                continue
            order = g.order
            i = bisect_right(order, (now + x_max, INF)) - 1
            if i < 0:
                continue
            free, s = order[i]
            start = free if free > now else now
            if best is None or start > best[2]:
                best = (g, s, start, start + g.fixed_s)
        return best

    # ------------------------------------------------------------------ feedback
    def complete(self, decision: Decision, actual_free_s: float, actual_start_s: Optional[float] = None) -> None:
        """Feed back when this request's service really ended (``actual_free_s``, before the return RTT;
        the simulator's and executor's finish time) and, optionally, when its call started.

        The error against the decision's expected end of service shifts the server's queued work;
        corrections already applied since the decision (earlier requests on the same FIFO server) are not
        counted twice.  With ``actual_start_s`` the observed call duration also recalibrates this
        (group, model)'s estimates (EWMA of observed / profiled mean, weight ``drift_alpha``).
        """
        s = decision.replica
        if s < 0 or decision.group < 0:
            return
        g = self.groups[decision.group]
        if actual_start_s is not None and self.drift_alpha > 0:
            base = g._base[1] if g._base is not None else 0.0
            if base > 0:
                ratio = min(10.0, max(0.1, (actual_free_s - actual_start_s) / base))
                g.drift = (1 - self.drift_alpha) * g.drift + self.drift_alpha * ratio
                g._calibrate(self.cap_q)
                if len(g.sg.routes) > 1:
                    self._protect(g.sg)
        believed = decision.end_s + (self.corr[s] - decision.corr)
        delta = actual_free_s - believed
        if delta != 0.0:
            self._move(g.sg, s, self.free[s] + delta)
            self.corr[s] += delta

    def observe(self, replica: int, estimated_free_s: float, actual_free_s: float) -> None:
        """Shift a server's free time by ``actual - estimated`` (no bookkeeping: prefer ``complete``)."""
        sg = self._group_of_server(replica)
        self._move(sg, replica, max(actual_free_s, self.free[replica] + (actual_free_s - estimated_free_s)))

    def _group_of_server(self, s: int) -> ServerGroup:
        for sg in self.server_groups:
            if sg.first <= s < sg.first + sg.replicas:
                return sg
        raise IndexError(s)
