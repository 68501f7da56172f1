"""The MILP against a brute-force oracle on small random instances, and plan invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from synergai.models import NodePool
from synergai.planner import PlanOptions, available_solvers, pack_ffd, plan_offline
from synergai.planner.service import ServiceModel
from synergai.planner.synthetic import random_instance

SETTINGS = settings(
    max_examples=int(__import__("os").environ.get("SYNERGAI_EXAMPLES", 25)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def exact_pack(items, cap, nodes) -> bool:
    """Exact bin packing by depth-first search: independent of FFD.  Identical items go to nodes in
    non-decreasing order and nodes with the same free capacity are tried once (symmetry)."""
    items = sorted(items, key=lambda it: tuple(-x for x in it))
    free = [list(cap) for _ in range(nodes)]

    def go(i, lo):
        if i == len(items):
            return True
        seen = set()
        for n in range(lo, nodes):
            key = tuple(round(x, 9) for x in free[n])
            if key in seen:
                continue
            seen.add(key)
            if all(items[i][r] <= free[n][r] + 1e-9 for r in range(3)):
                for r in range(3):
                    free[n][r] -= items[i][r]
                nxt = n if i + 1 < len(items) and items[i + 1] == items[i] else 0
                if go(i + 1, nxt):
                    return True
                for r in range(3):
                    free[n][r] += items[i][r]
        return False

    return go(0, 0)


def check_invariants(plan, profiles, cluster, workload):
    pools = {p.name: p for p in cluster.pools}
    dl = {d.model: d.deadline_ms for d in workload.models}
    groups = {g.name: g for g in plan.servers}
    seen = set()
    items: dict[str, list] = {}
    modes: dict[str, set] = {}
    for g in plan.servers:
        assert g.replicas > 0
        items.setdefault(g.pool, []).extend([(g.cpu_cores, g.memory_mb, float(g.accelerators))] * g.replicas)
        assert g.utilisation <= g.max_utilisation * (1 + 1e-4) + 1e-6
        assert sorted(g.models) == sorted(a.model for a in plan.assignments if a.server == g.name)
    for a in plan.assignments:
        g = groups[a.server]
        key = (a.model, a.pool, g.shared)
        assert key not in seen, f"two configurations for {key}"
        seen.add(key)
        cfg = a.config
        sm = ServiceModel.of(cfg)
        fixed = (sm.batch_wait + sm.quantile(0.99)) * 1e3 + pools[a.pool].rtt_ms
        assert fixed <= dl[a.model] + 1e-6, "deadline-infeasible configuration chosen"
        assert a.predicted_latency_ms <= dl[a.model] + 1e-6
        assert a.replicas == g.replicas
        if not g.shared:
            assert a.routed_rate_rps <= a.replicas * sm.capacity * a.max_utilisation * (1 + 1e-4) + 1e-6
        modes.setdefault(a.pool, set()).add(cfg.power_mode)
    for name, its in items.items():
        p = pools[name]
        cap = (p.cpu, p.memory_mb, float(p.accelerators))
        packs = pack_ffd(its, cap, p.nodes) is not None or (len(its) <= 60 and exact_pack(its, cap, p.nodes))
        assert packs, f"servers of {name} do not pack onto its {p.nodes} nodes"
        assert len(modes.get(name, ())) <= 1, f"two power modes on {name}"
    for d in workload.models:
        routed = sum(a.routed_rate_rps for a in plan.assignments if a.model == d.model)
        uns = sum(u.rate_rps for u in plan.unserved if u.model == d.model)
        assert routed + uns == pytest.approx(d.rate_rps, rel=1e-5, abs=1e-4)
    chosen = [c for c in plan.candidates if c.status == "chosen"]
    assert {(c.model, c.pool) for c in chosen} == {(a.model, a.pool) for a in plan.assignments}
    assert plan.solver.status != "optimal" or all(ph["status"] == "optimal" for ph in plan.solver.phases)


@SETTINGS
@given(seed=st.integers(0, 10_000), load=st.sampled_from([0.3, 1.0, 3.0]))
def test_invariants_random(seed, load):
    t, c, w = random_instance(seed, n_pools=4, n_models=3, n_configs=4, load=load, power_modes=1 + seed % 3)
    plan = plan_offline(t, c, w)
    check_invariants(plan, t, c, w)


def test_invariants_default():
    import synergai.profiling_data as pdata

    t, c, w = pdata.default_profiles(), pdata.default_cluster(), pdata.default_workload()
    for load in (0.5, 1.0, 2.0):
        plan = plan_offline(t, c, w.scaled(load))
        check_invariants(plan, t, c, w.scaled(load))


@SETTINGS
@given(seed=st.integers(0, 10_000), which=st.integers(0, 3))
def test_adding_a_node_never_increases_unserved(seed, which):
    t, c, w = random_instance(seed, n_pools=4, n_models=3, n_configs=3, load=2.0)
    before = plan_offline(t, c, w, options=PlanOptions(), gap=0)
    pools = list(c.pools)
    p = pools[which]
    pools[which] = NodePool(**{**p.model_dump(), "nodes": p.nodes + 1})
    after = plan_offline(t, c.model_copy(update={"pools": pools}), w, options=PlanOptions(), gap=0)

    def weighted(plan):
        return sum(u.rate_rps * w.demand(u.model).priority for u in plan.unserved)

    assert weighted(after) <= weighted(before) * (1 + 1e-6) + 1e-6  # solver tolerances


@pytest.mark.parametrize("solver", available_solvers())
@pytest.mark.parametrize("seed", range(6))
def test_solver_conformance(solver, seed):
    """Every back-end reaches HiGHS's objectives on small instances (CP-SAT: 1e-3 grid on rates)."""
    t, c, w = random_instance(seed, n_pools=3, n_models=3, n_configs=3, load=1.5, power_modes=2)
    ref = plan_offline(t, c, w, solver="highs", gap=0, options=PlanOptions())
    got = plan_offline(t, c, w, solver=solver, gap=0, options=PlanOptions())
    assert got.solver.status == "optimal"
    tol = dict(rel=1e-3, abs=5e-2) if solver == "cpsat" else dict(rel=1e-6, abs=1e-5)
    for a, b in zip(ref.solver.phases, got.solver.phases):
        assert b["objective"] == pytest.approx(a["objective"], **tol), (a, b)
    check_invariants(got, t, c, w)


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_headroom_phase_keeps_unserved_optimum_and_grows_capacity(seed):
    t, c, w = random_instance(seed, n_pools=3, n_models=2, n_configs=3, load=1.0)
    off = plan_offline(t, c, w, gap=0, options=PlanOptions(headroom=1.0))
    on = plan_offline(t, c, w, gap=0, options=PlanOptions(headroom=2.0))
    assert on.unserved_rate() == pytest.approx(off.unserved_rate(), abs=1e-5)
    ph = {p["phase"]: p for p in on.solver.phases}
    if "headroom-min" not in ph:
        return
    alpha = ph["headroom-min"]["alpha"]
    assert all(1.0 - 1e-9 <= a <= 2.0 + 1e-9 for a in alpha.values())
    # max-min: the smallest factor is the max-min optimum t
    assert min(alpha.values()) == pytest.approx(ph["headroom-min"]["t"], rel=1e-4)
    # dedicated-only models: their own capacity carries alpha x served
    for d in w.models:
        if d.model not in alpha or any(g.shared for g in on.servers if d.model in g.models):
            continue
        served = sum(a.routed_rate_rps for a in on.assignments if a.model == d.model)
        cap = sum(
            a.replicas * ServiceModel.of(a.config).capacity * a.max_utilisation
            for a in on.assignments
            if a.model == d.model
        )
        assert cap >= alpha[d.model] * served * (1 - 1e-4) - 1e-6
    check_invariants(on, t, c, w)


def test_weighted_objective_agrees_on_unserved():
    for seed in range(5):
        t, c, w = random_instance(seed, n_pools=3, n_models=2, n_configs=3, load=2.0)
        lex = plan_offline(t, c, w, gap=0)
        wtd = plan_offline(t, c, w, gap=0, options=PlanOptions(objective="weighted"))
        assert wtd.unserved_rate() == pytest.approx(lex.unserved_rate(), abs=1e-3)
        assert wtd.objective == "weighted"


def test_unservable_model_is_reported_not_raised():
    t, c, w = random_instance(3, n_pools=2, n_models=2, n_configs=2)
    tight = w.model_copy(update={"models": [w.models[0].model_copy(update={"deadline_ms": 0.001})] + w.models[1:]})
    plan = plan_offline(t, c, tight)
    u = [x for x in plan.unserved if x.model == tight.models[0].model]
    assert u and u[0].rate_rps == pytest.approx(tight.models[0].rate_rps)
    assert "deadline" in u[0].reason
    assert all(c.status != "chosen" for c in plan.candidates if c.model == tight.models[0].model)


def test_time_limited_run_reports_incumbent():
    t, c, w = random_instance(7, n_pools=40, n_models=10, n_configs=10, load=1.2, max_nodes=6)
    plan = plan_offline(t, c, w, time_limit=0.05)
    assert plan.solver.status in ("optimal", "time_limit")
    if plan.solver.status == "time_limit":
        assert "time limit" in plan.solver.message
    check_invariants(plan, t, c, w)


def test_lp_dump_names_constraints():
    from synergai.planner.offline import build_model

    t, c, w = random_instance(1, n_pools=2, n_models=2, n_configs=2, power_modes=2)
    m, _, _ = build_model(t, c, w)
    lp = m.to_lp()
    for fam in ("dem(", "util(", "link(", "one(", "cap("):
        assert fam in lp
    assert np.isfinite(m.c).all()


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_load_scenarios_bound_and_invariants(seed):
    """C9: the expected unserved over (1x, 3x) is at least half the best a plan made for 3x alone achieves."""
    # one node per pool: aggregate capacity is exact, so neither plan goes through the packing repair
    t, c, w = random_instance(seed, n_pools=3, n_models=2, n_configs=3, load=1.5, max_nodes=1)
    opts = dict(headroom=1.0)
    two = plan_offline(t, c, w, gap=0, options=PlanOptions(load_scenarios=((1.0, 0.5), (3.0, 0.5)), **opts))
    burst = plan_offline(t, c, w.scaled(3.0), gap=0, options=PlanOptions(**opts))
    same = plan_offline(t, c, w, gap=0, options=PlanOptions(load_scenarios=((1.0, 1.0),), **opts))
    plain = plan_offline(t, c, w, gap=0, options=PlanOptions(**opts))
    burst_u = sum(u.rate_rps * w.demand(u.model).priority for u in burst.unserved)
    if not two.solver.phases:  # no feasible candidate at all: nothing to compare
        assert two.unserved_rate() == pytest.approx(sum(d.rate_rps for d in w.models))
        return
    assert two.solver.phases[0]["objective"] >= 0.5 * burst_u - 1e-4
    assert same.solver.phases[0]["objective"] == pytest.approx(plain.solver.phases[0]["objective"], abs=1e-6)
    check_invariants(two, t, c, w)


# ------------------------------------------------------------------------------------ constructed cases
def _rec(
    model, device, *, cores, gpus=0, thr=100.0, p50=10.0, power=10.0, engine="onnxruntime", mode="default", mem=1024.0
):
    from synergai.models import ProfileRecord

    return ProfileRecord(
        model=model,
        engine=engine,
        device=device,
        architecture="amd64",
        accelerator="gpu" if gpus else "none",
        precision=f"fp32-{cores}c",
        batch_size=1,
        threads=None,
        power_mode=mode,
        latency_p50_ms=p50,
        latency_p90_ms=p50,
        latency_p99_ms=p50,
        throughput_rps=thr,
        power_w=power,
        cpu_cores=cores,
        memory_request_mb=mem,
        accelerators=gpus,
        source="constructed",
    )


def _inputs(recs, pools, demands):
    from synergai.models import ClusterSpec, ModelDemand, ProfileTable, WorkloadSpec

    return (
        ProfileTable(recs),
        ClusterSpec(pools=pools),
        WorkloadSpec(models=[ModelDemand(model=m, rate_rps=r, deadline_ms=1000.0) for m, r in demands]),
    )


def _pool(name, nodes, cpu, gpus=0, idle=0.0, device=None):
    return NodePool(
        name=name,
        device=device or name,
        architecture="amd64",
        tier="edge",
        nodes=nodes,
        cpu=cpu,
        memory_mb=16384,
        accelerators=gpus,
        rtt_ms=0.0,
        idle_power_w=idle,
    )


def test_replica_bound_comes_from_the_largest_rate():
    """1 pool of 10 nodes, ~85 req/s per replica, rate 100 with a 3x burst scenario: plan for 300 req/s."""
    t, c, w = _inputs([_rec("a", "d", cores=4)], [_pool("d", 10, 4)], [("a", 100.0)])
    plan = plan_offline(t, c, w, gap=0, options=PlanOptions(load_scenarios=((1.0, 0.5), (3.0, 0.5)), headroom=1.0))
    assert plan.solver.phases[0]["objective"] == pytest.approx(0.0, abs=1e-6)  # nothing unserved, even in the burst
    assert sum(g.replicas for g in plan.servers) >= math.ceil(300 / (0.85 * 100))
    check_invariants(plan, t, c, w)


def test_unpackable_aggregate_is_resolved_exactly_not_shrunk():
    """2 nodes x (4 cores, 1 GPU). a needs both GPUs (2 x 1 core + GPU); b's efficient config (3.5 cores) fits
    the pool's cores in aggregate but on no node beside a GPU replica; its 2.5-core config does.  Shrinking the
    pool by 10% (1.8 GPUs) would drop a replica of a; the exact re-solve serves everything."""
    recs = [
        _rec("a", "d", cores=1, gpus=1, power=20.0),
        _rec("b", "d", cores=3.5, power=5.0),
        _rec("b", "d", cores=2.5, power=30.0),
    ]
    t, c, w = _inputs(recs, [_pool("d", 2, 4, gpus=1)], [("a", 170.0), ("b", 50.0)])
    plan = plan_offline(t, c, w, gap=0, options=PlanOptions(shared_servers=False, headroom=1.0))
    assert plan.unserved_rate() == pytest.approx(0.0, abs=1e-6)
    b = [a for a in plan.assignments if a.model == "b"]
    assert [a.config.cpu_cores for a in b] == [2.5]
    assert any("node by node" in n for n in plan.notes)
    assert plan.solver.status == "optimal"
    check_invariants(plan, t, c, w)


def test_idle_power_counts_and_idle_nodes_stay_off():
    """Same serving power on two pools, idle power 50 W vs 5 W per node: serve from the frugal pool and power
    nothing that carries no traffic."""
    recs = [_rec("a", "hot", cores=4), _rec("a", "cool", cores=4)]
    t, c, w = _inputs(recs, [_pool("hot", 4, 4, idle=50.0), _pool("cool", 4, 4, idle=5.0)], [("a", 150.0)])
    plan = plan_offline(t, c, w, gap=0, options=PlanOptions(headroom=1.0, resource_weight=0.0))
    assert {g.pool for g in plan.servers} == {"cool"}
    assert all(g.routed_rate_rps > 0 for g in plan.servers)
    # serving power 150 req/s x 0.1 J + 2 powered nodes x 5 W
    assert plan.solver.objective == pytest.approx(150 * 10.0 / 100.0 + 2 * 5.0, rel=1e-6)


def test_shared_server_hosts_two_models_on_one_gpu():
    """One single-GPU board: dedicated replicas (1 GPU each) can serve one model; a shared server serves both."""
    recs = [
        _rec("a", "orin", cores=1, gpus=1, thr=200.0, p50=2.0),
        _rec("b", "orin", cores=1, gpus=1, thr=200.0, p50=2.0),
    ]
    t, c, w = _inputs(recs, [_pool("orin", 1, 8, gpus=1)], [("a", 40.0), ("b", 40.0)])
    ded = plan_offline(t, c, w, gap=0, options=PlanOptions(shared_servers=False, headroom=1.0))
    sh = plan_offline(t, c, w, gap=0, options=PlanOptions(headroom=1.0))
    assert ded.unserved_rate() == pytest.approx(40.0, rel=1e-6)
    assert sh.unserved_rate() == pytest.approx(0.0, abs=1e-6)
    (g,) = sh.servers
    assert g.shared and sorted(g.models) == ["a", "b"] and g.replicas == 1
    check_invariants(sh, t, c, w)


def test_shared_row_uses_the_loaded_configurations_budget():
    """a has a fast configuration and a frugal one that nearly fills the deadline (1 ms of queueing budget);
    the shared-server row of a must use the budget of the configuration actually loaded.  Taking the
    smallest budget of every offered configuration (the earlier rule) left a unservable beside b."""
    recs = [
        _rec("a", "gpu", cores=1, gpus=1, thr=200.0, p50=2.0, power=10.0),
        _rec("a", "gpu", cores=1, gpus=1, thr=200.0, p50=999.0, power=1.0, engine="frugal"),
        _rec("b", "gpu", cores=1, gpus=1, thr=200.0, p50=2.0),
    ]
    t, c, w = _inputs(recs, [_pool("gpu", 1, 8, gpus=1)], [("a", 40.0), ("b", 40.0)])
    plan = plan_offline(t, c, w, gap=0, options=PlanOptions(headroom=1.0))
    assert plan.unserved_rate() == pytest.approx(0.0, abs=1e-6)
    (g,) = plan.servers
    assert g.shared and sorted(g.models) == ["a", "b"]
    assert {a.config.engine for a in plan.assignments if a.model == "a"} == {"onnxruntime"}
    check_invariants(plan, t, c, w)


def test_shared_server_loads_one_slot_count():
    """C6b: a's only configuration runs 2 calls at once (slots = round(1000 req/s * 2 ms) = 2), b's one; on a
    single-GPU board they cannot share a server (a whole-device call of b would idle half the device while
    a's calls drain), so one model goes unserved -- and the plan says so instead of sharing."""
    recs = [
        _rec("a", "orin", cores=1, gpus=1, thr=1000.0, p50=2.0),
        _rec("b", "orin", cores=1, gpus=1, thr=200.0, p50=2.0),
    ]
    t, c, w = _inputs(recs, [_pool("orin", 1, 8, gpus=1)], [("a", 40.0), ("b", 40.0)])
    plan = plan_offline(t, c, w, gap=0, options=PlanOptions(headroom=1.0))
    assert plan.unserved_rate() == pytest.approx(40.0, rel=1e-6)
    for g in plan.servers:
        assert len({ServiceModel.of(a.config).slots for a in plan.assignments_of(g.name)}) == 1
    check_invariants(plan, t, c, w)


def test_v1_plan_documents_are_still_read(tmp_path):
    """A v1 plan (no server groups) loads, and consumers see one dedicated group per assignment."""
    import json

    import synergai.profiling_data as pdata
    from synergai.models import Plan

    plan = plan_offline(
        pdata.default_profiles(),
        pdata.default_cluster(),
        pdata.default_workload(),
        options=PlanOptions(shared_servers=False),
    )
    doc = json.loads(plan.model_dump_json())
    doc["schema_version"] = "synergai.plan/v1"
    doc.pop("servers")
    for a in doc["assignments"]:
        a.pop("server")
    (tmp_path / "v1.json").write_text(json.dumps(doc))
    old = Plan.load(tmp_path / "v1.json")
    groups = old.server_groups()
    assert len(groups) == len(old.assignments) and not any(g.shared for g in groups)
    assert sorted((g.pool, g.replicas) for g in groups) == sorted((g.pool, g.replicas) for g in plan.servers)
