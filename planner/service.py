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
    median call (0 for ``b = 1``), whichever comes first, and a slot is free.  The executor passes the
    bound to the runtime (``MAX_BATCH_DELAY_MS``, Triton's ``max_queue_delay_microseconds``); the online
    stage's load-independent check :func:`fixed_delay` adds it in full.

Response quantile: the q-quantile of the SUM wait + service
    The wait ``W`` before a request's call starts is 0 w.p. ``1 - pi``, else exponential with mean
    ``theta``; ``S`` is the clipped log-normal.  ``P(W + S > t) = Sbar(t) + pi E[e^{-(t-S)/theta}; S <= t]``
    (Gauss-Legendre in probability space over ``[0, F(t)]``), inverted by bisection: the predicted
    response is that quantile + RTT (not the sum of the two quantiles, which overshoots at low load).

    Dedicated server (one configuration, utilisation ``rho = x / cap``, ``c`` slots, batch ``b``):
        queue of calls  pi_o = ErlangC(c, c rho) (M/M/c probability of waiting; = rho for c = 1),
                        mean wait pi_o theta_o, theta_o = (E[S^2] - (1 - 1/b) E[S]^2) / (2 c E[S] (1 - rho))
                        (P-K / Allen-Cunneen: the same tail as one server c times as fast; calls arrive
                        as Erlang-b, arrival SCV 1/b, so b = 1 is exactly P-K);
        batching (b>1)  every request waits (pi = 1): for a slot (mean equilibrium residual
                        E[S^2] / (2 c E[S])) w.p. min(1, rho b) -- rho b requests arrive per call per slot --
                        else for its batch to form (mean batch_wait / 2); mean kept non-decreasing in rho.
    :func:`max_utilisation` finds the largest ``rho`` whose quantile fits the budget (bisection on rho;
    ``P(W + S > budget)`` is non-decreasing in rho).

    Shared server (several configurations ``j``, routed rates ``x_j``): one server, ``rho = sum_j x_j / cap_j``,
    ``pi = rho``, ``theta = R / (rho (1 - rho))`` with the mean residual work
    ``R = sum_j x_j E[S_j^2] / (2 b_j c_j c_min)`` -- a call that needs a larger share than the running ones
    waits for them to finish (head-of-line), so a call's residual is counted divided by ``c_j c_min``, not
    ``c_j^2``; a batching target adds its own pre-service mean (above) with ``pi = 1``.

    Linear sufficient condition for the MILP (one row per (model, pool, budget of the loaded configuration)).
    ``P(W + S_k > D_k)`` increases in ``pi`` and ``theta``; with ``rho <= rho_bar``: ``pi <= rho_bar`` (1 for
    batching) and, with the worst case ``c_min = 1`` (``a_j = E[S_j^2] / (2 c_j) max(1 / b_j, w_j / E[S_j])``,
    :attr:`ServiceModel.residual_per_request`: at least ``E[S^2] / (2 b c)``, and enough for a server left
    with one configuration, which queues as a dedicated one),
    ``theta <= G(rho_bar) R/rho`` (b = 1) or ``pre_k(rho_bar) + rho_bar G(rho_bar) R/rho`` (b > 1) with
    ``G = 1 / (1 - rho_bar)`` (:func:`g_factor`).  With ``theta*_k`` the largest theta meeting
    ``D_k = deadline - RTT`` (bisection), ``B_k = theta*_k`` (b = 1) or ``(theta*_k - pre_k) / rho_bar``
    (:func:`shared_budget`), the row

        G(rho_bar) * sum_j a_j x_j  <=  B_k * sum_j x_j / cap_j

    is sufficient, linear in the rates, and homogeneous (holds per server when traffic is split evenly
    over identical servers).  :func:`shared_coefficients` returns its coefficients.

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

    @property
    def batch_size(self) -> int: ...
    @property
    def latency_p50_ms(self) -> float: ...
    @property
    def latency_p90_ms(self) -> float: ...
    @property
    def latency_p99_ms(self) -> float: ...
    @property
    def throughput_rps(self) -> float: ...


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
    def of(cls, cfg: ConfigLike) -> ServiceModel:
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
            return x**k if self.lo <= x <= self.hi else 0.0
        s = self.sigma
        a = (math.log(self.lo) - self.mu - k * s * s) / s
        b = (math.log(self.hi) - self.mu - k * s * s) / s
        return math.exp(k * self.mu + k * k * s * s / 2) * (_phi(b) - _phi(a))

    def _tails(self) -> tuple[float, float]:
        if self.sigma == 0.0:
            x = math.exp(self.mu)
            return float(x < self.lo), float(x > self.hi)
        return (
            _phi((math.log(self.lo) - self.mu) / self.sigma),
            1.0 - _phi((math.log(self.hi) - self.mu) / self.sigma),
        )

    @cached_property
    def mean(self) -> float:
        """E[S] of one call (clipped law), s."""
        pl, ph = self._tails()
        return self.lo * pl + self.hi * ph + self._partial(1)

    @cached_property
    def second_moment(self) -> float:
        """E[S^2] of one call (clipped law), s^2."""
        pl, ph = self._tails()
        return self.lo**2 * pl + self.hi**2 * ph + self._partial(2)

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
        """``a``: mean residual work contributed per req/s, s^2, as the shared-server condition counts it:
        ``E[S^2] / (2 c) * max(1 / b, w / E[S])`` -- ``E[S^2] / (2 b c)``, a call behind it may need the whole
        device (head-of-line), see the docstring; at least ``w E[S^2] / (2 c E[S])`` so that the row also
        covers a shared server left with this one configuration, which queues as a dedicated server does
        (there ``rho = x w`` and the wait's scale is ``E[S^2] / (2 c E[S] (1 - rho))``; a configuration whose
        usable capacity is its profiled throughput, below ``c b / E[S]``, has ``w > E[S] / (c b)``)."""
        return self.second_moment / (2.0 * self.slots) * max(1.0 / self.batch, self.work_per_request / self.mean)


@dataclass
class ServiceArrays:
    """The quantities of :class:`ServiceModel` for many configurations at once (numpy; the planner's data step).
    Its methods run the same numpy code as the scalar functions, so the two agree exactly."""

    batch: np.ndarray
    slots: np.ndarray
    batch_wait: np.ndarray
    quantile: np.ndarray  # service quantile at q, s
    capacity: np.ndarray
    work: np.ndarray  # 1 / capacity
    residual: np.ndarray  # a, s^2
    mu: np.ndarray
    sigma: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray
    second_moment: np.ndarray

    _FIELDS = (
        "batch",
        "slots",
        "batch_wait",
        "quantile",
        "capacity",
        "work",
        "residual",
        "mu",
        "sigma",
        "lo",
        "hi",
        "mean",
        "second_moment",
    )

    @classmethod
    def of(cls, cfgs: Sequence[ConfigLike], q: float) -> ServiceArrays:
        sms = [ServiceModel.of(c) for c in cfgs]  # the same objects as the scalar path (exact agreement)
        g = lambda f: np.array([f(s) for s in sms], dtype=float)  # noqa: E731
        return cls(
            g(lambda s: s.batch),
            g(lambda s: s.slots),
            g(lambda s: s.batch_wait),
            g(lambda s: s.quantile(q)),
            g(lambda s: s.capacity),
            g(lambda s: s.work_per_request),
            g(lambda s: s.residual_per_request),
            g(lambda s: s.mu),
            g(lambda s: s.sigma),
            g(lambda s: s.lo),
            g(lambda s: s.hi),
            g(lambda s: s.mean),
            g(lambda s: s.second_moment),
        )

    def take(self, idx: np.ndarray) -> ServiceArrays:
        return ServiceArrays(*(getattr(self, f)[idx] for f in self._FIELDS))

    def max_utilisation(self, budget_s: np.ndarray, cap: float, q: float) -> np.ndarray:
        """Vectorised :func:`max_utilisation` (the same code)."""
        return _max_util(
            budget_s,
            cap,
            q,
            self.slots,
            self.batch,
            self.mean,
            self.second_moment,
            self.batch_wait,
            self.mu,
            self.sigma,
            self.lo,
            self.hi,
        )

    def shared_budget(self, budget_s: np.ndarray, rho_bar: float, q: float) -> np.ndarray:
        """Vectorised :func:`shared_budget` (the same code)."""
        return _shared_budget(
            budget_s,
            rho_bar,
            q,
            self.slots,
            self.batch,
            self.mean,
            self.second_moment,
            self.batch_wait,
            self.mu,
            self.sigma,
            self.lo,
            self.hi,
        )


def batch_wait_s(cfg: ConfigLike) -> float:
    """Longest batch-formation wait of a configuration, s (0 for batch 1)."""
    return 0.0 if cfg.batch_size <= 1 else BATCH_WAIT_FRACTION * cfg.latency_p50_ms / 1e3


def batch_wait_ms(cfg: ConfigLike) -> float:
    """:func:`batch_wait_s` in ms (what the executor passes as ``MAX_BATCH_DELAY_MS``)."""
    return batch_wait_s(cfg) * 1e3


def g_factor(rho_bar: float, q: float) -> float:
    """``G(rho_bar) = 1 / (1 - rho_bar)``: the factor of ``sum_j a_j x_j`` in the shared-server row
    ``G * sum_j a_j x_j <= B_k * sum_j w_j x_j`` (``B_k`` from :func:`shared_budget`).  ``q`` is kept for the
    callers' signature; the quantile enters through ``B_k``."""
    del q
    return math.inf if rho_bar >= 1.0 else 1.0 / (1.0 - rho_bar)


def fixed_delay(sm: ServiceModel, q: float, rtt_s: float) -> float:
    """The load-independent part the online stage checks: batch wait + S(q) + RTT, s (an upper bound of
    the idle server's q-quantile response)."""
    return sm.batch_wait + sm.quantile(q) + rtt_s


# -------------------------------------------------------------------- the wait law and the sum's quantile
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_GL_X = (_GL_X + 1.0) / 2.0
_GL_W = _GL_W / 2.0


def _erlang_c(c: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Probability of waiting in M/M/c at per-slot utilisation ``rho`` (Erlang C), elementwise."""
    c = np.asarray(c, dtype=float)
    rho = np.minimum(np.asarray(rho, dtype=float), 1.0 - 1e-12)
    a = c * rho
    b = np.ones_like(a)
    for k in range(1, int(c.max(initial=1)) + 1):
        b = np.where(k <= c, a * b / (k + a * b), b)
    return b / (1.0 - rho * (1.0 - b))


def _nodes(t, mu, sig, lo, hi):
    """(F(t), S at the Gauss-Legendre nodes of [0, F(t)] in probability space) of the clipped log-normal."""
    from scipy.special import ndtr, ndtri

    t = np.asarray(t, dtype=float)
    ssafe = np.where(sig > 0, sig, 1.0)
    x0 = np.clip(np.exp(mu), lo, hi)
    F = np.where(sig > 0, ndtr((np.log(np.maximum(t, 1e-300)) - mu) / ssafe), (t >= x0).astype(float))
    F = np.where(t < lo, 0.0, np.where(t >= hi, 1.0, F))
    u = np.clip(F[..., None] * _GL_X, 1e-300, 1.0 - 1e-16)
    s = np.clip(np.exp(mu[..., None] + sig[..., None] * ndtri(u)), lo[..., None], hi[..., None])
    s = np.where((sig > 0)[..., None], s, x0[..., None])
    return F, s - t[..., None]


def _exceed_at(nodes, pi, theta):
    """``P(W + S > t)`` from :func:`_nodes` at t, for W = 0 w.p. ``1 - pi`` else Exp(mean ``theta``):
    ``Sbar(t) + pi E[e^{-(t - S)/theta}; S <= t]`` (Gauss-Legendre over ``[0, F(t)]``)."""
    F, d = nodes
    th = np.where(theta > 0, theta, 1.0)[..., None]
    x = d / th
    np.minimum(x, 0.0, out=x)
    np.maximum(x, -60.0, out=x)  # no denormals
    np.exp(x, out=x)
    e = np.einsum("...j,j->...", x, _GL_W) * F
    return (1.0 - F) + np.where(theta > 0, pi, 0.0) * e


def _exceed(t, pi, theta, mu, sig, lo, hi):
    """``P(W + S > t)`` (elementwise, numpy)."""
    return _exceed_at(_nodes(t, mu, sig, lo, hi), pi, theta)


def _wait_law(rho, R, c, b, m1, m2, bw, dedicated: bool):
    """(pi, theta) of the wait before a call starts (see the module docstring), elementwise."""
    rho = np.asarray(rho, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if dedicated:
            pi_o = _erlang_c(c, rho)
            mean_o = pi_o * (m2 - (1.0 - 1.0 / b) * m1**2) / (2.0 * c * m1 * (1.0 - rho))
        else:
            pi_o = rho
            mean_o = np.where(rho > 0, R / (1.0 - rho), 0.0)
        pre = _pre_service(rho, c, b, m1, m2, bw)
        pi = np.where(b > 1, 1.0, pi_o)
        mean = mean_o + pre
        theta = np.where(pi > 0, mean / np.where(pi > 0, pi, 1.0), 0.0)
    return pi, theta


def _pre_service(rho, c, b, m1, m2, bw):
    """Mean batch-formation / slot wait of a batching call (0 for batch 1): a request waits for a slot to free
    (mean equilibrium residual ``E[S^2] / (2 c E[S])``) w.p. ``min(1, rho b)`` (the chance a call is running:
    ``rho b`` requests arrive per call duration per slot), else for its batch to form (mean ``bw / 2``); made
    non-decreasing in ``rho``."""
    busy = np.minimum(1.0, np.asarray(rho, dtype=float) * b)
    return np.where(b > 1, bw / 2.0 + busy * np.maximum(0.0, m2 / (2.0 * c * m1) - bw / 2.0), 0.0)


def _sum_quantile(pi, theta, mu, sig, lo, hi, q, iters: int = 60):
    """q-quantile of ``W + S`` (elementwise), the upper end of a bisection bracket (conservative)."""
    from scipy.special import ndtri

    pi, theta = np.asarray(pi, float), np.asarray(theta, float)
    a = np.clip(np.exp(mu + sig * ndtri(q)), lo, hi)
    with np.errstate(divide="ignore"):
        up = hi + theta * np.maximum(0.0, np.log(np.maximum(pi, 1e-300) / (1.0 - q))) + 1e-9
    up = np.maximum(up, a)
    for _ in range(iters):
        mid = (a + up) / 2
        over = _exceed(mid, pi, theta, mu, sig, lo, hi) > 1.0 - q
        a = np.where(over, mid, a)
        up = np.where(over, up, mid)
    return up


def response_quantile(
    loads: Sequence[tuple[ServiceModel, float]], target: ServiceModel, q: float, rtt_s: float = 0.0
) -> float:
    """Predicted q-quantile response (s) of a request served by ``target`` on a server carrying
    ``loads`` = [(service model, routed req/s), ...] (the target's own load included; one entry: a
    dedicated server)."""
    rho = sum(x * sm.work_per_request for sm, x in loads)
    if rho >= 1.0:
        return math.inf
    t = target
    if len(loads) == 1:
        R = 0.0
    else:
        cmin = min(sm.slots for sm, _ in loads)
        R = sum(x * sm.second_moment / (2.0 * sm.batch * sm.slots * cmin) for sm, x in loads)
    pi, theta = _wait_law(
        np.array([rho]),
        R,
        np.array([float(t.slots)]),
        np.array([float(t.batch)]),
        t.mean,
        t.second_moment,
        t.batch_wait,
        len(loads) == 1,
    )
    a = _arr(t)
    return float(_sum_quantile(pi, theta, *a, q)[0]) + rtt_s


def _arr(sm: ServiceModel) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([sm.mu]), np.array([sm.sigma]), np.array([sm.lo]), np.array([sm.hi]))


def _max_util(budget, cap, q, c, b, m1, m2, bw, mu, sig, lo, hi, iters: int = 22):
    """Vectorised core of :func:`max_utilisation`: the largest rho in [0, cap] whose dedicated q-quantile
    response ``W + S`` fits ``budget`` (bisection; P(W + S > budget) is non-decreasing in rho)."""
    budget = np.asarray(budget, dtype=float)

    nodes = _nodes(budget, mu, sig, lo, hi)

    def bad(r):
        pi, th = _wait_law(r, 0.0, c, b, m1, m2, bw, True)
        return _exceed_at(nodes, pi, th) > 1.0 - q

    n = len(budget)
    out = np.full(n, float(cap))
    if n == 0:
        return out
    at_cap = bad(np.full(n, float(cap)))
    at_0 = bad(np.zeros(n))
    lo_, hi_ = np.zeros(n), np.full(n, float(cap))
    for _ in range(iters):
        mid = (lo_ + hi_) / 2
        x = bad(mid)
        lo_ = np.where(x, lo_, mid)
        hi_ = np.where(x, mid, hi_)
    return np.where(at_0, 0.0, np.where(at_cap, lo_, float(cap)))


def max_utilisation(sm: ServiceModel, budget_s: float, *, cap: float = 0.9, q: float = 0.99) -> float:
    """Largest utilisation in [0, cap] of a dedicated server of ``sm`` whose q-quantile response fits
    ``budget_s`` (the deadline minus RTT); 0 when even an idle server misses it (bisection on rho)."""
    f = lambda v: np.array([float(v)])  # noqa: E731
    return float(
        _max_util(
            f(budget_s), cap, q, f(sm.slots), f(sm.batch), f(sm.mean), f(sm.second_moment), f(sm.batch_wait), *_arr(sm)
        )[0]
    )


def _max_theta(budget, pi, pre, q, mu, sig, lo, hi, iters: int = 30):
    """Largest wait-tail mean theta with ``P(W + S > budget) <= 1 - q`` for W = (pi, theta); 0 if none."""
    budget = np.asarray(budget, dtype=float)
    n = len(budget)
    nodes = _nodes(budget, mu, sig, lo, hi)
    ok0 = _exceed_at(nodes, np.asarray(pi, float), np.zeros(n)) <= 1.0 - q
    lo_, hi_ = np.zeros(n), np.maximum(budget, 1e-12)
    for _ in range(iters):
        mid = (lo_ + hi_) / 2
        ok = _exceed_at(nodes, pi, mid) <= 1.0 - q
        lo_ = np.where(ok, mid, lo_)
        hi_ = np.where(ok, hi_, mid)
    return np.where(ok0, lo_, 0.0)


def _shared_budget(budget, rho_bar, q, c, b, m1, m2, bw, mu, sig, lo, hi):
    budget = np.asarray(budget, dtype=float)
    rb = np.full(len(budget), float(rho_bar))
    pi = np.where(b > 1, 1.0, rb)
    th = _max_theta(budget, pi, 0.0, q, mu, sig, lo, hi)
    pre = _pre_service(rb, c, b, m1, m2, bw)
    # b = 1: theta = (R/rho) / (1 - rho) <= G (R/rho);  b > 1: theta = pre + (R/rho) rho/(1-rho) <= pre + rho_bar G (R/rho)
    return np.where(th <= 0, 0.0, np.where(b > 1, (th - pre) / rho_bar, th))


def shared_budget(sm: ServiceModel, budget_s: float, rho_bar: float, q: float) -> float:
    """``B_k`` (s) of the linear shared-server condition ``G(rho_bar) sum_j a_j x_j <= B_k sum_j w_j x_j``
    for a request served by ``sm`` with ``budget_s`` = deadline - RTT (<= 0: cannot be shared)."""
    f = lambda v: np.array([float(v)])  # noqa: E731
    return float(
        _shared_budget(
            f(budget_s),
            rho_bar,
            q,
            f(sm.slots),
            f(sm.batch),
            f(sm.mean),
            f(sm.second_moment),
            f(sm.batch_wait),
            *_arr(sm),
        )[0]
    )


def shared_coefficients(models: Iterable[ServiceModel], budget_s: float, rho_bar: float, q: float) -> list[float]:
    """Coefficients ``G(rho_bar) a_j - B / cap_j`` of the linear shared-server deadline condition
    ``sum_j coef_j x_j <= 0`` for a hosted model with shared budget ``B`` (:func:`shared_budget`), s."""
    g = g_factor(rho_bar, q)
    return [g * sm.residual_per_request - budget_s * sm.work_per_request for sm in models]


# -------------------------------------------------------------------- power
class PowerRecord(Protocol):
    @property
    def device(self) -> str: ...
    @property
    def power_w(self) -> Optional[float]: ...
    @property
    def cpu_cores(self) -> float: ...
    @property
    def accelerators(self) -> int: ...


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
