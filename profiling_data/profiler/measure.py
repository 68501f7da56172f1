"""Timing one configuration: warm-up, then timed runs until both a minimum count and a minimum time.

Protocol (closed loop, one request in flight, like MLPerf's SingleStream but for a batch):

1. *Warm-up*: at least ``warmup_runs`` calls and ``warmup_time`` seconds (first calls allocate buffers,
   pick kernels, fault pages in); not recorded.
2. *Timed runs* in ``repeats`` consecutive blocks; each block runs until it has at least
   ``ceil(min_runs / repeats)`` calls **and** ``min_time / repeats`` seconds; ``max_time / repeats`` caps a
   block of a very slow configuration (and ``max_time / 4`` the warm-up); a block always has >= 1 call.  Every call is timed with
   ``perf_counter_ns``.
3. Results: latency p50/p90/p99 over all timed calls (linear interpolation); throughput =
   ``batch * calls / wall`` of the timed phase (samples/s); process CPU time over the timed phase and CPU
   utilisation = CPU time / wall (cores kept busy, spinning worker threads included); peak RSS of the process
   while the engine was loaded and running (VmHWM after a reset, Linux; the interpreter's own RSS included,
   as a serving replica would have it); spread = p99 / p50; repeat variation = coefficient of variation of
   the blocks' throughputs (std / mean).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Settings:
    warmup_runs: int = 5
    warmup_time: float = 0.2
    min_runs: int = 30
    min_time: float = 2.0
    repeats: int = 3
    max_time: float = 60.0

    def compact(self) -> str:
        return f"w{self.warmup_runs}/{self.warmup_time:g}s,n{self.min_runs}/{self.min_time:g}s,r{self.repeats}"

    def as_dict(self) -> dict:
        return asdict(self)


#: ``--quick``: small counts, for a whole-node grid in about a minute.
QUICK = Settings(warmup_runs=2, warmup_time=0.05, min_runs=6, min_time=0.3, repeats=3, max_time=6.0)
DEFAULT = Settings()


@dataclass
class Result:
    batch: int
    calls: int
    wall_s: float
    latencies_ms: np.ndarray = field(repr=False)
    cpu_s: float
    block_throughput: list[float]
    warmup_calls: int
    energy_j: float | None = None

    @property
    def p50(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.latencies_ms, 90))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.latencies_ms, 99))

    @property
    def mean(self) -> float:
        return float(self.latencies_ms.mean())

    @property
    def throughput_rps(self) -> float:
        return self.batch * self.calls / self.wall_s

    @property
    def spread(self) -> float:
        return self.p99 / self.p50

    @property
    def repeat_cv(self) -> float:
        b = np.asarray(self.block_throughput, dtype=float)
        if len(b) < 2 or b.mean() <= 0:
            return 0.0
        return float(b.std(ddof=1) / b.mean())

    @property
    def cpu_util(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def power_w(self) -> float | None:
        if self.energy_j is None or self.wall_s <= 0:
            return None
        return self.energy_j / self.wall_s

    def summary(self) -> dict:
        lat = self.latencies_ms
        return {
            "calls": self.calls,
            "warmup_calls": self.warmup_calls,
            "wall_s": round(self.wall_s, 4),
            "latency_ms": {
                "p50": round(self.p50, 4),
                "p90": round(self.p90, 4),
                "p99": round(self.p99, 4),
                "mean": round(self.mean, 4),
                "std": round(float(lat.std()), 4),
                "min": round(float(lat.min()), 4),
                "max": round(float(lat.max()), 4),
            },
            "throughput_rps": round(self.throughput_rps, 4),
            "block_throughput_rps": [round(x, 4) for x in self.block_throughput],
            "spread_p99_p50": round(self.spread, 4),
            "repeat_cv": round(self.repeat_cv, 4),
            "cpu_time_s": round(self.cpu_s, 4),
            "cpu_util_cores": round(self.cpu_util, 3),
            "energy_j": None if self.energy_j is None else round(self.energy_j, 3),
        }


def run_timed(call: Callable[[], None], batch: int, s: Settings, *, energy=None) -> Result:
    """Measure ``call`` (one inference call of ``batch`` samples) under settings ``s``.

    ``energy`` is an optional ``device.Rapl`` (package energy counters).
    """
    pc = time.perf_counter
    t0 = pc()
    w = 0
    while w < s.warmup_runs or (pc() - t0) < s.warmup_time:
        call()
        w += 1
        if pc() - t0 > s.max_time / 4:
            break
    reps = max(1, s.repeats)
    per_block_runs = max(1, math.ceil(s.min_runs / reps))
    per_block_time = s.min_time / reps
    per_block_cap = s.max_time / reps
    lat: list[int] = []
    blocks: list[float] = []
    ns = time.perf_counter_ns
    e0 = energy.read() if energy is not None and energy.active else None
    cpu0 = time.process_time()
    wall0 = pc()
    for _ in range(reps):
        b0 = pc()
        n = 0
        while True:
            a = ns()
            call()
            lat.append(ns() - a)
            n += 1
            el = pc() - b0
            if (n >= per_block_runs and el >= per_block_time) or el >= per_block_cap:
                break
        blocks.append(batch * n / (pc() - b0))
    wall = pc() - wall0
    cpu = time.process_time() - cpu0
    ej = energy.joules(e0, energy.read()) if e0 is not None else None
    return Result(
        batch=batch,
        calls=len(lat),
        wall_s=wall,
        latencies_ms=np.asarray(lat, dtype=float) / 1e6,
        cpu_s=cpu,
        block_throughput=blocks,
        warmup_calls=w,
        energy_j=ej,
    )
