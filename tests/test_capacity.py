"""Neutral capacity (experiments.capacity) against hand-computed and brute-force answers on tiny clusters."""

from __future__ import annotations

import itertools

import pytest

from synergai.experiments.capacity import fluid_candidates, neutral_capacity
from synergai.models import ClusterSpec, ModelDemand, ProfileRecord, ProfileTable, WorkloadSpec


def rec(model, device, *, p99, tput, cpu=1.0, mem=100.0, acc=0, batch=1, p50=None, arch="amd64", prec="fp32"):
    p50 = p50 if p50 is not None else p99 * 0.5
    return ProfileRecord(
        model=model,
        engine="onnxruntime",
        device=device,
        architecture=arch,
        accelerator="gpu" if acc else "none",
        precision=prec,
        batch_size=batch,
        threads=None,
        power_mode="default",
        latency_p50_ms=p50,
        latency_p90_ms=max(p50, p99 * 0.8),
        latency_p99_ms=p99,
        throughput_rps=tput,
        power_w=10.0,
        memory_mb=None,
        cpu_cores=cpu,
        memory_request_mb=mem,
        accelerators=acc,
        source="test",
    )


def pool(name, device, *, nodes, cpu, mem=10_000.0, acc=0, rtt=0.0, arch="amd64"):
    return dict(
        name=name,
        device=device,
        architecture=arch,
        tier="edge",
        nodes=nodes,
        cpu=cpu,
        memory_mb=mem,
        accelerators=acc,
        rtt_ms=rtt,
    )


def wl(**models):
    return WorkloadSpec(models=[ModelDemand(model=m, rate_rps=r, deadline_ms=d) for m, (r, d) in models.items()])


def test_one_pool_one_model_by_hand():
    # 2 nodes x 4 cpu = 8 cores; a replica needs 2 cores and serves 50 req/s -> 4 replicas -> 200 req/s
    t = ProfileTable([rec("a", "dev", p99=10, tput=50, cpu=2)])
    cl = ClusterSpec(pools=[pool("p", "dev", nodes=2, cpu=4)])
    assert neutral_capacity(t, cl, wl(a=(1, 20))).total_rps == pytest.approx(200.0)


def test_filters_by_hand():
    t = ProfileTable(
        [
            rec("a", "dev", p99=10, tput=50, cpu=2),  # feasible: 200 req/s on its own
            rec("a", "dev", p99=30, tput=1000, cpu=1, prec="int8"),  # misses the 20 ms deadline
            rec("a", "dev", p99=5, tput=1000, cpu=8, prec="fp16"),  # needs 8 cores, a node has 4
            rec("a", "dev", p99=12, p50=12, tput=1000, cpu=1, batch=8),  # 12 + batch wait 6 > 20 - rtt 5
            rec("a", "dev", p99=5, tput=1000, cpu=1, arch="arm64", prec="bf16"),  # wrong architecture
        ]
    )
    cl = ClusterSpec(pools=[pool("p", "dev", nodes=2, cpu=4, rtt=5)])
    assert [c.config_id for c in fluid_candidates(t, cl, wl(a=(1, 20)))] == [t.records[0].config_id]
    assert neutral_capacity(t, cl, wl(a=(1, 20))).total_rps == pytest.approx(200.0)


def test_two_models_share_one_pool_by_hand():
    # mix a:b = 3:1; a uses 1 core per 100 req/s, b 1 core per 10 req/s; 10 cores:
    # t (0.75/100 + 0.25/10) = 10 -> t = 10 / 0.0325
    t = ProfileTable([rec("a", "dev", p99=10, tput=100, cpu=1), rec("b", "dev", p99=10, tput=10, cpu=1)])
    cl = ClusterSpec(pools=[pool("p", "dev", nodes=1, cpu=10)])
    cap = neutral_capacity(t, cl, wl(a=(3, 50), b=(1, 50)))
    assert cap.total_rps == pytest.approx(10 / 0.0325)
    assert cap.per_model_rps["a"] == pytest.approx(3 * cap.per_model_rps["b"])


def test_unservable_model_gives_zero():
    t = ProfileTable([rec("a", "dev", p99=10, tput=100), rec("b", "dev", p99=90, tput=10)])
    cl = ClusterSpec(pools=[pool("p", "dev", nodes=1, cpu=10)])
    cap = neutral_capacity(t, cl, wl(a=(1, 50), b=(1, 50)))
    assert cap.total_rps == 0 and cap.unservable == ["b"]


def _brute_force(mix, use, caps, steps=400):
    """Max t over a grid of routing splits: model i sends share f_i to pool 0 and 1 - f_i to pool 1.
    use[i][p] = (cpu, acc) per req/s of model i on pool p, or None; caps[p] = (cpu, acc)."""
    grid = [k / steps for k in range(steps + 1)]
    best = 0.0
    for fs in itertools.product(grid, repeat=len(mix)):
        if any((use[i][0] is None and f > 0) or (use[i][1] is None and f < 1) for i, f in enumerate(fs)):
            continue
        t = float("inf")
        for p in range(2):
            for r in range(2):
                load = sum(
                    mix[i] * (fs[i] if p == 0 else 1 - fs[i]) * use[i][p][r]
                    for i in range(len(mix))
                    if use[i][p] is not None
                )
                if load > 0:
                    t = min(t, caps[p][r] / load)
        best = max(best, t)
    return best


def test_two_pools_two_models_against_brute_force():
    # pool g: 1 node, 4 cpu, 2 accelerators; pool c: 3 nodes, 8 cpu, no accelerators
    t = ProfileTable(
        [
            rec("a", "gpu-dev", p99=5, tput=400, cpu=1, acc=1),  # a on g: per req/s cpu 1/400, acc 1/400
            rec("b", "gpu-dev", p99=5, tput=100, cpu=2, acc=1),  # b on g: cpu 2/100, acc 1/100
            rec("a", "cpu-dev", p99=8, tput=40, cpu=4),  # a on c: cpu 4/40
            rec("b", "cpu-dev", p99=8, tput=25, cpu=2),  # b on c: cpu 2/25
        ]
    )
    cl = ClusterSpec(pools=[pool("g", "gpu-dev", nodes=1, cpu=4, acc=2), pool("c", "cpu-dev", nodes=3, cpu=8)])
    mix = [2 / 3, 1 / 3]
    use = [[(1 / 400, 1 / 400), (4 / 40, 0.0)], [(2 / 100, 1 / 100), (2 / 25, 0.0)]]
    caps = [(4.0, 2.0), (24.0, 0.0)]
    expected = _brute_force(mix, use, caps)
    got = neutral_capacity(t, cl, wl(a=(2, 10), b=(1, 10))).total_rps
    assert got >= expected - 1e-6  # the LP optimum is at least any grid point
    assert got == pytest.approx(expected, rel=5e-3)  # and the grid gets close to it
