"""The offline planner against a brute-force oracle (``tests/bruteforce_oracle.py``) written from the MILP's
documented semantics, independently of the candidate builder and the MILP code (issue 9, "Tests that
must exist"), on hypothesis-generated small instances and a few constructed ones; plus invariants that
every plan must satisfy (node packing, conservation, utilisation caps, one configuration per (model,
pool) and kind, one power mode per pool, shared-server latencies within deadlines).

``SYNERGAI_BF_EXAMPLES`` sets the number of random examples (default 80, derandomised, when ``CI=true``; else 200).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from synergai.models import ClusterSpec, ModelDemand, NodePool, ProfileRecord, ProfileTable, WorkloadSpec
from synergai.planner import PlanOptions, plan_offline
from synergai.planner.service import ServiceModel, max_utilisation
from tests.bruteforce_oracle import Oracle, packs, plan_servers_by_pool, shared_latencies

GAP = 1e-6
MAX_COMBOS = 400
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
EXAMPLES = int(os.environ.get("SYNERGAI_BF_EXAMPLES", 80 if CI else 200))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=CI,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------- plan invariants
STATS = {
    "planner_s": 0.0,
    "oracle_s": 0.0,
    "examples": 0,
    "combos": 0,
    "lps": 0,
    "shared_plans": 0,
    "unserved": 0,
    "headroom": 0,
}


def check_invariants(plan, profiles, cluster, workload, opts) -> None:
    pools = {p.name: p for p in cluster.pools}
    tol = 1e-6
    # every server group packs onto the pool's nodes
    for pool, items in plan_servers_by_pool(plan).items():
        p = pools[pool]
        assert packs(items, (p.cpu, p.memory_mb, float(p.accelerators)), p.nodes) is not None, (
            f"pool {pool}: servers {items} do not pack onto {p.nodes} nodes of {(p.cpu, p.memory_mb, p.accelerators)}"
        )
    # routed + unserved = demand
    for d in workload.models:
        routed = sum(a.routed_rate_rps for a in plan.assignments if a.model == d.model)
        un = sum(u.rate_rps for u in plan.unserved if u.model == d.model)
        assert routed + un == pytest.approx(d.rate_rps, rel=1e-6, abs=1e-5), d.model
    groups = {g.name: g for g in plan.server_groups()}
    kinds: dict[tuple, int] = {}
    modes: dict[str, set] = {}
    for a in plan.assignments:
        g = groups[a.server]
        key = (a.model, a.pool, g.shared)
        kinds[key] = kinds.get(key, 0) + 1
        assert kinds[key] == 1, f"two {'shared' if g.shared else 'dedicated'} configurations for {key[:2]}"
        if a.replicas > 0:
            modes.setdefault(a.pool, set()).add(a.config.power_mode)
        assert a.predicted_latency_ms <= plan.demand(a.model).deadline_ms + tol, (a.model, a.pool, a.server)
    for pool, ms in modes.items():
        assert len(ms) == 1, f"pool {pool} runs power modes {sorted(ms)}"
    # per-server utilisation (recomputed from the service model) within the cap
    for g in groups.values():
        if g.replicas <= 0:
            continue
        util = sum(
            a.routed_rate_rps / g.replicas * ServiceModel.of(a.config).work_per_request
            for a in plan.assignments_of(g.name)
        )
        assert util <= opts.util_cap * (1 + 1e-6) + tol, (g.name, util)
        if g.shared:  # one slot count per shared server (C6b); loaded footprints fit the server's memory
            slots = {ServiceModel.of(a.config).slots for a in plan.assignments_of(g.name)}
            assert len(slots) == 1, (g.name, slots)
            dev = pools[g.pool].device
            mem = 0.0
            for a in plan.assignments_of(g.name):
                r = next(
                    r
                    for r in profiles.records
                    if r.model == a.model and r.device == dev and r.config_id == a.config.config_id
                )
                mem += r.memory_mb or r.memory_request_mb
            assert mem <= g.memory_mb + 1e-6, (g.name, mem, g.memory_mb)
    # shared groups: every hosted model meets its deadline at the group's mixed queue
    for model, ms, dl in shared_latencies(plan, opts.quantile):
        assert ms <= dl * (1 + 1e-6) + tol, (model, ms, dl)


def phase(plan, name):
    for ph in plan.solver.phases:
        if ph["phase"] == name:
            return ph
    return None


def compare(profiles, cluster, workload, opts, *, oracle: Oracle | None = None):
    """Plan, check invariants, and compare every lexicographic phase with the oracle; returns (plan, oracle)."""
    t0 = time.perf_counter()
    p_before = STATS["planner_s"]
    plan = plan_offline(profiles, cluster, workload, options=opts, gap=GAP, time_limit=60)
    STATS["planner_s"] += time.perf_counter() - t0
    check_invariants(plan, profiles, cluster, workload, opts)
    orc = oracle or Oracle(profiles, cluster, workload, opts)
    opt1, _ = orc.phase1()
    p1 = phase(plan, "unserved")
    if p1 is not None:
        got1 = p1["objective"]
    else:  # no solve (nothing deployable): every scenario's demand is unserved
        ef = sum(f * pr for f, pr in orc.scen)
        got1 = ef * sum(u.rate_rps * workload.demand(u.model).priority for u in plan.unserved)
    assert got1 == pytest.approx(opt1, rel=1e-6, abs=1e-6), f"phase 1: planner {got1}, oracle {opt1}"
    if len(orc.scen) == 1:  # the returned plan holds the phase-1 optimum (up to the lexicographic slack)
        un = sum(u.rate_rps * workload.demand(u.model).priority for u in plan.unserved)
        assert un <= opt1 * (1 + 1e-6) + 1e-5, f"the plan leaves {un} weighted req/s unserved; phase 1 optimum {opt1}"
    if not plan.solver.phases:  # nothing deployable: the oracle must agree that nothing can be served
        assert all(not o[1:] for o in orc.options)
        return plan, orc
    served = orc.served_unique()
    alpha = None
    t_star = 1.0
    if orc.amax > 1.0:
        if served is None:
            return plan, orc  # s* is whatever phase 1 happened to route: headroom and energy are not comparable
        if served.any():
            fill = getattr(opts, "headroom_fill", True)
            t_star, s_star = orc.headroom(served, fill)
            h1 = phase(plan, "headroom-min")
            assert h1 is not None, plan.solver.phases
            assert h1["t"] == pytest.approx(t_star, abs=1e-4), f"headroom t: planner {h1['t']}, oracle {t_star}"
            if fill:
                h2 = phase(plan, "headroom-sum")
                assert h2 is not None, plan.solver.phases
                al = h2["alpha"]
                assert min(al.values()) == pytest.approx(t_star, abs=1e-4)
                assert sum(al.values()) == pytest.approx(s_star, abs=1e-4 * len(al)), (
                    f"headroom sum: planner {sum(al.values())}, oracle {s_star}"
                )
                alpha = np.array([al.get(m, 1.0) for m in orc.models])
        else:
            served = None
    else:
        served = None
    e_or, arg = orc.energy(served, alpha, t_star)
    STATS["oracle_s"] += time.perf_counter() - t0 - STATS["planner_s"] + p_before
    e_pl = phase(plan, "energy")["objective"]
    tol = (GAP + 2e-6) * max(1.0, abs(e_or)) + 1e-6
    assert abs(e_pl - e_or) <= tol, f"energy: planner {e_pl}, oracle {e_or} (oracle's choice {arg})"
    if len(orc.scen) == 1:  # the plan's own cost, with nodes counted by exact packing, is the optimum
        cost = sum(a.routed_rate_rps * _epr(a) for a in plan.assignments)
        for pool, items in plan_servers_by_pool(plan).items():
            p = cluster.pool(pool)
            cost += p.idle_power_w * packs(items, (p.cpu, p.memory_mb, float(p.accelerators)), p.nodes)
        assert abs(cost - e_or) <= tol + 1e-5 * max(1.0, e_or), f"plan's true cost {cost}, oracle {e_or}"
    return plan, orc


def _epr(a) -> float:
    return (a.config.power_w or 0.0) / ServiceModel.of(a.config).capacity


# ---------------------------------------------------------------------- random instances
@st.composite
def instances(draw):
    n_pools = draw(st.integers(1, 3))
    n_models = draw(st.integers(1, 3 if n_pools < 3 else 2))
    budget = draw(st.integers(1, 6))  # records in all
    pools = []
    for p in range(n_pools):
        acc = draw(st.sampled_from([0, 0, 1, 2]))
        pools.append(
            NodePool(
                name=f"pool{p}",
                device=f"dev{p}",
                architecture="amd64",
                tier="edge",
                nodes=draw(st.integers(1, 3)),
                cpu=float(draw(st.sampled_from([2, 4, 8]))),
                memory_mb=float(draw(st.sampled_from([2048, 4096, 8192]))),
                accelerators=acc,
                rtt_ms=float(draw(st.sampled_from([0, 2, 10]))),
                idle_power_w=float(draw(st.sampled_from([0, 0, 5, 40]))),
            )
        )
    models = [f"m{i}" for i in range(n_models)]
    recs = []
    mode_sets = [["default"], ["maxn", "15w"], ["default", "maxn"]]
    for p, pool in enumerate(pools):
        pmodes = draw(st.sampled_from(mode_sets))
        for m in models:
            if len(recs) >= budget:
                break
            k = draw(st.integers(0 if n_pools > 1 else 1, min(3, budget - len(recs))))
            for c in range(k):
                b = draw(st.sampled_from([1, 1, 2, 4]))
                p50 = draw(st.floats(2.0, 30.0))
                p90 = p50 * draw(st.floats(1.0, 1.5))
                p99 = p90 * draw(st.floats(1.0, 1.6))
                thr = b * 1000.0 / p50 * draw(st.sampled_from([0.8, 1.0, 1.9]))
                gpu = pool.accelerators > 0 and draw(st.booleans())
                req = float(draw(st.sampled_from([512, 1024, 2048])))
                recs.append(
                    ProfileRecord(
                        model=m,
                        engine=["onnxruntime", "tensorrt", "tflite"][c],
                        device=pool.device,
                        architecture=draw(st.sampled_from(["amd64"] * 5 + ["arm64"])),
                        accelerator="gpu" if gpu else "none",
                        precision="fp32",
                        batch_size=b,
                        threads=c + 1,
                        power_mode=draw(st.sampled_from(pmodes)),
                        latency_p50_ms=p50,
                        latency_p90_ms=p90,
                        latency_p99_ms=p99,
                        throughput_rps=thr,
                        power_w=draw(st.one_of(st.none(), st.floats(5.0, 60.0))),
                        memory_mb=draw(st.one_of(st.none(), st.sampled_from([256.0, 800.0, req]))),
                        cpu_cores=float(draw(st.sampled_from([0.5, 1, 2, 4]))),
                        memory_request_mb=req,
                        accelerators=1 if gpu else 0,
                        source="hypothesis",
                    )
                )
    assume(recs)
    table = ProfileTable(recs, on_duplicate="newest")
    wl = WorkloadSpec(
        models=[
            ModelDemand(
                model=m,
                rate_rps=draw(st.floats(1.0, 150.0)),
                deadline_ms=float(draw(st.sampled_from([25, 60, 150]))),
                priority=float(draw(st.sampled_from([1, 2, 5]))),
            )
            for m in models
            if m in table.models
        ]
    )
    fill = {"headroom_fill": draw(st.booleans())} if hasattr(PlanOptions(), "headroom_fill") else {}
    opts = PlanOptions(
        util_cap=draw(st.sampled_from([0.7, 0.85])),
        quantile=draw(st.sampled_from([0.99, 0.95])),
        headroom=draw(st.sampled_from([1.0, 1.5])),
        **fill,
        load_scenarios=draw(st.sampled_from([(), (), ((1.0, 0.7), (2.0, 0.3))])),
        shared_servers=draw(st.sampled_from([True, True, False])),
        shared_configs=0,
        prune_dominated=draw(st.booleans()),
        resource_weight=0.0,
        skip_unprofiled=True,
        **({"optimistic": draw(st.booleans())} if hasattr(PlanOptions(), "optimistic") else {}),
    )
    return table, ClusterSpec(pools=pools), wl, opts


@SETTINGS
@given(inst=instances())
def test_planner_matches_bruteforce(inst):
    table, cluster, wl, opts = inst
    orc = Oracle(table, cluster, wl, opts)
    assume(orc.n_combos() <= MAX_COMBOS)
    plan, orc = compare(table, cluster, wl, opts, oracle=orc)
    STATS["examples"] += 1
    STATS["combos"] += orc.n_combos()
    STATS["lps"] += orc.n_lp
    STATS["shared_plans"] += any(g.shared for g in plan.server_groups())
    STATS["unserved"] += orc.opt1 > 1e-6
    STATS["headroom"] += phase(plan, "headroom-min") is not None


def test_report_stats():
    """Not a check: prints what the random comparison covered (run with -s)."""
    print("brute-force comparison:", STATS)


# ---------------------------------------------------------------------- constructed instances
def rec(
    model,
    device,
    *,
    p50=10.0,
    p90=12.0,
    p99=15.0,
    thr=100.0,
    b=1,
    cpu=1.0,
    mem=1024.0,
    fp=None,
    acc=0,
    power=10.0,
    mode="default",
    engine="onnxruntime",
    arch="amd64",
):
    return ProfileRecord(
        model=model,
        engine=engine,
        device=device,
        architecture=arch,
        accelerator="gpu" if acc else "none",
        precision="fp32",
        batch_size=b,
        threads=1,
        power_mode=mode,
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        latency_p99_ms=p99,
        throughput_rps=thr,
        power_w=power,
        memory_mb=fp,
        cpu_cores=cpu,
        memory_request_mb=mem,
        accelerators=acc,
        source="constructed",
    )


def pool(name, device, nodes, cpu, mem, acc=0, idle=0.0, rtt=0.0):
    return NodePool(
        name=name,
        device=device,
        architecture="amd64",
        tier="edge",
        nodes=nodes,
        cpu=cpu,
        memory_mb=mem,
        accelerators=acc,
        idle_power_w=idle,
        rtt_ms=rtt,
    )


def usable(r, deadline_ms, cap=0.85, q=0.99, rtt=0.0):
    sm = ServiceModel.of(r)
    return min(cap, max_utilisation(sm, (deadline_ms - rtt) / 1e3, cap=cap, q=q)) * sm.capacity


def test_node_packing_not_aggregate():
    """2 nodes of 4 cores; model a needs two 3-core replicas, model b one replica: its cheap 2-core
    configuration fits the pool in aggregate (3+3+2 = 8 cores) but on no node; the plan must use b's
    1-core configuration and serve everything."""
    ra = rec("a", "d", cpu=3.0, power=10.0)
    rb2 = rec("b", "d", cpu=2.0, power=5.0, engine="tflite")
    rb1 = rec("b", "d", cpu=1.0, power=9.0, engine="tensorrt")
    ca = usable(ra, 100.0)
    table = ProfileTable([ra, rb2, rb1])
    cluster = ClusterSpec(pools=[pool("p", "d", 2, 4.0, 65536.0)])
    wl = WorkloadSpec(
        models=[
            ModelDemand(model="a", rate_rps=1.5 * ca, deadline_ms=100.0),
            ModelDemand(model="b", rate_rps=0.5 * ca, deadline_ms=100.0),
        ]
    )
    opts = PlanOptions(resource_weight=0.0, headroom=1.0, shared_servers=False, prune_dominated=False)
    plan, orc = compare(table, cluster, wl, opts)
    assert orc.opt1 == pytest.approx(0.0, abs=1e-9)
    assert plan.unserved_rate() == pytest.approx(0.0, abs=1e-5)
    b = [a for a in plan.assignments if a.model == "b" and a.routed_rate_rps > 0]
    assert [a.config.cpu_cores for a in b] == [1.0]


def test_burst_scenario_bounds_replicas():
    """1 pool of 10 nodes, ~75 req/s usable per replica, rate 100 with scenarios (1: 0.5, 3: 0.5): the
    deployment must carry 300 req/s (4+ replicas), not just the nominal 100."""
    r = rec("m", "d", p50=10.0, p90=11.0, p99=13.0, thr=88.0, cpu=4.0, power=20.0)
    c = usable(r, 100.0)
    assert 60 < c < 90, c
    table = ProfileTable([r])
    cluster = ClusterSpec(pools=[pool("p", "d", 10, 4.0, 8192.0)])
    wl = WorkloadSpec(models=[ModelDemand(model="m", rate_rps=100.0, deadline_ms=100.0)])
    opts = PlanOptions(
        resource_weight=0.0,
        headroom=1.0,
        load_scenarios=((1.0, 0.5), (3.0, 0.5)),
        prune_dominated=False,
        shared_servers=False,
    )
    plan, orc = compare(table, cluster, wl, opts)
    assert orc.opt1 == pytest.approx(0.0, abs=1e-9)
    reps = sum(a.replicas for a in plan.assignments)
    assert reps >= math.ceil(300.0 / c), (reps, c)


def test_idle_power_no_idle_nodes():
    """Energy is all that differs: the plan must not power a node with no traffic, and picks the pool
    whose serving + idle power is least."""
    ra = rec("m", "da", power=10.0)  # ~0.1 J/req, but 30 W idle per node
    rb = rec("m", "db", power=14.0)  # ~0.14 J/req, 2 W idle
    table = ProfileTable([ra, rb])
    cluster = ClusterSpec(pools=[pool("a", "da", 3, 4.0, 8192.0, idle=30.0), pool("b", "db", 3, 4.0, 8192.0, idle=2.0)])
    wl = WorkloadSpec(models=[ModelDemand(model="m", rate_rps=20.0, deadline_ms=100.0)])
    for headroom in (1.0, 1.5):
        opts = PlanOptions(resource_weight=0.0, headroom=headroom, prune_dominated=False, shared_configs=0)
        plan, _ = compare(table, cluster, wl, opts)
        assert {g.pool for g in plan.server_groups()} == {"b"}
        assert all(g.routed_rate_rps > 0 for g in plan.server_groups()), plan.server_groups()


def test_shared_board_serves_two_models():
    """One single-GPU board: a dedicated replica takes the GPU, so only a shared server serves both."""
    ra = rec("a", "orin", p50=5.0, p90=6.0, p99=8.0, thr=200.0, cpu=2.0, mem=3000.0, fp=1500.0, acc=1, power=20.0)
    rb = rec("b", "orin", p50=4.0, p90=5.0, p99=6.0, thr=250.0, cpu=2.0, mem=3000.0, fp=1500.0, acc=1, power=25.0)
    table = ProfileTable([ra, rb])
    cluster = ClusterSpec(pools=[pool("edge", "orin", 1, 8.0, 8192.0, acc=1, idle=5.0)])
    wl = WorkloadSpec(
        models=[
            ModelDemand(model="a", rate_rps=40.0, deadline_ms=80.0),
            ModelDemand(model="b", rate_rps=40.0, deadline_ms=80.0),
        ]
    )
    for shared in (True, False):
        opts = PlanOptions(
            resource_weight=0.0, headroom=1.0, shared_servers=shared, shared_configs=0, prune_dominated=False
        )
        plan, orc = compare(table, cluster, wl, opts)
        if shared:
            assert plan.unserved_rate() == pytest.approx(0.0, abs=1e-5)
            sh = [g for g in plan.server_groups() if g.shared]
            assert len(sh) == 1 and sorted(sh[0].models) == ["a", "b"]
        else:
            assert plan.unserved_rate() == pytest.approx(40.0, abs=1e-4)


def test_power_modes_one_per_pool():
    """Two models whose cheapest configurations run in different power modes of one pool: one mode wins."""
    ra = rec("a", "d", power=5.0, mode="maxn")
    ra2 = rec("a", "d", power=9.0, mode="15w", engine="tflite")
    rb = rec("b", "d", power=5.0, mode="15w")
    rb2 = rec("b", "d", power=12.0, mode="default", engine="tflite")
    table = ProfileTable([ra, ra2, rb, rb2])
    cluster = ClusterSpec(pools=[pool("p", "d", 2, 4.0, 8192.0, idle=1.0)])
    wl = WorkloadSpec(
        models=[
            ModelDemand(model="a", rate_rps=30.0, deadline_ms=100.0),
            ModelDemand(model="b", rate_rps=30.0, deadline_ms=100.0),
        ]
    )
    for shared in (False, True):
        opts = PlanOptions(
            resource_weight=0.0, headroom=1.5, shared_servers=shared, shared_configs=0, prune_dominated=False
        )
        compare(table, cluster, wl, opts)


def test_returned_plan_is_the_solved_one():
    """Smallest counterexample found by the random comparison: one 2-core node, two models whose only
    configurations run in different power modes, so phase 1 serves exactly one (optimum 1.0).  With the
    'serve nothing' MIP start, HiGHS reports objective 1.0 but its solution vector is the start itself, so the
    returned plan serves nothing (2.0 unserved) and its energy phase holds the wrong optimum."""

    def r(model, mode, p50, thr):
        return rec(model, "dev0", p50=p50, p90=p50, p99=p50, thr=thr, cpu=0.5, mem=512.0, power=None, mode=mode)

    table = ProfileTable([r("m0", "maxn", 4.0, 200.0), r("m1", "15w", 2.0, 400.0)])
    cluster = ClusterSpec(pools=[pool("pool0", "dev0", 1, 2.0, 2048.0)])
    wl = WorkloadSpec(
        models=[
            ModelDemand(model="m0", rate_rps=1.0, deadline_ms=25.0),
            ModelDemand(model="m1", rate_rps=1.0, deadline_ms=25.0),
        ]
    )
    for shared in (False, True):
        opts = PlanOptions(
            util_cap=0.7,
            resource_weight=0.0,
            headroom=1.0,
            shared_servers=shared,
            shared_configs=0,
            prune_dominated=False,
        )
        plan, orc = compare(table, cluster, wl, opts)
        assert orc.opt1 == pytest.approx(1.0)
        assert plan.unserved_rate() == pytest.approx(1.0, abs=1e-5)


def test_oracle_can_fail():
    """The comparison is sharp: an oracle told a different optimum makes ``compare`` fail."""
    ra = rec("a", "d", cpu=3.0, power=10.0)
    table = ProfileTable([ra])
    cluster = ClusterSpec(pools=[pool("p", "d", 1, 4.0, 8192.0, idle=3.0)])
    wl = WorkloadSpec(models=[ModelDemand(model="a", rate_rps=5.0, deadline_ms=100.0)])
    opts = PlanOptions(resource_weight=0.0, headroom=1.0, shared_servers=False)
    orc = Oracle(table, cluster, wl, opts)
    orc.pools[0] = orc.pools[0].model_copy(update={"idle_power_w": 4.0})  # a mutated oracle
    with pytest.raises(AssertionError, match="energy"):
        compare(table, cluster, wl, opts, oracle=orc)
