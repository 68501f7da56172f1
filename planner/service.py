r"""The one service model: how long a configuration takes, how it batches, how it queues, what it draws.

Every part of synergai that needs to know how a server behaves imports this module -- the
planner (candidate capacities, the shared-server constraints of the MILP, predicted latencies),
the online stage (deadline check, queue estimates), the simulator (service draws, batch formation,
slots, energy), the emulating server and the executor (the batch wait it configures).
Nothing else re-derives these numbers.

Service time of one call
    One inference call processes a batch of ``b`` requests.  Its duration is log-normal through the
    profiled p50 and p99 (``mu = ln p50``, ``sigma = (ln p99 - ln p50) / z99``: the quantile the
    deadline is checked at is reproduced exactly; the profiled p90 serves as a check of the shape),
    clipped to ``[0.5 p50, 3 p99]`` so no draw is negative or absurd.  Moments and quantiles below
    are those of the *clipped* law, exactly.

Concurrency slots
    A profiled throughput ``mu`` above ``b / E[S]`` means the runtime keeps several calls in flight
    (MLPerf Server runs of GPUs do).  A server has ``c = max(1, round(mu * p50 / b))`` execution
    slots; its usable capacity is ``min(mu, c * b / E[S])`` requests/s, so the planner never counts
    on more than the simulator (or a real server with ``c`` instances) can deliver.

Batch formation
    A batch starts when ``b`` requests are queued or the oldest has waited ``batch_wait`` = half a
    median call (0 for ``b = 1``), whichever comes first, and a slot is free.  The planner adds the
    full bound to every response; the executor passes it to the runtime (``MAX_BATCH_DELAY_MS``,
    Triton's ``max_queue_delay_microseconds``).

Queueing of a (shared) server, in batch units
    A server hosting configurations ``j`` with routed rates ``x_j`` (req/s) receives batches of
    ``j`` at rate ``x_j / b_j``.  The ``c_j`` slots are modelled as one server ``c_j`` times as fast
    (exact in heavy traffic, and conservative: it waits at least as long as M/G/c), so a batch of
    ``j`` brings work ``w_j = S_j / c_j``:

        rho = sum_j x_j E[S_j] / (b_j c_j) = sum_j x_j / cap_j
        R   = sum_j (x_j / b_j) E[S_j^2] / (2 c_j^2) = sum_j x_j a_j       (mean residual work)
        W   = R / (1 - rho)                                                (Pollaczek-Khinchine)
        P(wait > t) ~= rho exp(-t rho / W)  =>  Wq(q) = R ln(rho / (1-q)) / (rho (1 - rho))

    and the predicted q-quantile response of a request of model m served by configuration k is
    ``batch_wait_k + Wq(q) + S_k(q) + rtt`` (a sum of quantiles: conservative).  A dedicated server
    is the case of one configuration; then ``Wq`` depends on ``rho`` only and
    :func:`max_utilisation` finds the largest ``rho`` that keeps the response within the deadline.

    For a shared server the MILP needs a linear condition.  With a utilisation cap ``rho <= rho_bar``,
    ``ln(rho/(1-q)) / (1-rho) <= G(rho_bar)`` (increasing in ``rho``), so

        G(rho_bar) * sum_j x_j a_j  <=  B_m * sum_j x_j / cap_j        (B_m: model m's queueing budget)

    is sufficient for model m to meet its deadline: linear in the rates, and homogeneous, so it
    holds per server when traffic is split evenly over identical servers.  :func:`shared_coefficients`
    returns its coefficients.

Power
    Serving power of a configuration is its profiled ``power_w``; when absent it is imputed
    *conservatively* -- the highest measured power of any configuration on that device (an
    unmeasured power mode must not look cheaper than the measured ones), else 4 W per core plus
    60 W per accelerator -- and flagged as an estimate.  Energy per request is power divided by the
    usable capacity (the device draws that power while all slots are busy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from statistics import NormalDist
from typing import Iterable, Mapping, Optional, Protocol, Sequence

import numpy as np

Z90 = 1.2815515655446004
Z99 = 2.3263478740408408
CLIP_LO = 0.5
"""Lower clip of a service draw, as a fraction of p50."""
CLIP_HI = 3.0
"""Upper clip of a service draw, as a multiple of p99."""
BATCH_WAIT_FRACTION = 0.5
"""Longest batch-formation wait, as a fraction of a median batch call."""
WATTS_PER_CORE = 4.0
"""Imputed serving power per CPU core (W) when a device has no measured power at all."""
WATTS_PER_ACCELERATOR = 60.0
"""Imputed serving power per accelerator (W) when a device has no measured power at all."""


class ConfigLike(Protocol):
    """What the service model reads from a profile record or a plan's configuration choice."""

    batch_size: int
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    throughput_rps: float


@lru_cache(maxsize=256)
def z_score(q: float) -> float:
    """Standard normal quantile."""
    return NormalDist().inv_cdf(q)


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def fit_lognormal(p50: float, p90: float, p99: float) -> tuple[float, float]:
    """(mu, sigma) of the log-normal through the profiled p50 and p99 (the deadline's quantile is met exactly;
    p90 is reported by :func:`fit_error_p90` as a check of the shape)."""
    del p90
    return math.log(p50), max(0.0, (math.log(p99) - math.log(p50)) / Z99)


def fit_error_p90(p50: float, p90: float, p99: float) -> float:
    """Relative error of the fitted law's p90 against the profiled p90."""
    mu, sigma = fit_lognormal(p50, p90, p99)
    return math.exp(mu + Z90 * sigma) / p90 - 1.0


@dataclass(frozen=True)
class ServiceModel:
    """Service behaviour of one configuration (times in seconds)."""

    mu: float
    """Log-normal location of one call's duration (ln seconds)."""
    sigma: float
    """Log-normal scale."""
    lo: float
    """Clip floor of a call's duration, s."""
    hi: float
    """Clip ceiling of a call's duration, s."""
    batch: int
    """Requests per call."""
    slots: int
    """Calls in flight at once."""
    batch_wait: float
    """Longest batch-formation wait, s."""
    throughput: float
    """Profiled throughput, requests/s."""

    @classmethod
    def of(cls, cfg: ConfigLike) -> "ServiceModel":
        p50, p90, p99 = cfg.latency_p50_ms / 1e3, cfg.latency_p90_ms / 1e3, cfg.latency_p99_ms / 1e3
        mu, sigma = fit_lognormal(p50, p90, p99)
        b = int(cfg.batch_size)
        slots = max(1, int(round(cfg.throughput_rps * p50 / b)))
        return cls(mu, sigma, CLIP_LO * p50, CLIP_HI * p99, b, slots, batch_wait_s(cfg), float(cfg.throughput_rps))

    # ---------------------------------------------------------------- one call
    def _partial(self, k: int) -> float:
        """E[X^k; lo <= X <= hi] for the unclipped log-normal X."""
        if self.sigma == 0.0:
            x = math.exp(self.mu)
            return x ** k if self.lo <= x <= self.hi else 0.0
        s = self.sigma
        a = (math.log(self.lo) - self.mu - k * s * s) / s
        b = (math.log(self.hi) - self.mu - k * s * s) / s
        return math.exp(k * self.mu + k * k * s * s / 2) * (_phi(b) - _phi(a))

    def _tails(self) -> tuple[float, float]:
        if self.sigma == 0.0:
            x = math.exp(self.mu)
            return float(x < self.lo), float(x > self.hi)
        return (_phi((math.log(self.lo) - self.mu) / self.sigma),
                1.0 - _phi((math.log(self.hi) - self.mu) / self.sigma))

    @cached_property
    def mean(self) -> float:
        """E[S] of one call (clipped law), s."""
        pl, ph = self._tails()
        return self.lo * pl + self.hi * ph + self._partial(1)

    @cached_property
    def second_moment(self) -> float:
        """E[S^2] of one call (clipped law), s^2."""
        pl, ph = self._tails()
        return self.lo ** 2 * pl + self.hi ** 2 * ph + self._partial(2)

    def quantile(self, q: float) -> float:
        """q-quantile of one call's duration, s."""
        x = math.exp(self.mu + self.sigma * z_score(q))
        return min(max(x, self.lo), self.hi)

    def draw(self, score: float) -> float:
        """Duration of one call for a standard normal score (the simulator's common random numbers), s."""
        x = math.exp(self.mu + self.sigma * score)
        return self.lo if x < self.lo else (self.hi if x > self.hi else x)

    def sample(self, rng) -> float:
        """Duration of one call drawn with a numpy Generator, s."""
        return self.draw(float(rng.standard_normal()))

    # ---------------------------------------------------------------- capacity and queueing
    @cached_property
    def capacity(self) -> float:
        """Usable requests/s of one server running only this configuration at full utilisation."""
        return min(self.throughput, self.slots * self.batch / self.mean)

    @cached_property
    def work_per_request(self) -> float:
        """Server-seconds one request uses (1 / capacity): its contribution to utilisation per req/s."""
        return 1.0 / self.capacity

    @cached_property
    def residual_per_request(self) -> float:
        """``a``: mean residual work contributed per req/s, s^2 (see the module docstring)."""
        return self.second_moment / (2.0 * self.batch * self.slots ** 2)


@dataclass
class ServiceArrays:
    """The quantities of :class:`ServiceModel` for many configurations at once (numpy; the planner's data step)."""

    batch: np.ndarray
    slots: np.ndarray
    batch_wait: np.ndarray
    quantile: np.ndarray       # service quantile at q, s
    capacity: np.ndarray
    work: np.ndarray           # 1 / capacity
    residual: np.ndarray       # a, s^2

    @classmethod
    def of(cls, cfgs: Sequence[ConfigLike], q: float) -> "ServiceArrays":
        from scipy.special import ndtr

        p50 = np.array([c.latency_p50_ms for c in cfgs], dtype=float) / 1e3
        p99 = np.array([c.latency_p99_ms for c in cfgs], dtype=float) / 1e3
        thr = np.array([c.throughput_rps for c in cfgs], dtype=float)
        b = np.array([c.batch_size for c in cfgs], dtype=float)
        mu = np.log(p50)
        sig = np.maximum(0.0, (np.log(p99) - mu) / Z99)
        lo, hi = CLIP_LO * p50, CLIP_HI * p99
        slots = np.maximum(1, np.round(thr * p50 / b))
        ssafe = np.where(sig > 0, sig, 1.0)

        def partial(k: int) -> np.ndarray:
            a = (np.log(lo) - mu - k * sig * sig) / ssafe
            c = (np.log(hi) - mu - k * sig * sig) / ssafe
            return np.exp(k * mu + k * k * sig * sig / 2) * (ndtr(c) - ndtr(a))

        pl = ndtr((np.log(lo) - mu) / ssafe)
        ph = 1.0 - ndtr((np.log(hi) - mu) / ssafe)
        x0 = np.exp(mu)
        inside = (x0 >= lo) & (x0 <= hi)
        m1 = np.where(sig > 0, lo * pl + hi * ph + partial(1), np.where(inside, x0, np.clip(x0, lo, hi)))
        m2 = np.where(sig > 0, lo ** 2 * pl + hi ** 2 * ph + partial(2), np.where(inside, x0, np.clip(x0, lo, hi)) ** 2)
        cap = np.minimum(thr, slots * b / m1)
        quant = np.clip(np.exp(mu + sig * z_score(q)), lo, hi)
        wait = np.where(b > 1, BATCH_WAIT_FRACTION * p50, 0.0)
        return cls(b, slots, wait, quant, cap, 1.0 / cap, m2 / (2.0 * b * slots ** 2))

    def take(self, idx: np.ndarray) -> "ServiceArrays":
        return ServiceArrays(*(getattr(self, f)[idx] for f in ("batch", "slots", "batch_wait", "quantile", "capacity",
                                                                 "work", "residual")))

    def max_utilisation(self, budget_s: np.ndarray, cap: float, q: float) -> np.ndarray:
        """Vectorised :func:`max_utilisation` (same grid inversion and refinement)."""
        free = budget_s - self.batch_wait - self.quantile
        r = self.residual / self.work
        out = np.full(len(free), cap)
        need = (free >= 0) & (r > 0) & (_g(cap, q) * r > free)
        out[free < 0] = 0.0
        idx = np.flatnonzero(need)
        if len(idx):
            target = free[idx] / r[idx]
            grid, gval = _g_grid(q)
            i = np.searchsorted(gval, target, side="right") - 1
            lo_ = np.where(i < 0, 0.0, grid[np.clip(i, 0, len(grid) - 1)])
            hi_ = grid[np.clip(i + 1, 0, len(grid) - 1)]
            for _ in range(20):
                mid = (lo_ + hi_) / 2
                with np.errstate(divide="ignore", invalid="ignore"):
                    t = mid / (1.0 - q)
                    gm = np.where(t > 1.0, np.log(np.maximum(t, 1e-300)) / (1.0 - mid), 0.0)
                ok = gm <= target
                lo_ = np.where(ok, mid, lo_)
                hi_ = np.where(ok, hi_, mid)
            out[idx] = np.minimum(lo_, cap)
        return out


def batch_wait_s(cfg: ConfigLike) -> float:
    """Longest batch-formation wait of a configuration, s (0 for batch 1)."""
    return 0.0 if cfg.batch_size <= 1 else BATCH_WAIT_FRACTION * cfg.latency_p50_ms / 1e3


def batch_wait_ms(cfg: ConfigLike) -> float:
    """:func:`batch_wait_s` in ms (what the executor passes as ``MAX_BATCH_DELAY_MS``)."""
    return batch_wait_s(cfg) * 1e3


def wait_quantile(rho: float, residual: float, q: float) -> float:
    """Queueing-delay q-quantile of a server at utilisation ``rho`` with mean residual work ``R``
    (= sum_j x_j a_j), s.  ``inf`` at or above saturation."""
    if rho <= 0.0 or residual <= 0.0:
        return 0.0
    if rho >= 1.0:
        return math.inf
    tail = rho / (1.0 - q)
    if tail <= 1.0:
        return 0.0
    return residual * math.log(tail) / (rho * (1.0 - rho))


def g_factor(rho_bar: float, q: float) -> float:
    """``G(rho_bar) = ln(rho_bar/(1-q)) / (1-rho_bar)``, the worst queueing factor up to ``rho_bar`` (>= 0)."""
    if rho_bar >= 1.0:
        return math.inf
    return max(0.0, math.log(rho_bar / (1.0 - q))) / (1.0 - rho_bar)


def fixed_delay(sm: ServiceModel, q: float, rtt_s: float) -> float:
    """The part of the q-quantile response that does not depend on load: batch wait + S(q) + RTT, s."""
    return sm.batch_wait + sm.quantile(q) + rtt_s


def response_quantile(loads: Sequence[tuple[ServiceModel, float]], target: ServiceModel, q: float,
                      rtt_s: float = 0.0) -> float:
    """Predicted q-quantile response (s) of a request served by ``target`` on a server carrying
    ``loads`` = [(service model, routed req/s), ...] (the target's own load included)."""
    rho = sum(x * sm.work_per_request for sm, x in loads)
    res = sum(x * sm.residual_per_request for sm, x in loads)
    return fixed_delay(target, q, rtt_s) + wait_quantile(rho, res, q)


def max_utilisation(sm: ServiceModel, budget_s: float, *, cap: float = 0.9, q: float = 0.99) -> float:
    """Largest utilisation in [0, cap] of a dedicated server of ``sm`` whose q-quantile response fits
    ``budget_s`` (the deadline minus RTT); 0 when even an idle server misses it.

    For one configuration ``Wq(q) = (a / w) g(rho)`` with ``g(rho) = ln(rho/(1-q)) / (1-rho)`` increasing,
    so the answer is ``g^-1(free / (a / w))``, read off a cached grid of ``g`` and refined by bisection.
    """
    free = budget_s - sm.batch_wait - sm.quantile(q)
    if free < 0:
        return 0.0
    r = sm.residual_per_request / sm.work_per_request  # R / rho of a server running only this configuration
    if r <= 0 or _g(cap, q) * r <= free:
        return cap
    target = free / r
    grid, gval = _g_grid(q)
    i = int(np.searchsorted(gval, target, side="right")) - 1  # gval[i] <= target < gval[i + 1]
    lo, hi = float(grid[max(i, 0)]), float(grid[min(i + 1, len(grid) - 1)])
    if i < 0:
        lo = 0.0
    for _ in range(20):
        mid = (lo + hi) / 2
        if _g(mid, q) <= target:
            lo = mid
        else:
            hi = mid
    return min(lo, cap)


def _g(rho: float, q: float) -> float:
    """``g(rho) = ln(rho/(1-q)) / (1-rho)`` where positive, else 0 (no wait at that quantile)."""
    if rho >= 1.0:
        return math.inf
    t = rho / (1.0 - q)
    return math.log(t) / (1.0 - rho) if t > 1.0 else 0.0


@lru_cache(maxsize=16)
def _g_grid(q: float) -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(0.0, 0.999, 4000)
    with np.errstate(divide="ignore"):
        t = grid / (1.0 - q)
        gval = np.where(t > 1.0, np.log(np.maximum(t, 1e-300)) / (1.0 - grid), 0.0)
    return grid, gval


def shared_coefficients(models: Iterable[ServiceModel], budget_s: float, rho_bar: float, q: float) -> list[float]:
    """Coefficients ``G(rho_bar) a_j - B / cap_j`` of the linear shared-server deadline condition
    ``sum_j coef_j x_j <= 0`` for a hosted model with queueing budget ``B`` (s)."""
    g = g_factor(rho_bar, q)
    return [g * sm.residual_per_request - budget_s * sm.work_per_request for sm in models]


# -------------------------------------------------------------------- power
class PowerRecord(Protocol):
    device: str
    power_w: Optional[float]
    cpu_cores: float
    accelerators: int


def device_power_ceiling(records: Iterable[PowerRecord]) -> dict[str, float]:
    """Highest measured serving power per device (the conservative imputation for unmeasured configs)."""
    out: dict[str, float] = {}
    for r in records:
        if r.power_w is not None:
            out[r.device] = max(out.get(r.device, 0.0), float(r.power_w))
    return out


def serving_power(rec: PowerRecord, ceiling: Mapping[str, float]) -> tuple[float, bool]:
    """(power W, estimated?) of a configuration while serving."""
    if rec.power_w is not None:
        return float(rec.power_w), False
    if rec.device in ceiling:
        return float(ceiling[rec.device]), True
    return WATTS_PER_CORE * rec.cpu_cores + WATTS_PER_ACCELERATOR * rec.accelerators, True


def energy_of_call(power_w: float, duration_s: float, sm: ServiceModel) -> float:
    """Joules charged to one call of ``duration_s`` (a slot's share of the device's serving power)."""
    return power_w * duration_s / sm.slots


def energy_per_request(power_w: float, sm: ServiceModel) -> float:
    """Joules per request at full utilisation: the device's serving power over its usable capacity."""
    return power_w / sm.capacity
