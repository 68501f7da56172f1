"""The planner's speed devices keep their claims: the one-solve shortcut (``optimistic``) reaches the phases'
optima, and a plan accepted within the gap of the LP relaxation bound really is within that gap."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from synergai.planner import PlanOptions, plan_offline
from synergai.planner.milp import MilpArrays
from synergai.planner.offline import build_model
from synergai.planner.solvers import _solve_highs, solve_highs
from synergai.planner.synthetic import random_instance

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _objectives(plan):
    return {p["phase"]: p["objective"] for p in plan.solver.phases}


@SETTINGS
@given(seed=st.integers(0, 10_000), load=st.sampled_from([0.5, 1.5, 4.0]), fill=st.booleans())
def test_one_solve_matches_the_phases(seed, load, fill):
    """With ``optimistic`` the lexicographic optima are those of the phase-by-phase solve (gap 0)."""
    t, c, w = random_instance(seed, n_pools=3, n_models=3, n_configs=3, load=load)
    a = plan_offline(t, c, w, gap=0, options=PlanOptions(optimistic=True, headroom_fill=fill))
    b = plan_offline(t, c, w, gap=0, options=PlanOptions(optimistic=False, headroom_fill=fill))
    if b.solver.status == "trivial":  # no deadline-feasible candidate at all: nothing to solve either way
        assert a.solver.status == "trivial" and a.unserved_rate() == pytest.approx(b.unserved_rate())
        return
    assert a.solver.status == b.solver.status == "optimal"
    oa, ob = _objectives(a), _objectives(b)
    for ph in ("unserved", "headroom-min", "headroom-sum"):
        assert (ph in oa) == (ph in ob), (oa, ob)
        if ph in oa:
            assert oa[ph] == pytest.approx(ob[ph], rel=1e-6, abs=1e-5), (ph, oa, ob)
    # the phases hold their optima with a relative slack of ~1e-6; the one solve holds them exactly
    assert oa["energy"] >= ob["energy"] - 1e-4 * max(1.0, abs(ob["energy"]))
    assert oa["energy"] <= ob["energy"] * (1 + 1e-4) + 1e-4


@SETTINGS
@given(seed=st.integers(0, 10_000), gap=st.sampled_from([0.01, 0.05]))
def test_lp_guided_bound_and_gap_are_honest(seed, gap):
    """Whatever path HiGHS takes (LP bound + restricted MIP, or the whole MIP), the returned bound is below the
    true optimum and the plan is within the reported gap of it."""
    t, c, w = random_instance(seed, n_pools=4, n_models=3, n_configs=4, load=1.0)
    m, lay, _ = build_model(t, c, w, PlanOptions(objective="weighted"))
    fast = solve_highs(m, 60, gap)
    exact = _solve_highs(m, 60, 0.0, None)
    assert exact.status == "optimal"
    assert fast.status == "optimal"
    assert fast.best_bound <= exact.objective + 1e-6 * max(1.0, abs(exact.objective))
    assert fast.objective >= exact.objective - 1e-6 * max(1.0, abs(exact.objective))
    assert fast.objective - exact.objective <= gap * abs(fast.objective) + 1e-6
    assert fast.gap is not None and fast.gap <= gap + 1e-9


def test_lp_guided_infeasible_lp_is_infeasible():
    """An infeasible LP relaxation proves the MIP infeasible."""
    import scipy.sparse as sp

    m = MilpArrays(
        c=np.array([1.0, 1.0]),
        A=sp.csr_matrix(np.array([[1.0, 1.0]])),
        row_lo=np.array([3.0]),
        row_hi=np.array([np.inf]),
        lb=np.zeros(2),
        ub=np.ones(2),
        integer=np.array([True, True]),
        col_names=["a", "b"],
        row_names=["r"],
    )
    assert solve_highs(m, 10, 0.01).status == "infeasible"


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(
        st.tuples(
            st.sampled_from([0.5, 1.0, 2.0, 3.0]), st.sampled_from([512.0, 1024.0, 3000.0]), st.sampled_from([0.0, 1.0])
        ),
        max_size=9,
    ),
    nodes=st.integers(1, 4),
)
def test_pack_exact_agrees_with_the_oracle(items, nodes):
    """The exact second opinion after FFD: packs exactly when the oracle's exhaustive search does."""
    from synergai.planner.packing import pack_exact
    from tests.bruteforce_oracle import packs

    cap = (4.0, 4096.0, 2.0)
    got = pack_exact(items, cap, nodes, budget=10**7)
    assert (got is not None) == (packs(list(items), cap, nodes) is not None)
    if got is not None:
        assert sorted(i for node in got for i in node) == list(range(len(items)))
        for node in got:
            for r in range(3):
                assert sum(items[i][r] for i in node) <= cap[r] + 1e-9
