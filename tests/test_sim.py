"""Simulator invariants: conservation, one job per execution slot, FIFO per replica, batching rule, determinism."""
from __future__ import annotations

import math

import numpy as np
import pytest

from synergai.experiments.policies import Policy, RunContext, get_policy
from synergai.experiments.sim import CLIP_HI, CLIP_LO, Arrivals, Deployment, Replica, fit_lognormal, service_params, simulate
from synergai.models import NodePool, ProfileRecord
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
    for r in range(len(dep)):
        idx = np.nonzero(res.replica == r)[0]
        if not len(idx):
            continue
        # FIFO: service starts in dispatch order
        order = np.argsort(res.dispatch[idx], kind="stable")
        assert np.all(np.diff(res.start[idx][order]) >= -1e-12), f"replica {r} not FIFO"
        for s in range(res.slots[r]):
            j = idx[res.slot[idx] == s]
            if dep.replicas[r].batch == 1:
                st, fi = res.start[j], res.finish[j]
            else:  # requests of one batch share start and finish
                pairs = np.unique(np.stack([res.start[j], res.finish[j]], axis=1), axis=0)
                st, fi = pairs[:, 0], pairs[:, 1]
            o = np.argsort(st)
            # never two jobs at once on one execution slot
            assert np.all(st[o][1:] >= fi[o][:-1] - 1e-12), f"replica {r} slot {s} overlaps"


def test_same_seed_same_outcome():
    a = _run("synergai", seed=5)[2]
    b = _run("synergai", seed=5)[2]
    for f in ("start", "finish", "replica", "violated", "lateness", "energy"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    ma = {k: v for k, v in a.metrics.items() if not k.startswith("decision")}
    mb = {k: v for k, v in b.metrics.items() if not k.startswith("decision")}
    assert ma == mb


def _pool(rtt=0.0):
    return NodePool(name="p", device="d", architecture="amd64", tier="edge", nodes=1, cpu=8, memory_mb=8192,
                    rtt_ms=rtt)


def _rec(batch=1, p50=10.0, p90=12.0, p99=15.0, thr=None):
    return ProfileRecord(model="m", engine="e", device="d", architecture="amd64", precision="fp32", batch_size=batch,
                         latency_p50_ms=p50, latency_p90_ms=p90, latency_p99_ms=p99,
                         throughput_rps=thr or batch * 1000 / p50, cpu_cores=1, memory_request_mb=100)


class _First(Policy):
    def deploy(self):
        return self.dep

    def choose(self, req, state):
        return 0


def _one(dep, times, z=None, deadline=1.0):
    n = len(times)
    arr = Arrivals(np.asarray(times, float), np.zeros(n, dtype=np.int64), ["m"], np.full(n, deadline),
                   np.zeros(n) if z is None else np.asarray(z, float))
    pol = _First(RunContext(None, None, None))
    return simulate(arr, dep, pol)


def test_batch_starts_when_full_or_after_max_wait():
    # b=4, p50 = 10 ms: batch timeout is 10 ms after the oldest request reached the replica
    dep = Deployment([Replica(_pool(), "m", _rec(batch=4, thr=400.0))])
    times = [0.0, 0.001, 0.002, 0.003,      # fills at 3 ms -> starts at 3 ms
             0.100, 0.101]                  # never fills -> starts at 100 + 10 ms
    res = _one(dep, times)
    assert res.slots == [1]
    np.testing.assert_allclose(res.start[:4], 0.003)
    np.testing.assert_allclose(res.start[4:], 0.110)
    assert len(set(res.finish[:4])) == 1


def test_batch_waits_for_busy_replica_and_caps_at_b():
    dep = Deployment([Replica(_pool(), "m", _rec(batch=2, p50=10, p90=10, p99=10, thr=200.0))])
    res = _one(dep, [0.0, 0.0, 0.001, 0.002, 0.003])
    # first batch [0, 1] at 0; it runs 10 ms; then [2, 3] at 10 ms (full, waited); then [4] at 20 ms
    np.testing.assert_allclose(res.start, [0.0, 0.0, 0.010, 0.010, 0.020], atol=1e-12)


def test_rtt_and_deadline_accounting():
    dep = Deployment([Replica(_pool(rtt=20.0), "m", _rec(p50=10, p90=10, p99=10))])
    res = _one(dep, [0.0, 0.0], deadline=0.035)
    # first: 10 ms there, 10 ms service, 10 ms back = 30 ms; second queues 10 ms more = 40 ms > 35 ms
    np.testing.assert_allclose(res.response, [0.030, 0.040])
    assert list(res.violated) == [False, True]
    np.testing.assert_allclose(res.lateness, [0.0, 0.005])


def test_service_draws_positive_and_bounded():
    rec = _rec(p50=10, p90=14, p99=30)
    dep = Deployment([Replica(_pool(), "m", rec)])
    sp = service_params(dep)
    z = np.random.default_rng(0).standard_normal(20000) * 3
    s = np.array([sp.service(0, x) for x in z])
    assert s.min() >= CLIP_LO * 0.010 - 1e-12 and s.max() <= CLIP_HI * 0.030 + 1e-12
    mu, sig = fit_lognormal(10, 14, 30)
    # fitted through the three quantiles: median within the p50..p90 band, p99 close
    assert 10 * 0.85 < math.exp(mu) < 14
    assert 0.8 < math.exp(mu + 2.326 * sig) / 30 < 1.2
