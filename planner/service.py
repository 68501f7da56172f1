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
    stage's load-independent check :func:`fixed_delay` adds it in full.  Below full load batches are
    partly filled: :func:`mean_batch` estimates the mean batch ``nbar`` from the formation rule, so a
    batching configuration keeps the device busy ``rho_c = rho b / nbar`` of the time (call level), more
    than its full-batch utilisation ``rho = x / cap``.

Response quantile: the q-quantile of the SUM wait + service
    The wait ``W`` before a request's call starts is, w.p. ``pw`` (the device is busy), a Gamma with the
    conditional wait's mean ``theta`` and second moment (shape ``k >= 1``: never heavier-tailed than the
    exponential), else 0 (batch 1) or uniform on ``[0, batch_wait]`` (its batch forms); ``S`` is the clipped
    log-normal.  ``P(W + S > t) = Sbar(t) + E[P(W > t - S); S <= t]`` (Gauss-Legendre in probability space
    over ``[0, F(t)]``), inverted by bisection: the predicted response is that quantile + RTT (not the sum
    of the two quantiles, which overshoots at low load).

    Dedicated server (one configuration, ``c`` slots, batch ``b``, utilisation ``rho = x / cap``):
        batch 1         M/G/c: ``pw = ErlangC(c, rho)``; the conditional wait of the M/G/1 that is ``c`` times
                        as fast: mean ``R1 / (1 - rho)``, second moment ``2 rho theta^2 + R2 / (1 - rho)``
                        (Pollaczek-Khinchine and Takacs) with the slot residual's moments
                        ``R1 = E[S^2] / (2 c E[S])``, ``R2 = E[S^3] / (3 c^2 E[S])``;
        batching        ``pw = ErlangC(c, rho_c)``; the request waits the slot residual ``R1`` and then the calls
                        queued ahead, full batches (Allen-Cunneen, call arrivals of SCV ``1/b``), an exponential
                        of mean ``X = ErlangC(c, rho) (E[S^2] - (1 - 1/b) E[S]^2) / (2 c E[S] (1 - rho)) / pw``.
    :func:`max_utilisation` finds the largest ``rho`` whose quantile fits the budget (safeguarded false
    position on rho; ``P(W + S > budget)`` is non-decreasing in rho).

    Shared server (several configurations ``j``, routed rates ``x_j``, calls ``x_j / nbar_j``; :func:`shared_law`):
        the device's call-level busy fraction ``rho_c = sum_j (x_j / nbar_j) b_j w_j``; the residual of a running
        call ``R1 = sum_j (x_j / nbar_j) a_j / rho_c`` with ``a_j`` = :func:`shared_residual` (a call of a
        ``1/c_j`` share delays a whole-device call by all of its remaining time: head-of-line); a call of a
        larger share waiting for smaller ones to drain idles part of the device, which is added to the
        full-batch utilisation ``rho_f = sum_j x_j w_j + lost``; ``pw = min(1, rho_c + lost)``,
        ``theta = R1 / (1 - rho_f)`` (the queue grows as the full-batch system's: batches fill as it grows),
        second moment as M/G/1.  The mean batch sizes are a fixed point (other configurations' work delays a
        batching call's start).

    Linear sufficient condition for the MILP (one row per (model, pool, budget of the loaded configuration)).
    ``P(W + S_k > D_k)`` increases with ``pw`` and, for the exponential, with ``theta``; the planner's
    envelope of the law is the exponential (a Gamma with ``k >= 1`` and the same mean has the lighter tail
    at a p99) with ``pw <= p_wait`` (``rho_bar``; 1 on a pool that may load a batching configuration) and,
    for a batching target, ``U(0, batch_wait) + Exp(theta)`` (it dominates the mixture).  A pool's shared
    servers load configurations of one slot count (milp.py C6b), so no drain occurs and ``a_j`` uses
    ``cmin = c_j``.  With ``rho_f <= rho_bar``, ``theta <= G(rho_bar) R1``, ``G = 1 / (1 - rho_bar)``
    (:func:`g_factor`); ``R1 <= sum_j a_j x_j / sum_j w_j x_j`` for every ``1 <= nbar_j <= b_j`` (the
    residual counted as if batches held one request, the busy time as if they were full).  With ``B_k`` the
    largest ``theta`` whose envelope meets ``D_k = deadline - RTT`` (:func:`shared_budget`), the row

        G(rho_bar) * sum_j a_j x_j  <=  B_k * sum_j w_j x_j

    is sufficient, linear in the rates, and homogeneous (holds per server when traffic is split evenly
    over identical servers); ``a_j >= w_j b_j E[S^2] / (2 c_j E[S])`` makes it cover a server left with one
    configuration, whose wait is the dedicated law's.  :func:`shared_coefficients` returns its
    coefficients; ``tests/test_service.py`` checks the implication on random servers.

    Calibration against the simulator (``tests/test_calibration.py``, 16 regimes x 4 held-out seeds): within
    20% of the measured p99 in 13 regimes; the others over-predict (shared with a batching model at high
    load, mixed slot counts), the worst optimistic error is -19%.

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


def _clipped_moments(mu, sig, lo, hi):
    """(E[S], E[S^2], E[S^3]) of the log-normal (mu, sig) clipped to [lo, hi] (elementwise): the clip
    points' probability masses plus ``E[X^k; lo <= X <= hi] = e^{k mu + k^2 sig^2 / 2} (Phi(b_k) - Phi(a_k))``,
    ``a_k = (ln lo - mu - k sig^2) / sig`` (sig = 0: the point mass at ``clip(e^mu)``)."""
    from scipy.special import ndtr

    mu, sig, lo, hi = (np.asarray(v, dtype=float) for v in (mu, sig, lo, hi))
    pos = sig > 0
    ss = np.where(pos, sig, 1.0)
    llo, lhi = np.log(lo), np.log(hi)
    pl = np.where(pos, ndtr((llo - mu) / ss), (np.exp(mu) < lo).astype(float))
    ph = np.where(pos, 1.0 - ndtr((lhi - mu) / ss), (np.exp(mu) > hi).astype(float))
    x0 = np.exp(mu)
    inside = ((lo <= x0) & (x0 <= hi)).astype(float)
    out = []
    for k in (1, 2, 3):
        a = (llo - mu - k * ss * ss) / ss
        b = (lhi - mu - k * ss * ss) / ss
        part = np.where(pos, np.exp(k * mu + k * k * ss * ss / 2) * (ndtr(b) - ndtr(a)), x0**k * inside)
        out.append(lo**k * pl + hi**k * ph + part)
    return tuple(out)


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
    @cached_property
    def _moments(self) -> tuple[float, float, float]:
        m = _clipped_moments(*(np.array([v]) for v in (self.mu, self.sigma, self.lo, self.hi)))
        return float(m[0][0]), float(m[1][0]), float(m[2][0])

    @property
    def mean(self) -> float:
        """E[S] of one call (clipped law), s."""
        return self._moments[0]

    @property
    def second_moment(self) -> float:
        """E[S^2] of one call (clipped law), s^2."""
        return self._moments[1]

    @property
    def third_moment(self) -> float:
        """E[S^3] of one call (clipped law), s^3."""
        return self._moments[2]

    @cached_property
    def residual_mean(self) -> float:
        """E[S^2] / (2 E[S]): mean remaining time of a call found running (equilibrium residual), s."""
        return self.second_moment / (2.0 * self.mean)

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

    def shared_residual(self, cmin: int) -> float:
        """``a``: residual work of one call on a shared server whose smallest slot count is ``cmin``, s^2
        (:func:`shared_residual`; per request when batches hold one request, the worst case)."""
        return float(
            shared_residual(self.mean, self.second_moment, self.work_per_request, self.batch, self.slots, cmin)
        )


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
    mu: np.ndarray
    sigma: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray
    second_moment: np.ndarray
    third_moment: np.ndarray

    _FIELDS = (
        "batch",
        "slots",
        "batch_wait",
        "quantile",
        "capacity",
        "work",
        "mu",
        "sigma",
        "lo",
        "hi",
        "mean",
        "second_moment",
        "third_moment",
    )

    @classmethod
    def of(cls, cfgs: Sequence[ConfigLike], q: float) -> ServiceArrays:
        """The same formulas as :meth:`ServiceModel.of` and its properties, over arrays."""
        g = lambda f: np.array([f(c) for c in cfgs], dtype=float)  # noqa: E731
        p50 = g(lambda c: c.latency_p50_ms) / 1e3
        p99 = g(lambda c: c.latency_p99_ms) / 1e3
        b = g(lambda c: int(c.batch_size))
        thr = g(lambda c: c.throughput_rps)
        mu = np.log(p50)
        sig = np.maximum(0.0, (np.log(p99) - np.log(p50)) / Z99)
        lo, hi = CLIP_LO * p50, CLIP_HI * p99
        slots = np.maximum(1.0, np.round(thr * p50 / b))
        bw = np.where(b <= 1, 0.0, BATCH_WAIT_FRACTION * p50)
        m1, m2, m3 = _clipped_moments(mu, sig, lo, hi)
        cap = np.minimum(thr, slots * b / m1)
        quant = np.clip(np.exp(mu + sig * z_score(q)), lo, hi)
        return cls(b, slots, bw, quant, cap, 1.0 / cap, mu, sig, lo, hi, m1, m2, m3)

    def take(self, idx: np.ndarray) -> ServiceArrays:
        return ServiceArrays(*(getattr(self, f)[idx] for f in self._FIELDS))

    def max_utilisation(self, budget_s: np.ndarray, cap: float, q: float) -> np.ndarray:
        """Vectorised :func:`max_utilisation` (the same code)."""
        return _max_util(np.asarray(budget_s, dtype=float), cap, q, self._law_args())

    def shared_budget(self, budget_s: np.ndarray, p_wait: np.ndarray | float, q: float) -> np.ndarray:
        """Vectorised :func:`shared_budget` (the same code)."""
        budget_s = np.asarray(budget_s, dtype=float)
        return _shared_budget(
            budget_s,
            np.broadcast_to(np.asarray(p_wait, dtype=float), budget_s.shape),
            q,
            self.batch,
            self.batch_wait,
            self.mu,
            self.sigma,
            self.lo,
            self.hi,
        )

    def shared_residual(self, cmin: np.ndarray) -> np.ndarray:
        """Vectorised :func:`shared_residual`."""
        return shared_residual(self.mean, self.second_moment, self.work, self.batch, self.slots, cmin)

    def _law_args(self) -> tuple:
        return (
            self.slots,
            self.batch,
            self.work,
            self.mean,
            self.second_moment,
            self.third_moment,
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


def shared_residual(m1, m2, w, b, c, cmin):
    """``a = max(E[S^2] / (2 min(c, cmin)^2), w b E[S^2] / (2 c E[S]))`` (elementwise), s^2: the residual
    work one call leaves for a request behind it on a shared server whose configurations have at least
    ``cmin`` slots -- a call of ``1/c`` of the device delays a whole-device call by its full remaining
    time (head-of-line: ``cmin = 1`` counts it undivided), calls of equal share by a ``c``-th of it; at
    least the dedicated server's scale ``E[S^2] / (2 c E[S])`` per unit of ``b w`` (a server left with
    this one configuration queues as a dedicated one; ``w > E[S] / (c b)`` when the usable capacity is
    the profiled throughput)."""
    m1, m2, w, b, c = (np.asarray(v, dtype=float) for v in (m1, m2, w, b, c))
    k = np.minimum(c, np.asarray(cmin, dtype=float))
    return np.maximum(m2 / (2.0 * k * k), w * b * m2 / (2.0 * c * m1))


# -------------------------------------------------------------------- batch formation
_NB_X, _NB_W = np.polynomial.legendre.leggauss(8)
_NB_X = (_NB_X + 1.0) / 2.0
_NB_W = _NB_W / 2.0


def _poisson_min(mu: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``E[min(m, N)]`` for ``N ~ Poisson(mu)`` and integer ``m >= 1`` (elementwise):
    ``mu P(N <= m - 2) + m P(N >= m)``, with ``P(N <= k) = Q(k + 1, mu)`` (regularised upper gamma)."""
    from scipy.special import gammaincc

    m = np.asarray(m, dtype=float)
    mu = np.asarray(mu, dtype=float)
    le = np.where(m >= 2, gammaincc(np.maximum(m - 1.0, 1.0), mu), 0.0)
    return mu * le + m * (1.0 - gammaincc(m, mu))


def _mean_batch(x, b, c, bw, mu, sig, lo, hi, extra):
    """Vectorised :func:`mean_batch` (requests per call)."""
    from scipy.special import ndtri

    x, b, c, bw, extra = (np.asarray(v, dtype=float) for v in (x, b, c, bw, extra))
    out = np.ones_like(x)
    on = (b > 1) & (x > 0)
    if not on.any():
        return out
    x, b, c, bw, extra, mu, sig, lo, hi = (
        np.asarray(v, dtype=float)[on] for v in (x, b, c, bw, extra, mu, sig, lo, hi)
    )
    xs = x[:, None, None]
    s = np.clip(np.exp(mu[:, None] + sig[:, None] * ndtri(_NB_X)[None, :]), lo[:, None], hi[:, None])
    gather = (s / c[:, None] + extra[:, None])[:, :, None]  # (n, S nodes, 1): until the device has room
    a = (-np.log1p(-_NB_X))[None, None, :] / xs  # (n, 1, a nodes): first arrival after the last call started
    window = np.maximum(gather - a, bw[:, None, None])
    vals = 1.0 + _poisson_min(xs * window, np.broadcast_to((b - 1.0)[:, None, None], window.shape))
    out[on] = np.minimum(np.einsum("nij,i,j->n", vals, _NB_W, _NB_W), b)
    return out


def mean_batch(sm: ServiceModel, rate: float, extra_s: float = 0.0) -> float:
    """Mean requests per call of ``sm`` at ``rate`` req/s.  A call starts when the device has room (the
    previous call of this configuration started ``S/c`` ago, plus ``extra_s`` of other work on a shared
    device) and the oldest request has waited ``batch_wait`` or ``b`` are queued; the first request
    arrives ``A ~ Exp(rate)`` after the previous start, so the batch is
    ``min(b, 1 + Poisson(rate * max(S/c + extra - A, batch_wait)))``, averaged over ``S`` and ``A``
    (Gauss-Legendre).  Requests left over from a full batch are ignored, so the estimate is low at high
    load -- a conservative error (more calls, more device time)."""
    if sm.batch <= 1 or rate <= 0:
        return 1.0
    f = lambda v: np.array([float(v)])  # noqa: E731
    return float(_mean_batch(f(rate), f(sm.batch), f(sm.slots), f(sm.batch_wait), *_arr(sm), f(extra_s))[0])


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
    """(F(t), S - t at the Gauss-Legendre nodes of [0, F(t)] in probability space) of the clipped log-normal."""
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


def _wait_tail(d, pw, theta, k, bw):
    """``P(W > d)`` for ``d >= 0`` (elementwise over a trailing node axis): W is Gamma(``k``, mean ``theta``)
    w.p. ``pw``, else 0 (``bw = 0``) or uniform on [0, bw] (batch formation)."""
    from scipy.special import gammaincc

    th = np.where(theta > 0, theta, 1.0)[..., None]
    kk = np.broadcast_to(np.asarray(k, dtype=float)[..., None], d.shape)
    z = np.minimum(d / th * kk, 700.0)
    g = np.exp(-z)
    gam = kk > 1.0
    if gam.any():  # the regularised upper incomplete gamma only where the shape is not 1 (it is slow)
        g[gam] = gammaincc(kk[gam], z[gam])
    g = np.where((theta > 0)[..., None], g, 0.0)
    bws = np.asarray(bw, dtype=float)[..., None]
    u = np.where(bws > 0, np.clip(1.0 - d / np.where(bws > 0, bws, 1.0), 0.0, 1.0), 0.0)
    p = np.asarray(pw, dtype=float)[..., None]
    return p * g + (1.0 - p) * u


def _exceed_at(nodes, pw, theta, k, bw):
    """``P(W + S > t)`` from :func:`_nodes` at t: ``Sbar(t) + E[P(W > t - S); S <= t]`` (Gauss-Legendre over
    ``[0, F(t)]``)."""
    F, d = nodes
    tail = _wait_tail(np.maximum(-d, 0.0), pw, theta, k, bw)
    return (1.0 - F) + np.einsum("...j,j->...", tail, _GL_W) * F


def _sum_quantile(pw, theta, k, bw, mu, sig, lo, hi, q, iters: int = 60):
    """q-quantile of ``W + S`` (elementwise), the upper end of a bisection bracket (conservative)."""
    from scipy.special import ndtri

    pw, theta, k, bw = (np.asarray(v, dtype=float) for v in (pw, theta, k, bw))
    a = np.clip(np.exp(mu + sig * ndtri(q)), lo, hi)
    # a Gamma(k >= 1) quantile at level p is below mean * (1 + ln 1/(1-p))
    up = hi + bw + theta * (1.0 + math.log(1.0 / (1.0 - q))) + 1e-9
    for _ in range(8):  # make sure the bracket holds
        bad = _exceed_at(_nodes(up, mu, sig, lo, hi), pw, theta, k, bw) > 1.0 - q
        if not bad.any():
            break
        up = np.where(bad, 2.0 * up, up)
    up = np.maximum(up, a)
    for _ in range(iters):
        if np.all(up - a <= 1e-9 * up):  # well below any latency that matters (ns at 1 s)
            break
        mid = (a + up) / 2
        over = _exceed_at(_nodes(mid, mu, sig, lo, hi), pw, theta, k, bw) > 1.0 - q
        a = np.where(over, mid, a)
        up = np.where(over, up, mid)
    return up


def _gamma_shape(theta, second):
    """Shape ``k = max(1, theta^2 / Var)`` of the Gamma with mean ``theta`` and second moment ``second``
    (never heavier-tailed than the exponential, so the planner's exponential rows bound it)."""
    var = np.maximum(np.asarray(second, float) - np.asarray(theta, float) ** 2, 1e-300)
    return np.maximum(1.0, np.asarray(theta, float) ** 2 / var)


def _dedicated_law(rho, c, b, w, m1, m2, m3, bw, mu, sig, lo, hi):
    """(pw, theta, k) of the wait of a dedicated server at utilisation ``rho = x w`` (elementwise)."""
    rho = np.asarray(rho, dtype=float)
    x = rho / w
    nb = _mean_batch(x, b, c, bw, mu, sig, lo, hi, np.zeros_like(rho))
    rho_c = np.minimum(rho * b / nb, 1.0 - 1e-12)  # device busy: calls of nb requests, each b w long
    pw = _erlang_c(c, rho_c)
    one = np.maximum(1.0 - rho, 1e-12)
    re1 = m2 / (2.0 * c * m1)  # residual until a slot frees
    re2 = m3 / (3.0 * m1 * c * c)
    # batch 1: M/G/c (Erlang C; the conditional wait of the M/G/1 that is c times as fast: mean and
    # second moment from Takacs)
    th1 = re1 / one
    sec1 = 2.0 * rho * th1 * th1 + re2 / one
    # batching: the slot residual, then the calls queued ahead (full batches, Allen-Cunneen with call
    # arrivals of SCV 1/b), exponential
    ref = (m2 - (1.0 - 1.0 / b) * m1 * m1) / (2.0 * c * m1)
    xm = _erlang_c(c, rho) * ref / one / np.maximum(pw, 1e-12)
    thb = re1 + xm
    secb = re2 + 2.0 * re1 * xm + 2.0 * xm * xm
    th = np.where(b > 1, thb, th1)
    sec = np.where(b > 1, secb, sec1)
    return pw, th, _gamma_shape(th, sec)


def shared_law(loads: Sequence[tuple[ServiceModel, float]], target: ServiceModel, iters: int = 30):
    """(pw, theta, k) of the wait of a request of ``target`` on a shared server carrying ``loads`` (see the
    module docstring; the same for every hosted model: one FIFO queue), or None when the server is
    overloaded."""
    sms = [sm for sm, _ in loads]
    xs = [float(x) for _, x in loads]
    cmin = min(sm.slots for sm in sms)
    A = [sm.shared_residual(cmin) for sm in sms]
    A3 = [a * 2.0 * sm.third_moment / (3.0 * sm.second_moment) / min(sm.slots, cmin) for a, sm in zip(A, sms)]
    rho_f0 = sum(x * sm.work_per_request for sm, x in loads)
    if rho_f0 >= 1.0:
        return None
    # mean batch sizes: a fixed point (the other configurations' work delays a batching call's start)
    nb = [1.0 if sm.batch == 1 else float(sm.batch) for sm in sms]
    if any(sm.batch > 1 for sm in sms):
        for _ in range(iters):
            calls = [x / n for x, n in zip(xs, nb)]
            tot = sum(cl * a for cl, a in zip(calls, A))
            new = [
                mean_batch(sm, x, (tot - calls[i] * A[i]) / (1.0 - rho_f0)) if sm.batch > 1 else 1.0
                for i, (sm, x) in enumerate(loads)
            ]
            nb = [(u + v) / 2.0 for u, v in zip(nb, new)]
    calls = [x / n for x, n in zip(xs, nb)]
    busy = [cl * sm.batch * sm.work_per_request for cl, sm in zip(calls, sms)]
    rho_c = sum(busy)
    # device time lost while a call waits for smaller running calls to drain (share of each running config)
    share = 1.0 / max(1.0, rho_c)
    lost = sum(
        ct
        * sum(
            bj * share * sj.residual_mean * (1.0 - st.slots / sj.slots)
            for sj, bj in zip(sms, busy)
            if sj.slots > st.slots
        )
        for st, ct in zip(sms, calls)
    )
    rho_f = rho_f0 + lost
    if rho_f >= 1.0:
        return None
    if rho_c <= 0.0:
        return 0.0, 0.0, 1.0
    re1 = sum(cl * a for cl, a in zip(calls, A)) / rho_c
    re2 = sum(cl * a for cl, a in zip(calls, A3)) / rho_c
    pw = min(1.0, rho_c + lost)
    th = re1 / (1.0 - rho_f)
    sec = 2.0 * rho_f * th * th + re2 / (1.0 - rho_f)
    return pw, th, float(_gamma_shape(th, sec))


def response_quantile(
    loads: Sequence[tuple[ServiceModel, float]], target: ServiceModel, q: float, rtt_s: float = 0.0
) -> float:
    """Predicted q-quantile response (s) of a request served by ``target`` on a server carrying
    ``loads`` = [(service model, routed req/s), ...] (the target's own load included; one entry: a
    dedicated server)."""
    t = target
    if len(loads) == 1:
        sm, x = loads[0]
        rho = x * sm.work_per_request
        if rho >= 1.0:
            return math.inf
        pw, th, k = _dedicated_law(np.array([rho]), *(np.array([float(v)]) for v in _law_tuple(t)))
    else:
        law = shared_law(loads, t)
        if law is None:
            return math.inf
        pw, th, k = (np.array([v]) for v in law)
    return float(_sum_quantile(pw, th, k, np.array([t.batch_wait]), *_arr(t), q)[0]) + rtt_s


def _law_tuple(sm: ServiceModel) -> tuple:
    return (
        sm.slots,
        sm.batch,
        sm.work_per_request,
        sm.mean,
        sm.second_moment,
        sm.third_moment,
        sm.batch_wait,
        sm.mu,
        sm.sigma,
        sm.lo,
        sm.hi,
    )


def _arr(sm: ServiceModel) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([sm.mu]), np.array([sm.sigma]), np.array([sm.lo]), np.array([sm.hi]))


def _max_util(budget, cap, q, args, tol: float = 1e-5, iters: int = 40):
    """Vectorised core of :func:`max_utilisation`: the largest rho in [0, cap] whose dedicated q-quantile
    response ``W + S`` fits ``budget``, to ``tol`` (``P(W + S > budget)`` is non-decreasing in rho).  A
    safeguarded false position (Illinois) on ``f(rho) = P(W + S > budget) - (1 - q)`` keeps the bracket
    ``[ok, bad]`` and returns its ok end, as bisection would, in a third of the evaluations."""
    c, b, w, m1, m2, m3, bw, mu, sig, lo, hi = args
    budget = np.asarray(budget, dtype=float)
    n = len(budget)
    out = np.full(n, float(cap))
    if n == 0:
        return out
    nodes = _nodes(budget, mu, sig, lo, hi)

    def f(r, sel):
        pw, th, k = _dedicated_law(r, *(v[sel] for v in (c, b, w, m1, m2, m3, bw, mu, sig, lo, hi)))
        return _exceed_at((nodes[0][sel], nodes[1][sel]), pw, th, k, bw[sel]) - (1.0 - q)

    allsel = np.arange(n)
    f_cap = f(np.full(n, float(cap)), allsel)
    f_0 = f(np.zeros(n), allsel)
    act = np.flatnonzero((f_cap > 0) & (f_0 <= 0))  # the root is inside (0, cap)
    a, fa = np.zeros(len(act)), f_0[act]  # ok end
    z, fz = np.full(len(act), float(cap)), f_cap[act]  # bad end
    side = np.zeros(len(act), dtype=np.int8)
    for _ in range(iters):
        open_ = z - a > tol
        if not open_.any():
            break
        i = np.flatnonzero(open_)
        width = z[i] - a[i]
        r = a[i] - fa[i] * width / (fz[i] - fa[i])
        r = np.clip(r, a[i] + 0.02 * width, z[i] - 0.02 * width)  # safeguard: always shrink the bracket
        fr = f(r, act[i])
        bad = fr > 0
        ok = ~bad
        # Illinois: halve the stale end's value when the same end moves twice
        stale_a = bad & (side[i] == 1)
        stale_z = ok & (side[i] == -1)
        fa[i[stale_a]] *= 0.5
        fz[i[stale_z]] *= 0.5
        z[i[bad]], fz[i[bad]] = r[bad], fr[bad]
        a[i[ok]], fa[i[ok]] = r[ok], fr[ok]
        side[i] = np.where(bad, 1, -1)
    out[act] = a
    return np.where(f_0 > 0, 0.0, out)


def max_utilisation(sm: ServiceModel, budget_s: float, *, cap: float = 0.9, q: float = 0.99) -> float:
    """Largest utilisation in [0, cap] of a dedicated server of ``sm`` whose q-quantile response fits
    ``budget_s`` (the deadline minus RTT); 0 when even an idle server misses it (bisection on rho)."""
    return float(_max_util(np.array([float(budget_s)]), cap, q, tuple(np.array([float(v)]) for v in _law_tuple(sm)))[0])


def _envelope_tail(d, pw, theta, b, bw):
    """``P(W > d)`` of the planner's envelope of the shared-server wait (elementwise over a node axis):
    batch 1 -- 0 w.p. ``1 - pw``, else Exp(mean theta); batching -- ``U(0, bw) + Exp(theta)`` (it dominates
    the mixture of the two whatever the probability of waiting)."""
    th = np.where(theta > 0, theta, 1e-300)[..., None]
    bws = np.asarray(bw, dtype=float)[..., None]
    e = np.exp(-np.minimum(d / th, 700.0))
    single = np.asarray(pw, dtype=float)[..., None] * e
    # P(U + E > d) = (theta (e^{-(d - min(d, bw))/theta} - e^{-d/theta}) + max(0, bw - d)) / bw
    bsafe = np.where(bws > 0, bws, 1.0)
    inner = np.exp(-np.minimum((d - np.minimum(d, bws)) / th, 700.0))
    summed = (th * (inner - e) + np.maximum(0.0, bws - d)) / bsafe
    return np.where((np.asarray(b, dtype=float) > 1)[..., None], summed, single)


def _shared_budget(budget, pw, q, b, bw, mu, sig, lo, hi, iters: int = 20):
    """Largest ``theta`` whose envelope (:func:`_envelope_tail`) meets ``P(W + S > budget) <= 1 - q``; 0 if
    none (bisection)."""
    budget = np.asarray(budget, dtype=float)
    n = len(budget)
    F, d = _nodes(budget, mu, sig, lo, hi)
    dd = np.maximum(-d, 0.0)

    def ok(th):
        tail = _envelope_tail(dd, pw, th, b, bw)
        return (1.0 - F) + np.einsum("...j,j->...", tail, _GL_W) * F <= 1.0 - q

    ok0 = ok(np.zeros(n))
    lo_, hi_ = np.zeros(n), np.maximum(budget, 1e-12)
    for _ in range(iters):
        mid = (lo_ + hi_) / 2
        good = ok(mid)
        lo_ = np.where(good, mid, lo_)
        hi_ = np.where(good, hi_, mid)
    return np.where(ok0, lo_, 0.0)


def shared_budget(sm: ServiceModel, budget_s: float, p_wait: float, q: float) -> float:
    """``B_k`` (s) of the linear shared-server condition ``G(rho_bar) sum_j a_j x_j <= B_k sum_j w_j x_j``
    for a request served by ``sm`` with ``budget_s`` = deadline - RTT (0: cannot be shared), with the
    probability of waiting bounded by ``p_wait`` (``rho_bar``, or 1 on a pool whose shared servers may
    load a batching configuration)."""
    f = lambda v: np.array([float(v)])  # noqa: E731
    return float(_shared_budget(f(budget_s), f(p_wait), q, f(sm.batch), f(sm.batch_wait), *_arr(sm))[0])


def shared_coefficients(models: Sequence[ServiceModel], budget_s: float, rho_bar: float, q: float) -> list[float]:
    """Coefficients ``G(rho_bar) a_j - B / cap_j`` of the linear shared-server deadline condition
    ``sum_j coef_j x_j <= 0`` for a hosted model with shared budget ``B`` (:func:`shared_budget`), s;
    ``a_j`` with the smallest slot count of ``models``."""
    g = g_factor(rho_bar, q)
    cm = min(sm.slots for sm in models)
    return [g * sm.shared_residual(cm) - budget_s * sm.work_per_request for sm in models]


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
