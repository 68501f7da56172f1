"""Policy registry and baselines: pluggability, information hiding, SLO-MAEL's deployment and rule."""

from __future__ import annotations

import numpy as np
import pytest

from synergai.experiments.policies import POLICIES, Policy, RunContext, get_policy, register_policy, slo_mael_deployment
from synergai.experiments.sim import simulate
from synergai.models import InputError
from synergai.planner.synthetic import random_instance

from .test_sim import _arrivals


def _ctx(seed=2, n=1500):
    table, cluster, wl = random_instance(seed, n_pools=3, n_models=2, n_configs=3, load=0.8)
    arr = _arrivals(wl, n, seed, 1.2)
    return RunContext(table, cluster, wl, seed=seed, arrivals=arr), arr


def test_registry_has_every_baseline():
    for name in [
        "synergai",
        "slo-mael",
        "slo-mael-bw",
        "slo-mael-dedicated",
        "k8s-native",
        "round-robin",
        "random",
        "least-loaded",
        "edge-only",
        "cloud-only",
        "offline-only",
        "slo-mael+plan",
        "optimal",
    ]:
        assert name in POLICIES
    with pytest.raises(InputError):
        get_policy("nope")


def test_new_policy_plugs_in_without_touching_the_simulator():
    seen = []

    @register_policy("test-peek")
    class Peek(Policy):
        """Records what it is shown; sends to the model's first replica."""

        needs_feedback = True

        def deploy(self):
            from synergai.experiments.policies import plan_deployment

            dep, _, _ = plan_deployment(self.ctx)
            self.ids = dep.by_model()
            self.done = {}
            return dep

        def choose(self, req, state):
            # completions delivered so far are all in the past, and outstanding counts agree with them
            assert all(f <= state.now for f in self.done.values())
            seen.append(sum(state.outstanding))
            return self.ids[req.model][0] if req.model in self.ids else -1

        def on_complete(self, i, replica, start_s, finish_s):
            self.done[i] = finish_s

    try:
        ctx, arr = _ctx()
        pol = get_policy("test-peek")(ctx)
        dep = pol.deploy()
        res = simulate(arr, dep, pol)
        assert len(seen) == len(arr)
        # every placed request that finished before the last arrival was reported back
        placed = res.replica >= 0
        assert set(pol.done) == set(np.nonzero(placed & (res.finish <= arr.time_s[-1]))[0])
    finally:
        POLICIES.pop("test-peek", None)


def test_slo_mael_deploys_fastest_batch1_config_on_every_processor():
    ctx, _ = _ctx(seed=4)
    dep = slo_mael_deployment(ctx)
    assert len(dep) > 0
    per_pool = {}
    for r in dep.replicas:
        acc = {rec.accelerators for rec in r.records.values()}
        assert len(acc) == 1  # one processor: all accelerator configs or all CPU configs
        for model, rec in r.records.items():
            assert rec.batch_size == 1
            faster = [
                x
                for x in ctx.profiles.for_model_device(model, r.pool.device)
                if x.batch_size == 1
                and x.architecture == r.pool.architecture
                and x.latency_p50_ms < rec.latency_p50_ms
                and x.cpu_cores <= rec.cpu_cores
                and x.memory_request_mb <= rec.memory_request_mb
                and x.accelerators == rec.accelerators
            ]
            assert not faster
        per_pool.setdefault(r.pool.name, []).append(r)
    # one server per accelerator and per node CPU: at most nodes x (accelerators + 1) per pool
    for pool in ctx.cluster.pools:
        assert len(per_pool.get(pool.name, [])) <= pool.nodes * (pool.accelerators + 1)


def test_slo_mael_rule_picks_least_expected_latency():
    ctx, arr = _ctx(seed=6, n=400)
    pol = get_policy("slo-mael")(ctx)
    dep = pol.deploy()
    res = simulate(arr, dep, pol)
    assert (res.replica >= 0).any()
    # the choice has minimal expected latency among the model's replicas at decision time (re-derived)
    pol2 = get_policy("slo-mael")(ctx)
    pol2.deploy()

    class Req:
        pass

    for i in range(50):
        q = Req()
        q.i, q.model, q.time_s, q.deadline_s = (
            i,
            arr.models[arr.model[i]],
            float(arr.time_s[i]),
            float(arr.deadline_s[i]),
        )
        if q.model not in pol2.m:
            continue
        ids, lat, _ = pol2.expected(q.model, q.time_s)
        r = pol2.choose(q, None)
        assert lat[list(ids).index(r)] == lat.min()


def test_window_variant_amortises_decision_time():
    ctx, arr = _ctx(seed=1, n=600)
    pol = get_policy("slo-mael-bw")(ctx)
    dep = pol.deploy()
    res = simulate(arr, dep, pol)
    w = pol.window
    k = (len(arr) // w) * w
    blocks = res.decision_ns[:k].reshape(-1, w)
    assert np.allclose(blocks, blocks[:, :1])  # one window's time spread evenly over its requests


# ------------------------------------------------------------------------------------------ plan deployments
def test_plan_deployment_numbers_servers_as_the_online_stage():
    from synergai.experiments.policies import plan_deployment

    ctx, arr = _ctx(seed=3)
    dep, sched, plan = plan_deployment(ctx)
    assert len(dep) == sched.n_replicas
    # every route of the scheduler points at simulator servers that host its model with its configuration
    for g in sched.groups:
        for r in range(g.first_replica, g.first_replica + g.replicas):
            assert dep.replicas[r].records[g.model].config_id == g.config_id
            assert dep.replicas[r].pool.name == g.pool


def _shared_plan_ctx():
    """A hand-built plan: a shared group (2 servers hosting a and b) then a dedicated group (1 server, a)."""
    from synergai.models import ClusterSpec, ModelDemand, NodePool, ProfileRecord, ProfileTable, WorkloadSpec
    from synergai.models.plan import Assignment, ConfigChoice, Plan, Server, SolverReport

    pool = NodePool(
        name="p", device="d", architecture="amd64", tier="edge", nodes=2, cpu=8, memory_mb=8192, idle_power_w=3.0
    )

    def rec(model, p50, batch=1):
        return ProfileRecord(
            model=model,
            engine="e",
            device="d",
            architecture="amd64",
            precision="fp32",
            batch_size=batch,
            latency_p50_ms=p50,
            latency_p90_ms=1.2 * p50,
            latency_p99_ms=1.5 * p50,
            throughput_rps=batch * 1000 / p50,
            cpu_cores=2,
            memory_request_mb=500,
            power_w=20.0,
        )

    ra, rb, ra2 = rec("a", 10), rec("b", 20, batch=2), rec("a", 8, batch=4)

    def choice(r):
        return ConfigChoice(
            config_id=r.config_id,
            engine=r.engine,
            precision=r.precision,
            batch_size=r.batch_size,
            threads=r.threads,
            power_mode=r.power_mode,
            accelerator=r.accelerator,
            latency_p50_ms=r.latency_p50_ms,
            latency_p90_ms=r.latency_p90_ms,
            latency_p99_ms=r.latency_p99_ms,
            throughput_rps=r.throughput_rps,
            power_w=r.power_w,
            cpu_cores=r.cpu_cores,
            memory_request_mb=r.memory_request_mb,
            accelerators=0,
        )

    groups = [("p-shared", 2, [("a", ra, 20.0), ("b", rb, 15.0)]), ("a-p-ded", 1, [("a", ra2, 30.0)])]
    servers, assigns = [], []
    for name, n, hosted in groups:
        servers.append(
            Server(
                name=name,
                pool="p",
                replicas=n,
                shared=len(hosted) > 1,
                cpu_cores=2,
                memory_mb=500.0 * len(hosted),
                models=[m for m, _, _ in hosted],
                routed_rate_rps=sum(x for *_, x in hosted),
                utilisation=0.5,
                max_utilisation=0.9,
            )
        )
        assigns += [
            Assignment(
                model=m,
                pool="p",
                server=name,
                config=choice(r),
                replicas=n,
                routed_rate_rps=x,
                utilisation=0.5,
                max_utilisation=0.9,
                predicted_latency_ms=50.0,
                energy_w=1.0,
            )
            for m, r, x in hosted
        ]
    demands = [
        ModelDemand(model="a", rate_rps=50.0, deadline_ms=200),
        ModelDemand(model="b", rate_rps=15.0, deadline_ms=300),
    ]
    plan = Plan(
        pools=[pool],
        demands=demands,
        servers=servers,
        assignments=assigns,
        solver=SolverReport(backend="test", status="optimal", seconds=0.0),
    )
    table = ProfileTable([ra, rb, ra2])
    ctx = RunContext(table, ClusterSpec(name="c", pools=[pool]), WorkloadSpec(models=demands), seed=1)
    ctx.plans[None] = plan
    return ctx, plan, (ra, rb, ra2)


def test_deployment_from_plan_with_shared_servers():
    from synergai.experiments.policies import deployment_from_plan, plan_deployment

    ctx, plan, (ra, rb, ra2) = _shared_plan_ctx()
    dep = deployment_from_plan(plan, ctx.profiles)
    assert [r.name for r in dep.replicas] == ["p-shared", "p-shared", "a-p-ded"]
    assert [r.records for r in dep.replicas] == [{"a": ra, "b": rb}, {"a": ra, "b": rb}, {"a": ra2}]
    assert dep.replicas[0].resources == (2.0, 1000.0, 0.0)  # the group's requests
    assert dep.by_model() == {"a": [0, 1, 2], "b": [0, 1]}
    # the online stage's global server ids are the simulator's replica ids
    dep2, sched, _ = plan_deployment(ctx)
    assert [r.name for r in dep2.replicas] == [r.name for r in dep.replicas]
    if hasattr(sched, "servers"):
        assert [s[0] for s in sched.servers] == [r.name for r in dep.replicas]


def test_synergai_runs_on_shared_servers():
    from .test_sim import _check_capacity_and_fifo

    ctx, plan, _ = _shared_plan_ctx()
    rng = np.random.default_rng(4)
    n = 3000
    lam = 65.0
    t = np.cumsum(rng.exponential(1 / lam, n))
    m = rng.choice(2, n, p=[50 / 65, 15 / 65])
    from synergai.experiments.sim import Arrivals

    arr = Arrivals(t, m, ["a", "b"], np.array([0.2, 0.3])[m], rng.standard_normal(n))
    ctx.arrivals = arr
    pol = get_policy("synergai")(ctx)
    dep = pol.deploy()
    res = simulate(arr, dep, pol)
    assert res.metrics["unplaced"] == 0
    # b only on the shared servers; both models share them
    assert set(res.replica[m == 1]) <= {0, 1}
    assert len(set(res.replica[m == 0])) >= 2
    _check_capacity_and_fifo(arr, dep, res)
    # idle power: the three servers (6 cores, 2,500 MiB) pack onto one node
    assert res.metrics["energy_j"] == pytest.approx(res.metrics["serving_energy_j"] + 3.0 * 1 * res.metrics["span_s"])
