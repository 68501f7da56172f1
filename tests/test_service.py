"""Unit tests of the service model's formulas (planner/service.py) against closed forms, and the vectorised
ServiceArrays against the scalar ServiceModel functions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synergai.models import ProfileRecord
from synergai.planner import service as S
from synergai.planner.service import ServiceArrays, ServiceModel, max_utilisation, response_quantile, shared_budget


def _rec(p50, p90, p99, b=1, slots=1, model="m"):
    return ProfileRecord(
        model=model,
        engine="e",
        device="d",
        architecture="amd64",
        precision="fp32",
        batch_size=b,
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        latency_p99_ms=p99,
        throughput_rps=slots * b * 1000.0 / p50,
        cpu_cores=1,
        memory_request_mb=100,
    )


def _det(s):
    """A deterministic service of s seconds (sigma 0) as the law's arrays."""
    return (np.array([math.log(s)]), np.array([0.0]), np.array([0.5 * s]), np.array([3 * s]))


def _exceed(t, pw, th, k, bw, law):
    a = lambda v: np.array([float(v)])  # noqa: E731
    return S._exceed_at(S._nodes(a(t), *law), a(pw), a(th), a(k), a(bw))[0]


def test_exceed_deterministic_service_closed_forms():
    """S = s deterministic: P(W + s > t) = P(W > t - s) for t > s, 1 below; W = atom / uniform + Gamma."""
    law = _det(0.01)
    for t in (0.012, 0.02, 0.05):
        d = t - 0.01
        # exponential wait with an atom at 0
        assert _exceed(t, 0.6, 0.004, 1.0, 0.0, law) == pytest.approx(0.6 * math.exp(-d / 0.004), rel=1e-9)
        # Gamma(2) with mean 0.004: survival (1 + 2d/theta) e^{-2d/theta}
        g2 = (1 + 2 * d / 0.004) * math.exp(-2 * d / 0.004)
        assert _exceed(t, 0.6, 0.004, 2.0, 0.0, law) == pytest.approx(0.6 * g2, rel=1e-9)
        # batch formation: uniform on [0, bw] when the device is free
        u = max(0.0, 1 - d / 0.005)
        assert _exceed(t, 0.6, 0.004, 1.0, 0.005, law) == pytest.approx(0.6 * math.exp(-d / 0.004) + 0.4 * u, rel=1e-9)
    assert _exceed(0.009, 0.6, 0.004, 1.0, 0.0, law) == 1.0


def test_sum_quantile_exponential_closed_form():
    """W ~ (pi, Exp theta), S nearly deterministic -> quantile = s + theta ln(pi/(1-q))."""
    s = 0.01
    mu, sig, lo, hi = (np.array([math.log(s)]), np.array([1e-9]), np.array([0.5 * s]), np.array([3 * s]))
    a = lambda v: np.array([float(v)])  # noqa: E731
    for pi, th in ((0.5, 0.003), (0.9, 0.02)):
        qv = S._sum_quantile(a(pi), a(th), a(1.0), a(0.0), mu, sig, lo, hi, 0.99)[0]
        assert qv == pytest.approx(s + th * math.log(pi / 0.01), rel=1e-6)


def test_dedicated_b1_is_pollaczek_khinchine_and_takacs():
    """Dedicated, batch 1, one slot (M/G/1): P(wait > 0) = rho, E[W] = lambda E[S^2] / (2 (1 - rho)) (P-K) and
    E[W^2] = 2 E[W]^2 + lambda E[S^3] / (3 (1 - rho)) (Takacs) -- the Gamma fitted to the conditional wait
    has these two moments (its shape is clipped at 1: never heavier than the exponential)."""
    sm = ServiceModel.of(_rec(10, 13, 20))
    for rho in (0.3, 0.7):
        a = lambda v: np.array([float(v)])  # noqa: E731
        pw, th, k = S._dedicated_law(a(rho), *(a(v) for v in S._law_tuple(sm)))
        lam = rho / sm.mean
        ew = lam * sm.second_moment / (2 * (1 - rho))
        ew2 = 2 * ew**2 + lam * sm.third_moment / (3 * (1 - rho))
        assert pw[0] == pytest.approx(rho)
        assert pw[0] * th[0] == pytest.approx(ew, rel=1e-12)
        scv = (ew2 / pw[0]) / th[0] ** 2 - 1
        assert k[0] == pytest.approx(max(1.0, 1 / scv), rel=1e-9)


def test_third_moment_matches_numerical_integration():
    from scipy import integrate

    sm = ServiceModel.of(_rec(10, 14, 30))
    f = lambda z: sm.draw(z) ** 3 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    kinks = [(math.log(v) - sm.mu) / sm.sigma for v in (sm.lo, sm.hi)]  # where the clip starts
    val = sum(
        integrate.quad(f, a, b, limit=400, epsabs=0, epsrel=1e-12)[0] for a, b in zip([-12, *kinks], [*kinks, 12])
    )
    assert sm.third_moment == pytest.approx(val, rel=1e-6)


def test_poisson_min_and_mean_batch_against_direct_sums():
    """E[min(m, N)] by the gamma identity equals the direct sum; the mean batch by Gauss-Legendre equals an
    adaptive quadrature of its definition, ``E_A[1 + E min(b - 1, Poisson(x max(S - A, bw)))]`` with
    ``A ~ Exp(x)`` (a nearly deterministic service S, one slot)."""
    from scipy import integrate
    from scipy.stats import poisson

    for mu in (0.0, 0.3, 2.5, 11.0):
        for m in (1, 2, 3, 7):
            direct = sum(min(m, j) * poisson.pmf(j, mu) for j in range(200))
            assert S._poisson_min(np.array([mu]), np.array([float(m)]))[0] == pytest.approx(direct, abs=1e-12)
    b = 4
    sm = ServiceModel.of(_rec(20, 20.000001, 20.000002, b=b))
    s, bw = sm.mean, sm.batch_wait
    assert bw == pytest.approx(0.01)  # half a median call

    def integrand(a, x):
        w = max(s - a, bw)
        return x * math.exp(-x * a) * (1 + sum(min(b - 1, j) * poisson.pmf(j, x * w) for j in range(80)))

    for x in (20.0, 80.0, 300.0):
        exact, _ = integrate.quad(integrand, 0, 60 / x, args=(x,), points=[s - bw], limit=200)
        est = S.mean_batch(sm, x)
        assert 1.0 <= est <= b
        assert est == pytest.approx(exact, rel=0.02), (x, est, exact)


def test_erlang_c_closed_forms():
    assert S._erlang_c(np.array([1.0]), np.array([0.4]))[0] == pytest.approx(0.4)
    # M/M/2: C = 2 rho^2 / (1 + rho)
    assert S._erlang_c(np.array([2.0]), np.array([0.5]))[0] == pytest.approx(2 * 0.25 / 1.5)


def test_sum_quantile_below_sum_of_quantiles_and_above_service():
    sm = ServiceModel.of(_rec(10, 14, 25))
    x = 0.6 * sm.capacity
    r = response_quantile([(sm, x)], sm, 0.99)
    assert sm.quantile(0.99) < r
    pi, th = 0.6, (x * sm.second_moment / 2 / (1 - 0.6)) / 0.6  # M/G/1: P-K mean of the conditional wait
    assert r < sm.quantile(0.99) + th * math.log(pi / 0.01)  # below the sum of the two quantiles


def test_max_utilisation_inverts_response_quantile():
    for rec in (_rec(10, 13, 20), _rec(8, 12, 30, b=4, slots=2), _rec(5, 6, 9, slots=3)):
        sm = ServiceModel.of(rec)
        budget = 2.5 * sm.quantile(0.99)
        rho = max_utilisation(sm, budget, cap=0.95, q=0.99)
        assert 0 < rho < 0.95
        assert response_quantile([(sm, rho * sm.capacity)], sm, 0.99) <= budget * (1 + 1e-6)
        assert response_quantile([(sm, (rho + 1e-3) * sm.capacity)], sm, 0.99) > budget


def test_service_arrays_equal_service_model():
    rng = np.random.default_rng(3)
    recs = []
    for i in range(40):
        p50 = float(rng.uniform(2, 40))
        p90 = p50 * float(rng.uniform(1.05, 1.6))
        recs.append(
            _rec(
                p50,
                p90,
                p90 * float(rng.uniform(1.05, 1.8)),
                b=int(rng.choice([1, 2, 4, 8])),
                slots=int(rng.integers(1, 5)),
            )
        )
    sa = ServiceArrays.of(recs, 0.99)
    budgets = np.array([3 * r.latency_p99_ms / 1e3 for r in recs])
    rho = sa.max_utilisation(budgets, 0.9, 0.99)
    sb = sa.shared_budget(budgets, 0.8, 0.99)
    res = sa.shared_residual(np.ones(len(recs)))
    for i, r in enumerate(recs):
        sm = ServiceModel.of(r)
        assert rho[i] == max_utilisation(sm, budgets[i], cap=0.9, q=0.99)
        assert sb[i] == shared_budget(sm, budgets[i], 0.8, 0.99)
        assert sa.work[i] == sm.work_per_request and res[i] == sm.shared_residual(1)
        assert sa.quantile[i] == sm.quantile(0.99) and sa.batch_wait[i] == sm.batch_wait


def test_shared_linear_condition_is_sufficient():
    """The planner's shared-server rows imply the law: configurations of one slot count per server (C6b), the
    probability of waiting bounded by rho_bar (1 if a batching configuration may be loaded),
    ``sum_j w_j x_j <= rho_bar`` and ``G sum_j a_j x_j <= B_k sum_j w_j x_j`` -> every hosted model meets its
    budget; batching included, and a server left with one configuration (the dedicated law)."""
    rng = np.random.default_rng(7)
    q, rho_bar = 0.99, 0.8
    g = S.g_factor(rho_bar, q)
    checked = 0
    for trial in range(200):
        n = int(rng.integers(1, 4))
        slots = int(rng.choice([1, 2, 3]))
        sms = [
            ServiceModel.of(
                _rec(
                    p50 := float(rng.uniform(2, 30)),
                    p50 * 1.3,
                    p50 * float(rng.uniform(1.5, 3)),
                    b=int(rng.choice([1, 1, 4])),
                    slots=slots,
                )
            )
            for _ in range(n)
        ]
        pw = 1.0 if any(sm.batch > 1 for sm in sms) else rho_bar
        budgets = [float(rng.uniform(2, 8)) * sm.quantile(q) for sm in sms]
        B = [shared_budget(sm, d, pw, q) for sm, d in zip(sms, budgets)]
        mix = rng.dirichlet(np.ones(n))
        rho = rho_bar * float(rng.choice([1.0, rng.uniform(0.05, 1.0)]))  # often at the cap: the hardest case
        x = rho * mix / sum(m * sm.work_per_request for m, sm in zip(mix, sms))
        loads = list(zip(sms, x))
        for k, sm in enumerate(sms):
            if B[k] <= 0:
                continue
            if sum(c * xi for c, xi in zip(S.shared_coefficients(sms, B[k], rho_bar, q), x)) <= 0:
                checked += 1
                assert response_quantile(loads, sm, q) <= budgets[k] * (1 + 1e-6), (trial, k)
    assert checked > 50
    assert g == pytest.approx(1 / (1 - rho_bar))
