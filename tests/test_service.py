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


def test_exceed_deterministic_service_is_md1_exponential_tail():
    """S deterministic (sigma 0): P(W + s > t) = pi exp(-(t - s)/theta) for t > s, 1 below."""
    mu, sig, lo, hi = (np.array([math.log(0.01)]), np.array([0.0]), np.array([0.005]), np.array([0.03]))
    for t in (0.012, 0.02, 0.05):
        p = S._exceed(np.array([t]), np.array([0.6]), np.array([0.004]), mu, sig, lo, hi)[0]
        assert p == pytest.approx(0.6 * math.exp(-(t - 0.01) / 0.004), rel=1e-9)
    assert S._exceed(np.array([0.009]), np.array([0.6]), np.array([0.004]), mu, sig, lo, hi)[0] == 1.0


def test_sum_quantile_mm1_closed_form():
    """M/M/1 response is Exp(mu - lambda): a near-exponential service is not available in the clipped law, so
    check the convolution itself: W ~ (pi, theta), S nearly deterministic -> quantile = s + theta ln(pi/(1-q))."""
    s = 0.01
    mu, sig, lo, hi = (np.array([math.log(s)]), np.array([1e-9]), np.array([0.5 * s]), np.array([3 * s]))
    for pi, th in ((0.5, 0.003), (0.9, 0.02)):
        qv = S._sum_quantile(np.array([pi]), np.array([th]), mu, sig, lo, hi, 0.99)[0]
        assert qv == pytest.approx(s + th * math.log(pi / 0.01), rel=1e-6)


def test_dedicated_b1_is_pollaczek_khinchine_exponential():
    """Dedicated, batch 1, one slot: P(wait > 0) = rho and mean wait = P-K (lambda E[S^2] / (2 (1 - rho)))."""
    sm = ServiceModel.of(_rec(10, 13, 20))
    for rho in (0.3, 0.7):
        pi, th = S._wait_law(
            np.array([rho]), 0.0, np.array([1.0]), np.array([1.0]), sm.mean, sm.second_moment, 0.0, True
        )
        lam = rho / sm.mean
        assert pi[0] == pytest.approx(rho)
        assert pi[0] * th[0] == pytest.approx(lam * sm.second_moment / (2 * (1 - rho)), rel=1e-12)


def test_erlang_c_closed_forms():
    assert S._erlang_c(np.array([1.0]), np.array([0.4]))[0] == pytest.approx(0.4)
    # M/M/2: C = 2 rho^2 / (1 + rho)
    assert S._erlang_c(np.array([2.0]), np.array([0.5]))[0] == pytest.approx(2 * 0.25 / 1.5)


def test_sum_quantile_below_sum_of_quantiles_and_above_service():
    sm = ServiceModel.of(_rec(10, 14, 25))
    x = 0.6 * sm.capacity
    r = response_quantile([(sm, x)], sm, 0.99)
    assert sm.quantile(0.99) < r
    pi, th = 0.6, (x * sm.second_moment / 2 / (1 - 0.6)) / 0.6
    assert r < sm.quantile(0.99) + th * math.log(pi / 0.01)


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
    for i, r in enumerate(recs):
        sm = ServiceModel.of(r)
        assert rho[i] == max_utilisation(sm, budgets[i], cap=0.9, q=0.99)
        assert sb[i] == shared_budget(sm, budgets[i], 0.8, 0.99)
        assert sa.work[i] == sm.work_per_request and sa.residual[i] == sm.residual_per_request
        assert sa.quantile[i] == sm.quantile(0.99) and sa.batch_wait[i] == sm.batch_wait


def test_shared_linear_condition_is_sufficient():
    """If G * sum a_j x_j <= B_k * sum w_j x_j and rho <= rho_bar, every hosted model meets its budget."""
    rng = np.random.default_rng(7)
    q, rho_bar = 0.99, 0.8
    for trial in range(60):
        n = int(rng.integers(2, 4))
        sms = [
            ServiceModel.of(
                _rec(
                    p50 := float(rng.uniform(2, 30)),
                    p50 * 1.3,
                    p50 * float(rng.uniform(1.5, 3)),
                    b=int(rng.choice([1, 1, 4])),
                    slots=int(rng.choice([1, 2])),
                )
            )
            for _ in range(n)
        ]
        budgets = [float(rng.uniform(2, 8)) * sm.quantile(q) for sm in sms]
        B = [shared_budget(sm, d, rho_bar, q) for sm, d in zip(sms, budgets)]
        mix = rng.dirichlet(np.ones(n))
        rho = float(rng.uniform(0.05, rho_bar))
        x = rho * mix / sum(m * sm.work_per_request for m, sm in zip(mix, sms))
        loads = list(zip(sms, x))
        g = S.g_factor(rho_bar, q)
        for k, sm in enumerate(sms):
            if B[k] <= 0:
                continue
            if sum(c * xi for c, xi in zip(S.shared_coefficients(sms, B[k], rho_bar, q), x)) <= 0:
                assert response_quantile(loads, sm, q) <= budgets[k] * (1 + 1e-6), (trial, k)
        assert g == pytest.approx(1 / (1 - rho_bar))
