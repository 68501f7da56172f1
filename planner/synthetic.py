"""Random but plausible instances, for property tests and solver benchmarks."""

from __future__ import annotations

import numpy as np

from synergai.models import ClusterSpec, ModelDemand, NodePool, ProfileRecord, ProfileTable, WorkloadSpec


def random_instance(
    seed: int,
    n_pools: int = 3,
    n_models: int = 2,
    n_configs: int = 3,
    *,
    max_nodes: int = 3,
    load: float = 0.7,
    power_modes: int = 1,
) -> tuple[ProfileTable, ClusterSpec, WorkloadSpec]:
    rng = np.random.default_rng(seed)
    pools, recs = [], []
    for p in range(n_pools):
        edge = p % 2 == 0
        acc = int(rng.integers(0, 3)) if not edge else int(rng.integers(0, 2))
        pools.append(
            NodePool(
                name=f"pool{p}",
                device=f"dev{p}",
                architecture="arm64" if edge else "amd64",
                tier="edge" if edge else "cloud",
                nodes=int(rng.integers(1, max_nodes + 1)),
                cpu=float(rng.choice([4, 8, 16])),
                memory_mb=float(rng.choice([4096, 8192, 16384])),
                accelerators=acc,
                rtt_ms=float(rng.uniform(1, 4) if edge else rng.uniform(10, 30)),
                labels={},
            )
        )
    models = [f"m{i}" for i in range(n_models)]
    deadlines = {m: float(rng.choice([20, 50, 100, 200])) for m in models}
    for p, pool in enumerate(pools):
        for m in models:
            base = float(rng.uniform(2, 60))
            for c in range(n_configs):
                gpu = pool.accelerators > 0 and c % 2 == 1
                b = int(rng.choice([1, 1, 2, 4]))
                p50 = base * float(rng.uniform(0.3, 1.5)) * (0.4 if gpu else 1.0)
                p90 = p50 * float(rng.uniform(1.05, 1.4))
                p99 = p90 * float(rng.uniform(1.05, 1.6))
                thr = b * 1000.0 / p50 * float(rng.uniform(0.8, 1.2))
                pm = ["maxn", "maxq", "15w"][c % power_modes] if power_modes > 1 else "default"
                recs.append(
                    ProfileRecord(
                        model=m,
                        engine=["onnxruntime", "tensorrt", "tflite"][c % 3],
                        device=pool.device,
                        architecture=pool.architecture,
                        accelerator="gpu" if gpu else "none",
                        precision=["fp32", "fp16", "int8"][c % 3],
                        batch_size=b,
                        threads=int(rng.integers(1, 5)),
                        power_mode=pm,
                        latency_p50_ms=p50,
                        latency_p90_ms=p90,
                        latency_p99_ms=p99,
                        throughput_rps=thr,
                        power_w=float(rng.uniform(5, 80)),
                        cpu_cores=float(rng.choice([1, 2, 4])),
                        memory_request_mb=float(rng.choice([512, 1024, 2048])),
                        accelerators=1 if gpu else 0,
                        source=f"synthetic-{c}",
                    )
                )
    table = ProfileTable(recs, on_duplicate="newest")
    rates = {m: float(rng.uniform(5, 200)) * load for m in models}
    wl = WorkloadSpec(
        models=[
            ModelDemand(model=m, rate_rps=rates[m], deadline_ms=deadlines[m], priority=float(rng.choice([1, 2])))
            for m in models
        ]
    )
    return table, ClusterSpec(pools=pools), wl
