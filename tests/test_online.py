"""Online stage: server-level state over (shared) server groups, the service model's quantile check,
slack preference, overload rules, feedback and drift.

Plans are built directly (``models.plan``), so the expected numbers below follow by hand from the
configurations: a configuration with p50 = p90 = p99 has a deterministic call of that length.
"""

from __future__ import annotations

import math
import random

import pytest

from synergai.models import ModelDemand, NodePool
from synergai.models.plan import Assignment, Candidate, ConfigChoice, Plan, Server, SolverReport
from synergai.planner.online import OnlineScheduler
from synergai.planner.service import Z90, Z99, ServiceModel


def cfg(p50, p90=None, p99=None, *, batch=1, thr=None, cid="c", power=10.0):
    p90 = p50 if p90 is None else p90
    p99 = p90 if p99 is None else p99
    thr = batch * 1000.0 / p50 if thr is None else thr  # one slot
    return ConfigChoice(
        config_id=cid,
        engine="e",
        precision="fp32",
        batch_size=batch,
        power_mode="default",
        accelerator="none",
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        latency_p99_ms=p99,
        throughput_rps=thr,
        power_w=power,
        cpu_cores=1,
        memory_request_mb=100,
        accelerators=0,
    )


def pool(name, rtt=0.0, tier="edge"):
    return NodePool(
        name=name, device=f"d-{name}", architecture="arm64", tier=tier, nodes=4, cpu=8, memory_mb=8192, rtt_ms=rtt
    )


def make_plan(groups, deadlines, pools=None, candidates=()):
    """groups: [(name, pool, replicas, [(model, config, routed rate), ...])]"""
    pools = pools or [pool("p")]
    servers, assigns = [], []
    for name, pl, n, hosted in groups:
        servers.append(
            Server(
                name=name,
                pool=pl,
                replicas=n,
                shared=len(hosted) > 1,
                cpu_cores=1,
                memory_mb=100,
                models=[m for m, _, _ in hosted],
                routed_rate_rps=sum(r for _, _, r in hosted),
                utilisation=0.5,
                max_utilisation=0.9,
            )
        )
        for m, c, r in hosted:
            assigns.append(
                Assignment(
                    model=m,
                    pool=pl,
                    server=name,
                    config=c,
                    replicas=n,
                    routed_rate_rps=r,
                    utilisation=0.5,
                    max_utilisation=0.9,
                    predicted_latency_ms=1.0,
                    energy_w=1.0,
                )
            )
    return Plan(
        pools=pools,
        demands=[ModelDemand(model=m, rate_rps=1.0, deadline_ms=d) for m, d in deadlines.items()],
        servers=servers,
        assignments=assigns,
        candidates=list(candidates),
        solver=SolverReport(backend="test", status="optimal", seconds=0.0),
    )


# ------------------------------------------------------------------------------------------ server ids
def test_server_ids_follow_server_groups_and_decisions_name_the_group():
    plan = make_plan(
        [("g1", "p", 2, [("a", cfg(10), 1.0)]), ("g2", "p", 3, [("a", cfg(10), 1.0), ("b", cfg(10), 1.0)])],
        {"a": 100, "b": 100},
    )
    s = OnlineScheduler(plan)
    assert s.servers == [("g1", 0), ("g1", 1), ("g2", 0), ("g2", 1), ("g2", 2)]
    assert s.n_replicas == 5
    d = s.assign("b", now=0.0)
    assert d.server == "g2" and d.replica in (2, 3, 4)
    assert s.servers[d.replica][0] == "g2"
    assert s.groups[d.group].model == "b" and s.groups[d.group].first_replica == 2


def test_legacy_plan_without_servers_gets_one_group_per_assignment():
    plan = make_plan([("g1", "p", 2, [("a", cfg(10), 1.0)])], {"a": 100})
    legacy = plan.model_copy(
        update={"servers": [], "assignments": [a.model_copy(update={"server": ""}) for a in plan.assignments]}
    )
    s = OnlineScheduler(legacy)
    assert s.n_replicas == 2 and len(s.groups) == 1
    assert s.assign("a", now=0.0).replica == 0


# ------------------------------------------------------------------------------------------ shared servers
def test_request_waits_behind_another_models_work_on_a_shared_server():
    # one server hosting a (100 ms) and b (50 ms): b's work is in front of a's request
    shared = make_plan([("s", "p", 1, [("a", cfg(100), 1.0), ("b", cfg(50), 1.0)])], {"a": 200, "b": 200})
    s = OnlineScheduler(shared)
    db = s.assign("b", now=0.0)
    assert db.start_s == 0.0 and db.est_free_s == pytest.approx(0.05)
    da = s.assign("a", now=0.0)
    assert da.replica == db.replica == 0
    assert da.start_s == pytest.approx(0.05)
    assert da.check_s == pytest.approx(0.15) and da.meets
    # a tighter deadline no longer fits behind b's work (it would on an idle server: 100 ms)
    s.reset()
    s.assign("b", now=0.0)
    assert not s.assign("a", deadline_ms=140.0, now=0.0).meets
    # the same models on dedicated servers do not wait for each other
    ded = make_plan(
        [("sa", "p", 1, [("a", cfg(100), 1.0)]), ("sb", "p", 1, [("b", cfg(50), 1.0)])], {"a": 200, "b": 200}
    )
    s2 = OnlineScheduler(ded)
    s2.assign("b", now=0.0)
    d = s2.assign("a", deadline_ms=140.0, now=0.0)
    assert d.start_s == 0.0 and d.meets


def test_shared_work_uses_each_models_work_per_request():
    # b: batch 4 of 40 ms at 100 req/s -> 10 ms of server time per request; a waits behind 3 of them
    b_cfg = cfg(40, batch=4, thr=100.0)
    plan = make_plan([("s", "p", 1, [("a", cfg(20), 1.0), ("b", b_cfg, 1.0)])], {"a": 1000, "b": 1000})
    s = OnlineScheduler(plan)
    for _ in range(3):
        s.assign("b", now=0.0)
    d = s.assign("a", now=0.0)
    assert d.start_s == pytest.approx(3 * 0.010)


# ------------------------------------------------------------------------------------------ the check
def lognormal_cfg(p50, sigma, **kw):
    return cfg(p50, p50 * math.exp(sigma * Z90), p50 * math.exp(sigma * Z99), **kw)


def test_check_uses_quantile_batch_wait_and_rtt():
    # quantiles exactly on a log-normal: the fit is exact, S(0.9) = p90 and S(0.99) = p99
    c = lognormal_cfg(20.0, 0.3, batch=4, thr=4 * 1000 / 20.0)
    p90, p99 = c.latency_p90_ms, c.latency_p99_ms
    plan = make_plan([("g", "p", 1, [("m", c, 1.0)])], {"m": 55.0}, pools=[pool("p", rtt=10.0)])
    bw = 10.0  # half a median call for batch > 1
    d = OnlineScheduler(plan, check_quantile=0.99).assign("m", now=0.0)
    assert d.check_s * 1e3 == pytest.approx(bw + p99 + 10.0)
    assert not d.meets and d.lateness_ms == pytest.approx(bw + p99 + 10.0 - 55.0)  # 60.2 ms > 55 ms
    d90 = OnlineScheduler(plan, check_quantile=0.9).assign("m", now=0.0)
    assert d90.check_s * 1e3 == pytest.approx(bw + p90 + 10.0) and d90.meets  # 49.4 ms
    assert OnlineScheduler(plan, check_quantile="p90").assign("m", now=0.0).check_s == pytest.approx(d90.check_s)
    dm = OnlineScheduler(plan, check_quantile="mean").assign("m", now=0.0)
    assert dm.check_s == pytest.approx(bw / 1e3 + ServiceModel.of(c).mean + 0.010)
    # the default is the planner's quantile
    assert OnlineScheduler(plan).assign("m", now=0.0).check_s == pytest.approx(d.check_s)


def test_lateness_is_zero_exactly_when_meets():
    plan = make_plan([("g", "p", 2, [("m", cfg(10), 1.0)])], {"m": 25.0})
    s = OnlineScheduler(plan, overload="least-lateness")
    for _ in range(10):
        d = s.assign("m", now=0.0)
        assert d.meets == (d.lateness_ms == 0.0)
        assert d.lateness_ms == pytest.approx(max(0.0, d.check_s - 0.025) * 1e3)


# ------------------------------------------------------------------------------------------ earliest free
def test_earliest_free_server_is_chosen():
    plan = make_plan([("g", "p", 3, [("m", cfg(10), 1.0)])], {"m": 1000})
    s = OnlineScheduler(plan)
    ds = [s.assign("m", now=0.0) for _ in range(3)]
    assert sorted(d.replica for d in ds) == [0, 1, 2]  # idle servers first
    assert all(d.start_s == 0.0 for d in ds)
    # server of ds[2] turns out to finish 4 ms early: it is now the earliest free
    s.complete(ds[2], ds[2].end_s - 0.004)
    d = s.assign("m", now=0.0)
    assert d.replica == ds[2].replica and d.start_s == pytest.approx(0.006)
    # the others are next, each from 10 ms
    assert s.assign("m", now=0.0).start_s == pytest.approx(0.010)


def test_sorted_state_matches_a_scan_under_random_feedback():
    plan = make_plan([("g", "p", 50, [("m", cfg(10), 1.0)])], {"m": 1e6})
    s = OnlineScheduler(plan)
    rng = random.Random(7)
    open_ = []
    t = 0.0
    for _ in range(3000):
        t += rng.expovariate(4000.0)
        scan = min(s.free)  # independent view of the state: every server's free time
        d = s.assign("m", now=t)
        assert s.free[d.replica] == pytest.approx(max(t, scan) + 0.010)
        assert d.start_s == max(t, scan)
        open_.append(d)
        if len(open_) > 40:
            done = open_.pop(rng.randrange(len(open_)))
            s.complete(done, done.end_s + rng.uniform(-0.005, 0.02))


# ------------------------------------------------------------------------------------------ slack
def test_prefers_comfortable_slack_over_plan_share():
    # slow gets 90 % of the plan's traffic; its 90 ms call leaves a 10 ms queueing budget of a 100 ms deadline
    plan = make_plan(
        [("slow", "p", 1, [("m", cfg(90, cid="slow"), 9.0)]), ("fast", "p", 1, [("m", cfg(50, cid="fast"), 1.0)])],
        {"m": 100.0},
    )
    s = OnlineScheduler(plan)
    # idle, its whole budget is left: comfortable, and the plan's share picks it (slow by design is not "tight")
    assert s.assign("m", now=0.0).server == "slow"
    # at 81 ms slow is busy until 90 ms: check 180 ms vs due 181 ms, 1 ms of its 10 ms budget left (< 20 %);
    # fast has 50 ms of its 50 ms budget: comfortable, so it wins against the plan's share
    assert s.assign("m", now=0.081).server == "fast"
    # with room everywhere, the plan's shares (90/10)
    s2 = OnlineScheduler(plan)
    got = [s2.assign("m", deadline_ms=10_000, now=i * 1.0).server for i in range(1000)]
    assert got.count("slow") == 900
    # when all meet but none comfortably, the most slack
    s3 = OnlineScheduler(plan, slack_fraction=0.95)
    assert [s3.assign("m", now=0.0).server for _ in range(2)] == ["slow", "fast"]  # idle: both comfortable
    # at 3 ms slow cannot meet (busy to 90 ms); fast (busy to 50 ms) meets with 3 of its 50 ms (< 95 %)
    d = s3.assign("m", now=0.003)
    assert d.server == "fast" and d.meets and "most slack" in d.reason


def test_batching_server_counts_a_requests_own_batch_once():
    # batch 4 of 40 ms on one slot: 10 ms of server time per request; requests join the batch still forming
    # (served in its call), and a full batch is waited for.  start_s is the call's start: the batch wait (half
    # a median call, 20 ms) and the wait for the device overlap -- one or the other, as in the service model
    plan = make_plan([("b", "p", 1, [("m", cfg(40, batch=4, thr=100.0), 1.0)])], {"m": 1000.0})
    s = OnlineScheduler(plan)
    bw = s.groups[0].sm.batch_wait
    assert bw == pytest.approx(0.02)
    starts = [s.assign("m", now=0.0).start_s for _ in range(8)]
    assert starts == [pytest.approx(bw)] * 4 + [pytest.approx(0.04)] * 4
    # time has passed: the first batch (4 requests) runs until 40 ms, the second is formed and queued
    s.reset()
    for _ in range(4):
        s.assign("m", now=0.0)
    d5 = s.assign("m", now=0.001)
    d6 = s.assign("m", now=0.002)
    assert d5.start_s == pytest.approx(0.04) and d6.start_s == pytest.approx(0.04)  # not before the first ends
    # the check is that start + S(q) + RTT: the batch wait is not added on top of the wait for the device
    g = s.groups[0]
    assert d5.check_s == pytest.approx(0.04 + g.sm.quantile(0.99) + g.rtt_s)
    # a batch opened late in the first call waits for its own batch wait past the device's free time
    s.reset()
    for _ in range(4):
        s.assign("m", now=0.0)
    assert s.assign("m", now=0.03).start_s == pytest.approx(0.05)
    # on an idle server a batch forms for at most the batch wait; a request after that opens a new one
    s.reset()
    a = s.assign("m", now=0.0)
    b = s.assign("m", now=bw / 2)
    c = s.assign("m", now=bw * 1.5)
    assert a.start_s == b.start_s == pytest.approx(bw) and c.start_s > bw
    # a batch-1 server is unchanged: every queued request is ahead
    one = OnlineScheduler(make_plan([("o", "p", 1, [("m", cfg(10), 1.0)])], {"m": 1000.0}))
    assert [one.assign("m", now=0.0).start_s for _ in range(3)] == [0.0, pytest.approx(0.01), pytest.approx(0.02)]


def test_slack_fraction_outside_0_1_rejected():
    plan = make_plan([("o", "p", 1, [("m", cfg(10), 1.0)])], {"m": 1000.0})
    with pytest.raises(ValueError):
        OnlineScheduler(plan, slack_fraction=1.5)
    s = OnlineScheduler(plan, slack_fraction=1.0)  # allowed: nothing is ever comfortable, no NaN
    assert s.groups[0].protect_s == math.inf and s.assign("m", now=0.0).meets


def test_shed_never_refuses_a_request_that_meets_only_beside_a_tighter_model():
    # t: 1 ms calls, 25 ms deadline; l: 40 ms calls, 200 ms deadline, planned (a little) on the same server:
    # one l request is more than t's whole budget, a co-location the plan accepted at its rates
    plan = make_plan(
        [("s", "p", 1, [("t", cfg(1, cid="t"), 400.0), ("l", cfg(40, cid="l"), 0.15)])], {"t": 25.0, "l": 200.0}
    )
    s = OnlineScheduler(plan, overload="shed")
    d = s.assign("l", now=0.0)
    assert not d.shed and d.meets and d.server == "s"
    # a loose model that harms by its queue (not by one request) is still kept off; with shed it is placed
    # rather than refused when it meets its deadline nowhere else
    plan2 = make_plan(
        [("s", "p", 1, [("t", cfg(5, cid="t"), 10.0), ("l", cfg(3, cid="ls"), 0.0)])], {"t": 15.0, "l": 130.0}
    )
    s2 = OnlineScheduler(plan2, overload="shed")
    got = [s2.assign("l", now=0.0) for _ in range(5)]
    assert all(x.meets and not x.shed for x in got)
    assert "may then miss" in got[-1].reason


def test_a_model_never_takes_a_shared_servers_room_from_a_tighter_co_hosted_model():
    # shared "s" hosts tight t (5 ms call, 15 ms deadline: a 10 ms queueing budget, comfortable up to 8 ms)
    # and, as standby, loose l (3 ms call there); l's planned server "d" is a slow dedicated one (100 ms
    # call, 130 ms deadline)
    plan = make_plan(
        [
            ("s", "p", 1, [("t", cfg(5, cid="t"), 10.0), ("l", cfg(3, cid="ls"), 0.0)]),
            ("d", "p", 1, [("l", cfg(100, cid="ld"), 5.0)]),
        ],
        {"t": 15.0, "l": 130.0},
    )
    s = OnlineScheduler(plan)
    assert s.assign("l", now=0.0).server == "d"  # the plan's share, comfortable
    # d is now busy until 100 ms, so l misses there (check 200 > 130 ms); s is idle
    got = [s.assign("l", now=0.0) for _ in range(3)]
    # backlog 3 and 6 ms: within t's comfortable 8 ms; 9 ms: within t's budget, not its comfort
    assert [d.server for d in got] == ["s", "s", "s"] and all(d.meets for d in got)
    assert "with slack" in got[1].reason and "most slack" in got[2].reason
    # 12 ms of backlog would make t's next request miss: l goes to its own (late) server instead
    d = s.assign("l", now=0.0)
    assert d.server == "d" and not d.meets
    # t itself still meets on s (9 ms of queued work + 5 ms call <= 15 ms)
    assert s.assign("t", now=0.0).meets
    # without the tight model, the same loose requests all go to the shared server
    alone = make_plan(
        [("s", "p", 1, [("l", cfg(3, cid="ls"), 0.0)]), ("d", "p", 1, [("l", cfg(100, cid="ld"), 5.0)])], {"l": 130.0}
    )
    a = OnlineScheduler(alone)
    assert [a.assign("l", now=0.0).server for _ in range(5)] == ["d", "s", "s", "s", "s"]


# ------------------------------------------------------------------------------------------ overload
def two_group_plan():
    return make_plan([("g1", "p", 1, [("m", cfg(10), 1.0)]), ("g2", "p", 1, [("m", cfg(10), 1.0)])], {"m": 15.0})


def test_shed_refuses_without_queueing():
    s = OnlineScheduler(two_group_plan(), overload="shed")
    a, b = s.assign("m", now=0.0), s.assign("m", now=0.0)
    assert a.meets and b.meets and {a.replica, b.replica} == {0, 1}
    before = list(s.free)
    d = s.assign("m", now=0.0)
    assert d.shed and d.replica == -1 and d.group == -1 and not d.meets and d.reason == "shed"
    assert d.lateness_ms == pytest.approx(5.0)
    assert s.free == before  # nothing was queued
    s.complete(d, 1.0)  # feedback for a shed decision is ignored
    assert s.free == before


def test_sacrifice_skips_servers_past_the_cap():
    # deterministic 10 ms calls, deadline 15 ms, cap 2 deadlines = 30 ms of lateness
    s = OnlineScheduler(two_group_plan(), overload="sacrifice", sacrifice_cap=2.0)
    r = [s.assign("m", now=0.0) for _ in range(6)]
    assert r[0].meets and r[1].meets
    victims = r[2:]
    assert all("most backlogged" in d.reason for d in victims)
    # g1 (server 0) takes the burst while its lateness stays within 30 ms: 5, 15, 25 ms
    assert [d.replica for d in victims[:3]] == [0, 0, 0]
    assert [d.lateness_ms for d in victims[:3]] == pytest.approx([5.0, 15.0, 25.0])
    # the next one would be 35 ms late there: skipped, g2 takes it (5 ms late)
    assert victims[3].replica == 1 and victims[3].lateness_ms == pytest.approx(5.0)


def test_sacrifice_beyond_cap_falls_back_to_least_lateness_or_shed():
    plan = make_plan([("g", "p", 1, [("m", cfg(10), 1.0)])], {"m": 15.0})
    s = OnlineScheduler(plan, overload="sacrifice", sacrifice_cap=2.0)
    r = [s.assign("m", now=0.0) for _ in range(5)]
    assert [d.lateness_ms for d in r[1:4]] == pytest.approx([5.0, 15.0, 25.0])
    assert "least lateness" in r[4].reason and r[4].lateness_ms == pytest.approx(35.0)
    s2 = OnlineScheduler(plan, overload="sacrifice", sacrifice_cap=2.0, beyond_cap="shed")
    r2 = [s2.assign("m", now=0.0) for _ in range(5)]
    assert r2[4].shed and r2[4].replica == -1


def test_sacrifice_cap_includes_the_backlogs_randomness():
    # random calls: the victim's predicted lateness adds the cap quantile of its own call and a margin for
    # the queued calls' variance; with that, every victim's pessimistic lateness is within the cap
    c = lognormal_cfg(10.0, 0.5)
    sm = ServiceModel.of(c)
    plan = make_plan([("g", "p", 1, [("m", c, 1.0)])], {"m": 40.0})
    cap = 2.0
    s = OnlineScheduler(plan, overload="sacrifice", sacrifice_cap=cap, cap_quantile=0.999)
    ds = [s.assign("m", now=0.0) for _ in range(40)]
    victims = [d for d in ds if "most backlogged" in d.reason]
    assert victims
    var = sm.second_moment - sm.mean**2
    z = 3.090232306167813  # z(0.999)
    for d in victims:
        backlog = d.start_s
        pess = backlog + z * math.sqrt(backlog * var / sm.mean) + sm.quantile(0.999)
        assert pess - 0.040 <= cap * 0.040 + 1e-9
    # the plain estimate alone would have accepted more victims than the pessimistic one does
    naive = [d for d in ds if d.check_s - 0.040 <= cap * 0.040]
    assert len(naive) > len(victims) + sum(d.meets for d in ds)


def test_least_lateness_picks_the_earliest_quantile_finish():
    plan = make_plan([("slow", "p", 1, [("m", cfg(30), 1.0)]), ("fast", "p", 1, [("m", cfg(20), 1.0)])], {"m": 5.0})
    s = OnlineScheduler(plan, overload="least-lateness")
    d = s.assign("m", now=0.0)
    assert d.server == "fast" and d.lateness_ms == pytest.approx(15.0)
    d = s.assign("m", now=0.0)  # fast now finishes at 40 ms, slow at 30 ms
    assert d.server == "slow" and d.lateness_ms == pytest.approx(25.0)


def test_unknown_overload_rule_rejected():
    with pytest.raises(ValueError):
        OnlineScheduler(two_group_plan(), overload="drop")


# ------------------------------------------------------------------------------------------ feedback
def test_complete_does_not_double_count_fifo_errors():
    plan = make_plan([("g", "p", 1, [("m", cfg(10), 1.0)])], {"m": 1000})
    s = OnlineScheduler(plan)
    a, b = s.assign("m", now=0.0), s.assign("m", now=0.0)
    assert (a.end_s, b.end_s) == pytest.approx((0.010, 0.020))
    s.complete(a, 0.015)  # a ran 5 ms long: everything behind it shifts
    assert s.free[0] == pytest.approx(0.025)
    s.complete(b, 0.025)  # so b ended 5 ms late too: not a new error
    assert s.free[0] == pytest.approx(0.025)
    assert s.assign("m", now=0.0).start_s == pytest.approx(0.025)


def test_complete_on_shared_server_moves_every_models_queue():
    plan = make_plan([("s", "p", 1, [("a", cfg(10), 1.0), ("b", cfg(10), 1.0)])], {"a": 1000, "b": 1000})
    s = OnlineScheduler(plan)
    da = s.assign("a", now=0.0)
    s.complete(da, 0.030)  # 20 ms late
    assert s.assign("b", now=0.0).start_s == pytest.approx(0.030)


def test_drift_recalibrates_per_group_and_model():
    plan = make_plan([("s", "p", 1, [("a", cfg(10), 1.0), ("b", cfg(10), 1.0)])], {"a": 1000, "b": 1000})
    s = OnlineScheduler(plan, drift_alpha=0.5)
    t = 0.0
    for _ in range(30):  # a really takes 20 ms
        d = s.assign("a", now=t)
        s.complete(d, d.start_s + 0.020, actual_start_s=d.start_s)
        t += 1.0
    ga, gb = (next(g for g in s.groups if g.model == m) for m in "ab")
    assert ga.drift == pytest.approx(2.0, rel=1e-6) and gb.drift == 1.0
    da = s.assign("a", now=t)  # idle server: check = the drifted call
    assert da.check_s - t == pytest.approx(0.020) and da.est_free_s - t == pytest.approx(0.020)
    db = s.assign("b", now=t + 1.0)
    assert db.check_s - (t + 1.0) == pytest.approx(0.010)
    off = OnlineScheduler(plan, drift_alpha=0.0)
    d = off.assign("a", now=0.0)
    off.complete(d, 1.0, actual_start_s=0.0)
    assert off.groups[d.group].drift == 1.0


# ------------------------------------------------------------------------------------------ fallbacks etc.
def test_fallback_for_model_not_in_plan():
    cands = [
        Candidate(
            model="x",
            pool="p",
            config_id="ok",
            latency_p99_ms=30.0,
            response_p99_ms=30.0,
            capacity_rps=10.0,
            status="not_chosen",
        ),
        Candidate(
            model="x",
            pool="q",
            config_id="slow",
            latency_p99_ms=300.0,
            response_p99_ms=300.0,
            capacity_rps=10.0,
            status="misses_deadline",
        ),
        Candidate(
            model="x",
            pool="r",
            config_id="big",
            latency_p99_ms=5.0,
            response_p99_ms=5.0,
            capacity_rps=0.0,
            status="does_not_fit",
        ),
    ]
    plan = make_plan(
        [("g", "p", 2, [("m", cfg(10), 1.0)])],
        {"m": 100, "x": 100},
        pools=[pool("p"), pool("q"), pool("r")],
        candidates=cands,
    )
    s = OnlineScheduler(plan)
    groups = s.ensure_model("x")
    assert [(g.pool, g.config_id, g.fallback) for g in groups] == [("p", "ok", True)]
    assert s.ensure_model("x") == groups and s.n_replicas == 3
    d = s.assign("x", now=0.0)
    assert d.replica == 2 and "fallback" in d.reason and d.check_s == pytest.approx(0.030)


def test_unknown_model_gets_no_server():
    s = OnlineScheduler(two_group_plan())
    d = s.assign("nope", now=0.0)
    assert d.replica == -1 and not d.shed


def test_deterministic_and_injectable_clock():
    plan = make_plan(
        [
            ("g1", "p", 3, [("m", lognormal_cfg(10, 0.3), 3.0)]),
            ("g2", "p", 2, [("m", cfg(8), 1.0), ("n", cfg(5), 1.0)]),
        ],
        {"m": 30, "n": 30},
    )
    rng = random.Random(1)
    times, t = [], 0.0
    for _ in range(500):
        t += rng.expovariate(300.0)
        times.append(t)
    runs = []
    for _ in range(2):
        clock = iter(times)
        s = OnlineScheduler(plan, clock=lambda clock=clock: float(next(clock)))
        runs.append(
            [(d.replica, round(d.finish_s, 12)) for d in (s.assign("m" if i % 3 else "n") for i in range(len(times)))]
        )
    assert runs[0] == runs[1]


def test_explain_lists_candidates():
    plan = make_plan(
        [("g1", "p", 1, [("m", cfg(10), 1.0)]), ("s", "p", 1, [("m", cfg(10), 1.0), ("n", cfg(10), 1.0)])],
        {"m": 100, "n": 100},
    )
    s = OnlineScheduler(plan)
    d = s.assign("m", now=0.0, explain=True)
    assert {c["server"] for c in d.candidates} == {"g1", "s"}
    assert {c["shared"] for c in d.candidates} == {False, True}
    assert all(c["meets"] and c["slack_ms"] == pytest.approx(90.0) for c in d.candidates)


def test_observe_corrects_free_time():
    s = OnlineScheduler(two_group_plan())
    d = s.assign("m", now=0.0)
    s.observe(d.replica, d.est_free_s, d.est_free_s + 1.0)
    assert s.free[d.replica] == pytest.approx(d.est_free_s + 1.0)
