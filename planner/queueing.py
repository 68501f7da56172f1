"""Service-time distributions and the utilisation cap that keeps queueing inside a deadline.

Service times are modelled as log-normal, fitted to the profile's p50 and p99:
``mu = ln p50``, ``sigma = (ln p99 - ln p50) / z99``.  A log-normal is positive,
right-skewed like measured inference latency, and two quantiles pin it down;
p90 is then reported as a fit check (``fit_error_p90``).  Draws are clipped to
``[min_factor * p50, max_factor * p99]`` so no draw is negative or absurd.

The utilisation cap of one replica uses M/G/1 with Pollaczek-Khinchine mean wait
``W = rho * E[S^2] / (2 E[S] (1 - rho))`` and an exponential tail for the wait of
the requests that do wait (mean ``W / rho``), so the wait quantile is
``Wq(q) = (W / rho) * ln(rho / (1 - q))``.  The predicted response quantile is the
conservative sum ``S(q) + Wq(q)``; the cap is the largest ``rho`` (bisection)
that keeps it within the budget ``deadline - rtt - batch wait``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z90 = 1.2815515655446004
Z99 = 2.3263478740408408


@dataclass(frozen=True)
class LatencyDist:
    """Log-normal fitted to p50/p99 (milliseconds)."""

    p50: float
    p90: float
    p99: float
    min_factor: float = 0.5
    max_factor: float = 3.0

    @property
    def mu(self) -> float:
        return math.log(self.p50)

    @property
    def sigma(self) -> float:
        return max(0.0, (math.log(self.p99) - math.log(self.p50)) / Z99)

    @property
    def mean(self) -> float:
        return math.exp(self.mu + self.sigma ** 2 / 2)

    @property
    def second_moment(self) -> float:
        return math.exp(2 * self.mu + 2 * self.sigma ** 2)

    @property
    def scv(self) -> float:
        """Squared coefficient of variation."""
        return math.exp(self.sigma ** 2) - 1

    @property
    def fit_error_p90(self) -> float:
        return math.exp(self.mu + Z90 * self.sigma) / self.p90 - 1

    def sample(self, rng: np.random.Generator, size) -> np.ndarray:
        x = np.exp(self.mu + self.sigma * rng.standard_normal(size))
        return np.clip(x, self.min_factor * self.p50, self.max_factor * self.p99)


def response_quantile(rho: float, service: LatencyDist, q: float = 0.99, per_request_mean_ms: float | None = None) -> float:
    """Predicted q-quantile of the response time (ms) of an M/G/1 replica at utilisation ``rho``."""
    s_q = service.p99 if q >= 0.99 else service.p90
    if rho <= 0:
        return s_q
    if rho >= 1:
        return math.inf
    es = per_request_mean_ms if per_request_mean_ms is not None else service.mean
    es2 = es * es * (1 + service.scv)
    w = rho * es2 / (2 * es * (1 - rho))
    tail = rho / (1 - q)
    wq = (w / rho) * math.log(tail) if tail > 1 else 0.0
    return s_q + wq


def max_utilisation(service: LatencyDist, budget_ms: float, *, cap: float = 0.9, q: float = 0.99,
                    per_request_mean_ms: float | None = None) -> float:
    """Largest utilisation in [0, cap] whose predicted q-quantile response fits in ``budget_ms``."""
    if response_quantile(0.0, service, q) > budget_ms:
        return 0.0
    if response_quantile(cap, service, q, per_request_mean_ms) <= budget_ms:
        return cap
    lo, hi = 0.0, cap
    for _ in range(40):
        mid = (lo + hi) / 2
        if response_quantile(mid, service, q, per_request_mean_ms) <= budget_ms:
            lo = mid
        else:
            hi = mid
    return lo
