"""Simulator invariants: conservation, device capacity (shares of running calls <= 1), FIFO per server and model,
batching rule with the shared service model's batch wait, shared servers, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from synergai.experiments.policies import Policy, RunContext, get_policy
from synergai.experiments.sim import Arrivals, Deployment, Replica, service_params, simulate
from synergai.models import NodePool, ProfileRecord
from synergai.planner.service import CLIP_HI, CLIP_LO, ServiceModel
from synergai.planner.synthetic import random_instance


def _arrivals(wl, n, seed, rate_scale=1.0):
    rng = np.random.default_rng(seed)
    rates = np.array([d.rate_rps for d in wl.models]) * rate_scale
    lam = rates.sum()
    t = np.cumsum(rng.exponential(1 / lam, n))
    m = rng.choice(len(rates), n, p=rates / lam)
    dl = np.array([d.deadline_ms / 1e3 for d in wl.models])[m]
    return Arrivals(t, m, [d.model for d in wl.models], dl, rng.standard_normal(n))


def _run(policy_name, seed=3, n=3000, scale=1.5):
    table, cluster, wl = random_instance(seed, n_pools=3, n_models=2, n_configs=3, load=0.8)
    arr = _arrivals(wl, n, seed, scale)
    ctx = RunContext(table, cluster, wl, seed=seed, arrivals=arr)
    pol = get_policy(policy_name)(ctx)
    dep = pol.deploy()
    return arr, dep, simulate(arr, dep, pol)


POLS = ["synergai", "slo-mael", "slo-mael-bw", "round-robin", "least-loaded", "offline-only", "random"]


@pytest.mark.parametrize("name", POLS)
def test_conservation_overlap_fifo(name):
    arr, dep, res = _run(name)
    n = len(arr)
    placed = res.replica >= 0
    # every arrival placed finishes exactly once, after it arrived and started
    assert placed.sum() + res.metrics["unplaced"] == n
    assert np.all(np.isfinite(res.finish[placed])) and np.all(np.isnan(res.finish[~placed]))
    assert np.all(res.start[placed] >= res.dispatch[placed] - 1e-12)
    assert np.all(res.dispatch[placed] >= res.arrival[placed])
    assert np.all(res.finish[placed] > res.start[placed])
    _check_capacity_and_fifo(arr, dep, res)


def _calls(res, idx):
    """Distinct calls (start, finish, hosted k) among requests ``idx`` (a batch's requests share start and finish)."""
    return np.unique(np.stack([res.start[idx], res.finish[idx], res.hosted[idx]], axis=1), axis=0)


def _check_capacity_and_fifo(arr, dep, res):
    for r in range(len(dep)):
        idx = np.nonzero(res.replica == r)[0]
        if not len(idx):
            continue
        rep = dep.replicas[r]
        for m, rec in rep.records.items():
            mine = idx[np.array([arr.models[x] for x in arr.model[idx]]) == m]
            order = np.argsort(res.dispatch[mine], kind="stable")
            # FIFO per (server, model): service starts in dispatch order
            assert np.all(np.diff(res.start[mine][order]) >= -1e-12), f"server {r} model {m} not FIFO"
            # a call never holds more than the configuration's batch
            _, counts = np.unique(np.stack([res.start[mine], res.finish[mine]], axis=1), axis=0, return_counts=True)
            assert counts.max() <= rec.batch_size
        # capacity: at every call start, the device shares (1/slots of each running call's configuration,
        # slots re-derived from the record via the service model) of the calls running then sum to <= 1
        calls = _calls(res, idx)
        share = {k: 1.0 / ServiceModel.of(rep.records[res.params.model_name[int(k)]]).slots for k in set(calls[:, 2])}
        sh = np.array([share[k] for k in calls[:, 2]])
        for s in calls[:, 0]:
            running = (calls[:, 0] <= s + 1e-12) & (calls[:, 1] > s + 1e-12)
            assert sh[running].sum() <= 1 + 1e-9, f"server {r} over capacity at {s}"


def test_same_seed_same_outcome():
    a = _run("synergai", seed=5)[2]
    b = _run("synergai", seed=5)[2]
    for f in ("start", "finish", "replica", "violated", "lateness", "energy"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    ma = {k: v for k, v in a.metrics.items() if not k.startswith("decision")}
    mb = {k: v for k, v in b.metrics.items() if not k.startswith("decision")}
    assert ma == mb


def _pool(rtt=0.0):
    return NodePool(name="p", device="d", architecture="amd64", tier="edge", nodes=1, cpu=8, memory_mb=8192, rtt_ms=rtt)


def _rec(batch=1, p50=10.0, p90=12.0, p99=15.0, thr=None, model="m", power=None):
    return ProfileRecord(
        model=model,
        engine="e",
        device="d",
        architecture="amd64",
        precision="fp32",
        batch_size=batch,
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        latency_p99_ms=p99,
        throughput_rps=thr or batch * 1000 / p50,
        cpu_cores=1,
        memory_request_mb=100,
        power_w=power,
    )


class _First(Policy):
    def deploy(self):
        return self.dep

    def choose(self, req, state):
        return 0


def _one(dep, times, z=None, deadline=1.0, models=None, names=("m",)):
    n = len(times)
    arr = Arrivals(
        np.asarray(times, float),
        np.zeros(n, dtype=np.int64) if models is None else np.asarray(models),
        list(names),
        np.full(n, deadline),
        np.zeros(n) if z is None else np.asarray(z, float),
    )
    pol = _First(RunContext(None, None, None))
    return simulate(arr, dep, pol)


def test_batch_starts_when_full_or_after_max_wait():
    # b=4, p50 = 10 ms: a partial batch starts once its oldest request has waited the service model's batch
    # wait -- the same bound the planner adds to every response and the executor configures
    rec = _rec(batch=4, thr=400.0)
    wait = ServiceModel.of(rec).batch_wait
    assert 0 < wait < 0.100
    dep = Deployment([Replica.single(_pool(), "m", rec)])
    times = [
        0.0,
        0.001,
        0.002,
        0.003,  # fills at 3 ms -> starts at 3 ms
        0.100,
        0.101,
    ]  # never fills -> starts once the oldest has waited the batch wait
    res = _one(dep, times)
    np.testing.assert_allclose(res.start[:4], 0.003)
    np.testing.assert_allclose(res.start[4:], 0.100 + wait)
    assert len(set(res.finish[:4])) == 1


def test_batch_waits_for_busy_replica_and_caps_at_b():
    dep = Deployment([Replica.single(_pool(), "m", _rec(batch=2, p50=10, p90=10, p99=10, thr=200.0))])
    res = _one(dep, [0.0, 0.0, 0.001, 0.002, 0.003])
    # first batch [0, 1] at 0; it runs 10 ms; then [2, 3] at 10 ms (full, waited); then [4] at 20 ms
    np.testing.assert_allclose(res.start, [0.0, 0.0, 0.010, 0.010, 0.020], atol=1e-12)


def test_rtt_and_deadline_accounting():
    dep = Deployment([Replica.single(_pool(rtt=20.0), "m", _rec(p50=10, p90=10, p99=10))])
    res = _one(dep, [0.0, 0.0], deadline=0.035)
    # first: 10 ms there, 10 ms service, 10 ms back = 30 ms; second queues 10 ms more = 40 ms > 35 ms
    np.testing.assert_allclose(res.response, [0.030, 0.040])
    assert list(res.violated) == [False, True]
    np.testing.assert_allclose(res.lateness, [0.0, 0.005])


def test_service_draws_are_the_service_models():
    rec = _rec(p50=10, p90=14, p99=30)
    dep = Deployment([Replica.single(_pool(), "m", rec)])
    sp = service_params(dep)
    z = np.random.default_rng(0).standard_normal(20000) * 3
    s = np.array([sp.service(0, x) for x in z])
    assert s.min() >= CLIP_LO * 0.010 - 1e-12 and s.max() <= CLIP_HI * 0.030 + 1e-12
    sm = ServiceModel.of(rec)
    np.testing.assert_array_equal(s, [sm.draw(x) for x in z])
    # the draw of a standard normal score is the fitted quantile: median within the p50..p90 band, p99 close
    assert 10 * 0.85 < 1e3 * sp.service(0, 0.0) < 14
    assert 0.8 < 1e3 * sp.service(0, 2.3263478740408408) / 30 < 1.2


# ------------------------------------------------------------------------------------------ shared servers
def _det(p50, batch=1, slots=1, model="m", power=None):
    """A deterministic configuration: every call takes p50 ms; ``slots`` calls in flight (thr = slots b / p50)."""
    return _rec(batch=batch, p50=p50, p90=p50, p99=p50, thr=slots * batch * 1000.0 / p50, model=model, power=power)


def test_shared_server_one_queue_for_its_models():
    # a (10 ms) and b (20 ms) on one single-slot server: b's request queues behind a's, then a behind b
    dep = Deployment([Replica(_pool(), {"a": _det(10, model="a"), "b": _det(20, model="b")})])
    res = _one(dep, [0.0, 0.001, 0.002], models=[0, 1, 0], names=("a", "b"))
    np.testing.assert_allclose(res.start, [0.0, 0.010, 0.030], atol=1e-12)
    np.testing.assert_allclose(res.finish, [0.010, 0.030, 0.040], atol=1e-12)


def test_shared_device_shares_and_fifo():
    # a runs 2 calls at once (share 1/2), b needs the whole device (share 1)
    dep = Deployment([Replica(_pool(), {"a": _det(10, slots=2, model="a"), "b": _det(10, model="b")})])
    res = _one(dep, [0.0, 0.0005, 0.001, 0.002], models=[0, 0, 1, 0], names=("a", "b"))
    # a1, a2 together; b waits for both to finish; a3 may not overtake b (FIFO) and b holds the whole device
    np.testing.assert_allclose(res.start, [0.0, 0.0005, 0.0105, 0.0205], atol=1e-12)
    # a dedicated 2-slot server runs two calls at once
    ded = Deployment([Replica.single(_pool(), "m", _det(10, slots=2))])
    r2 = _one(ded, [0.0, 0.0, 0.0])
    np.testing.assert_allclose(r2.start, [0.0, 0.0, 0.010], atol=1e-12)


def test_shared_batching_calls_start_in_order_of_readiness():
    # a batches 4 (batch wait from the service model), b is batch 1: b's call is ready first and starts
    # while a's batch is still forming; a's partial batch starts once its oldest waited the batch wait
    ra = _det(10, batch=4, model="a")
    wait = ServiceModel.of(ra).batch_wait
    dep = Deployment([Replica(_pool(), {"a": ra, "b": _det(2, model="b")})])
    res = _one(dep, [0.0, 0.001], models=[0, 1], names=("a", "b"))
    np.testing.assert_allclose(res.start, [max(wait, 0.003), 0.001], atol=1e-12)
    # b's request arriving while a's call holds the (single-slot) device waits for it
    res = _one(dep, [0.0, 0.001, 0.002, 0.003, 0.004], models=[0, 0, 0, 0, 1], names=("a", "b"))
    np.testing.assert_allclose(res.start, [0.003] * 4 + [0.013], atol=1e-12)


def test_request_to_a_server_without_its_model_is_an_error():
    dep = Deployment([Replica.single(_pool(), "m", _det(10))])
    with pytest.raises(ValueError, match="hosts only"):
        _one(dep, [0.0], models=[0], names=("x",))


def test_energy_per_call_and_idle_power():
    # 2-slot configuration at 40 W: a 10 ms call draws its slot's share, 40 W x 10 ms / 2 = 0.2 J
    pool = _pool().model_copy(update={"idle_power_w": 5.0, "nodes": 3})
    dep = Deployment([Replica.single(pool, "m", _det(10, slots=2, power=40.0))])
    res = _one(dep, [0.0, 1.0])
    np.testing.assert_allclose(res.energy, [0.2, 0.2])
    # one node hosts the server; span = 0 .. 1.01 s
    assert dep.nodes_used() == {"p": 1}
    assert res.metrics["energy_j"] == pytest.approx(0.4 + 5.0 * 1.01)
    # unmeasured power: the highest measured power of the device in the table, never less
    from synergai.models import ProfileTable

    unmeasured = _det(10, batch=2, power=None)
    table = ProfileTable([_det(10, slots=2, power=40.0), unmeasured, _det(5, batch=4, power=25.0)])
    dep = Deployment([Replica.single(pool, "m", unmeasured)], profiles=table)
    res = _one(dep, [0.0, 0.0])
    # one single-slot call of 10 ms at 40 W = 0.4 J, split over its 2 requests
    np.testing.assert_allclose(res.energy, [0.2, 0.2])


def test_shared_server_resources_and_packing():
    pool = _pool().model_copy(update={"nodes": 2, "cpu": 2, "memory_mb": 250})
    a, b = _det(10, model="a"), _det(10, model="b")
    shared = Replica(pool, {"a": a, "b": b})
    assert shared.resources == (1.0, 200.0, 0.0)  # both models loaded: memory adds up
    with pytest.raises(ValueError):
        _ = shared.record
    dep = Deployment([shared, Replica(pool, {"a": a, "b": b})])
    assert dep.nodes_used() == {"p": 2}  # 200 + 200 MiB do not fit one 250 MiB node
    assert dep.by_model() == {"a": [0, 1], "b": [0, 1]}
