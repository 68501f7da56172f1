"""Calibration: the planner's predicted p99 response (``planner.service.response_quantile``) against what the
discrete-event simulator measures, on random small servers (issue 9, section 2).

Each case is one server -- dedicated (one configuration) or shared (several models, one queue, one device) --
with random profiled latencies (p50 < p90 < p99), batch sizes and execution slots, fed Poisson arrivals at
routed rates whose utilisation ``rho = sum_j x_j / cap_j`` is drawn in a band where the queueing term matters
(0.3-0.5 "low", 0.6-0.8 "high"). Seeds are fixed; every case has >= 12,000 requests per model after warm-up,
so its measured p99 is stable to a few per cent.

Checks
- the simulator itself against exact queueing theory (Pollaczek-Khinchine mean wait of M/G/1, with the
  moments of the durations it drew), so the comparisons below test the formula, not a broken simulator;
- prediction within 20% of the measured p99 response, per model, in every regime (``|pred/meas - 1| <= 0.2``);
- never optimistic by more than 20% in any regime, the marked ones included (``pred/meas - 1 >= -0.2``): an
  optimistic prediction lets the planner load a server past its deadline;
- deadlines set from the model (deadline = predicted p99 response at the planned rates) are met at 0.8 of the
  planned rates: "no violations" means a violation rate of at most 1% per model -- the p99's own tail,
  which a quantile-based deadline allows by definition.

Regimes where the prediction does NOT hold are marked ``xfail(strict=True)`` with the errors measured when
the mark was set, so a model fix shows up as an XPASS (and the mark must go).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from synergai.experiments.sim import Arrivals, Deployment, Replica, simulate
from synergai.models import NodePool, ProfileRecord
from synergai.planner.service import ServiceModel, response_quantile

Q = 0.99
RTT_MS = 4.0
TOL = 0.20
WARM = 0.05  # fraction of each run discarded as warm-up (the server starts empty)
POOL = NodePool(name="p", device="d", architecture="amd64", tier="edge", nodes=1, cpu=8, memory_mb=8192, rtt_ms=RTT_MS)
BANDS = {"low": (0.3, 0.5), "high": (0.6, 0.8)}


class _Only:
    """Sends every request to server 0."""

    needs_feedback = False
    window = 1
    name = "only"

    def choose(self, req, state):
        return 0


def _record(rng, model: str, batch: int, slots: int) -> ProfileRecord:
    p50 = float(rng.uniform(2.0, 40.0))
    p90 = p50 * float(rng.uniform(1.1, 1.6))
    p99 = p90 * float(rng.uniform(1.1, 1.8))
    # throughput that makes the service model give this many slots: round(thr * p50 / b) = slots
    return ProfileRecord(
        model=model,
        engine="e",
        device="d",
        architecture="amd64",
        precision="fp32",
        batch_size=batch,
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        latency_p99_ms=p99,
        throughput_rps=slots * batch * 1000.0 / p50,
        cpu_cores=1,
        memory_request_mb=100,
    )


def _server(seed: int, batches, slots):
    rng = np.random.default_rng([seed, len(batches), *batches, *slots])
    models = [f"m{i}" for i in range(len(batches))]
    recs = {m: _record(rng, m, b, c) for m, b, c in zip(models, batches, slots)}
    # arrival mix: every model gets >= 20% of the requests (enough samples for its own p99)
    f = np.maximum(rng.dirichlet(np.full(len(models), 4.0)), 0.2)
    return rng, models, recs, f / f.sum()


def _rates(recs, models, mix, rho: float) -> dict[str, float]:
    """Routed rates (req/s) in proportions ``mix`` with utilisation sum_j x_j / cap_j = rho."""
    per = sum(w / ServiceModel.of(recs[m]).capacity for m, w in zip(models, mix))
    return {m: rho * w / per for m, w in zip(models, mix)}


def _run(rng, models, recs, rates, n: int, deadline: dict[str, float] | None = None):
    lam = sum(rates.values())
    t = np.cumsum(rng.exponential(1.0 / lam, n))
    mi = rng.choice(len(models), n, p=np.array([rates[m] for m in models]) / lam)
    dl = np.array([(deadline or {}).get(m, 1e9) for m in models])[mi]
    arr = Arrivals(t, mi, models, dl, rng.standard_normal(n))
    res = simulate(arr, Deployment([Replica(POOL, recs)]), _Only())
    keep = np.arange(n) >= int(WARM * n)
    return mi, keep, res


def _predicted(recs, rates, model) -> float:
    loads = [(ServiceModel.of(recs[m]), x) for m, x in rates.items()]
    return response_quantile(loads, ServiceModel.of(recs[model]), Q, RTT_MS / 1e3)


# regime -> (batches, slots) per hosted model
REGIMES = {
    "dedicated-b1-c1": ([1], [1]),
    "dedicated-b1-c3": ([1], [3]),
    "dedicated-b4-c1": ([4], [1]),
    "dedicated-b8-c2": ([8], [2]),
    "shared-b1-c1": ([1, 1], [1, 1]),
    "shared-b1-mixed-slots": ([1, 1], [1, 2]),
    "shared-batching": ([1, 4], [1, 1]),
    "shared-3-models": ([1, 2, 4], [1, 1, 1]),
}
SEEDS = (
    101,
    102,
    103,
    104,
)  # not looked at while the model was built (it was fitted to nothing; seeds 11-14 were used to compare variants)
N_PER_MODEL = 15000


@functools.cache
def _errors(regime: str, band: str) -> list[tuple[str, float, float, float]]:
    """[(case, rho, predicted s, measured s)] per seed and model."""
    batches, slots = REGIMES[regime]
    out = []
    for seed in SEEDS:
        rng, models, recs, mix = _server(seed, batches, slots)
        rho = float(rng.uniform(*BANDS[band]))
        rates = _rates(recs, models, mix, rho)
        n = int(N_PER_MODEL / min(mix))
        mi, keep, res = _run(rng, models, recs, rates, n)
        for k, m in enumerate(models):
            meas = float(np.quantile(res.response[keep & (mi == k)], Q))
            out.append((f"seed {seed} {m}", rho, _predicted(recs, rates, m), meas))
    return out


def _fmt(errs) -> str:
    return "; ".join(
        f"{c} rho {rho:.2f}: pred {p * 1e3:.1f} ms / meas {m * 1e3:.1f} ms = {p / m - 1:+.0%}" for c, rho, p, m in errs
    )


# Measured when the marks were set, with the model of planner/service.py (Gamma fitted to the conditional
# wait's first two moments; dedicated batching servers: mean batch size from the formation rule, a request
# finds the device busy w.p. ErlangC at call-level utilisation, then waits the slot residual plus the
# full-batch queue; shared servers: residual at call level, queue growth at full-batch utilisation, head-of-
# line drain for mixed slot counts).  Before it (exponential wait, no mean batch size, no drain) 9 of 16
# regimes passed, two of the misses under-predicting.  Still off, all but one case OVER-predicting:
# - shared, mixed slot counts: the drain term is crude (seed 102: +20..+47%; seed 104 high: -19%, inside);
#   plans never co-load mixed slot counts on a shared server (milp.py C6b);
# - shared with a batching model at high load: the batching model's batches grow with the queue, so the
#   wait is more regular than the M/G/1 shape (measured SCV ~0.4 vs ~0.9 assumed): conservative.
XFAIL = {  # (regime, band) -> worst per-seed relative errors pred/meas - 1 (per model) when measured
    ("shared-b1-mixed-slots", "low"): "+20%/+30% (seed 102), others -9..+5%",
    ("shared-b1-mixed-slots", "high"): "+42%/+47% (seed 102), -19%/-19% (seed 104)",
    ("shared-3-models", "high"): "+22%/+27%/+42% (seed 104), others -10..+11%",
}


def _cases():
    for regime in REGIMES:
        for band in BANDS:
            reason = XFAIL.get((regime, band))
            marks = (
                [pytest.mark.xfail(strict=True, reason=f"prediction off by more than 20%, measured {reason}")]
                if reason is not None
                else []
            )
            yield pytest.param(regime, band, marks=marks, id=f"{regime}-{band}")


def test_simulator_matches_pollaczek_khinchine():
    """M/G/1 (dedicated, batch 1, one slot): mean wait = lambda E[S^2] / (2 (1 - rho)) with the moments of the
    drawn durations -- exact queueing theory, independent of the planner's formula."""
    rng, models, recs, mix = _server(5, [1], [1])
    lam = 0.6 / ServiceModel.of(recs["m0"]).mean
    mi, keep, res = _run(rng, models, recs, {"m0": lam}, 80000)
    s = (res.finish - res.start)[keep]
    wait = (res.start - res.dispatch)[keep]
    rho = lam * s.mean()
    assert 0.55 < rho < 0.65
    pk = lam * float(np.mean(s**2)) / (2 * (1 - rho))
    assert wait.mean() == pytest.approx(pk, rel=0.1)


@pytest.mark.parametrize("regime,band", list(_cases()))
def test_predicted_p99_within_20_percent(regime, band):
    errs = _errors(regime, band)
    worst = max(abs(p / m - 1) for _, _, p, m in errs)
    assert worst <= TOL, _fmt(errs)


@pytest.mark.parametrize("regime,band", [(r, b) for r in REGIMES for b in BANDS])
def test_prediction_never_optimistic_beyond_20_percent(regime, band):
    errs = _errors(regime, band)
    worst = min(p / m - 1 for _, _, p, m in errs)
    assert worst >= -TOL, _fmt(errs)


def test_no_violations_below_0_8_of_planned_rates():
    """Per regime: plan a server at a high utilisation, set each model's deadline to the predicted p99 response
    there, send Poisson arrivals at 0.8 of the planned rates: each model's violation rate is at most 1%."""
    bad = []
    for regime, (batches, slots) in REGIMES.items():
        rng, models, recs, mix = _server(21, batches, slots)
        planned = _rates(recs, models, mix, float(rng.uniform(0.7, 0.85)))
        deadline = {m: _predicted(recs, planned, m) for m in models}
        run = {m: 0.8 * x for m, x in planned.items()}
        mi, keep, res = _run(rng, models, recs, run, int(N_PER_MODEL / min(mix)), deadline)
        for k, m in enumerate(models):
            sel = keep & (mi == k)
            rate = float(res.violated[sel].mean())
            if rate > 1 - Q:
                bad.append(f"{regime} {m}: {rate:.2%} late (deadline {deadline[m] * 1e3:.1f} ms)")
    assert not bad, "; ".join(bad)
