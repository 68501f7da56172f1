"""Offline stage: data -> model -> solve (phases) -> decode, returning a ``Plan``.

This module only orchestrates: candidates come from ``candidates.py``, the MILP from ``milp.py``,
packing checks from ``packing.py``, the plan document from ``decode.py``.  A plan whose servers do
not pack onto nodes is never repaired after the solve: the offending pools are modelled node by
node and every phase is solved again, so the reported status is the status of the model whose
solution is returned.

Speed: lexicographic plans first try one solve (``PlanOptions.optimistic``): the energy model with the
earlier phases held at their trivial bounds (every model with a candidate fully served, every headroom
factor at its maximum); a plan of it proves both bounds optimal, so the phases are skipped.  Each HiGHS solve
is LP-guided (``solvers._lp_guided``): the LP relaxation's value bounds the phase, a MIP restricted to the
binaries the LP uses gives the plan, and the pair is accepted only within the requested gap.
"""

from __future__ import annotations

import copy
import inspect
import time

import numpy as np

from synergai.models import ClusterSpec, ProfileTable, WorkloadSpec
from synergai.models.plan import Plan, SolverReport

from .candidates import Candidates, PlanOptions, build_candidates, check_inputs
from .decode import decode
from .milp import Builder, Layout, add_headroom_block, build_milp, fill_aggregates
from .packing import unpackable_pools
from .solvers import SolveResult, get_solver

__all__ = ["plan_offline"]

LEX_EPS = 1e-7
"""Relative slack when holding an earlier phase's optimum."""
OPTIMISTIC_PROBE = 0.3
"""Share of the one-solve attempt's time within which it must find a plan (else the phases run)."""


def plan_offline(
    profiles: ProfileTable,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    *,
    solver: str = "highs",
    time_limit: float = 30.0,
    gap: float = 1e-4,
    options: PlanOptions | None = None,
    cluster_file: str | None = None,
    workload_file: str | None = None,
) -> Plan:
    """Choose server groups (dedicated or shared), configurations, replicas and routing per pool.

    Raises ``InputError`` for inconsistent inputs; unserveable demand is reported in the plan.
    """
    opts = options or PlanOptions()
    skipped = check_inputs(profiles, cluster, workload, cluster_file, workload_file, opts.skip_unprofiled)
    cands = build_candidates(profiles, cluster, workload, opts, skip_pools=tuple(skipped))
    demands = [(d.rate_rps, d.priority) for d in workload.models]
    pools = list(cluster.pools)
    fn = get_solver(solver)
    t_start = time.perf_counter()
    notes: list[str] = [f"pool {p}: no profile for its device; left unused (--skip-unprofiled)" for p in skipped]
    node_level: tuple[int, ...] = ()
    start = None
    while True:
        remaining = max(0.5, time_limit - (time.perf_counter() - t_start))
        b, lay = build_milp(cands, demands, pools, opts, node_level=node_level)

        def check(x, lay=lay, node_level=node_level):
            return [p for p in unpackable_pools(cands, *_integers(x, lay), pools) if p not in node_level]

        res, phases, arrays = _solve_phases(fn, b, lay, cands, opts, remaining, gap, check, start, solver != "cpsat")
        if res.x is None:
            break
        n, sigma = _integers(res.x, lay)
        bad = [p for p in unpackable_pools(cands, n, sigma, pools) if p not in node_level]
        if not bad:
            break
        notes.append(
            "pools " + ", ".join(pools[p].name for p in bad) + ": the per-pool solution did not pack onto "
            "nodes (first-fit decreasing, then a budgeted exact search); re-solved with these pools modelled node by node"
        )
        node_level = tuple(sorted(set(node_level) | set(bad)))
        start = _without_pools(res.x, lay, cands, bad, np.array([d[0] for d in demands], dtype=float))
    secs = time.perf_counter() - t_start
    status = "trivial" if len(cands) == 0 else res.status
    report = SolverReport(
        backend=solver,
        status=status,
        objective=res.objective,
        best_bound=res.best_bound,
        gap=res.gap,
        seconds=round(secs, 4),
        phases=phases,
        variables=arrays.n_cols,
        constraints=arrays.n_rows,
        message=res.message,
    )
    if res.status == "time_limit":
        report.message = (
            f"time limit {time_limit:g} s reached: returning the best plan found "
            f"(gap {res.gap if res.gap is not None else 'unknown'}). " + res.message
        ).strip()
    plan = decode(cands, lay, res.x, cluster, workload, opts, report)
    plan.notes.extend(notes)
    for new, old in profiles.replaced:
        plan.notes.append(
            f"profile {new.model}/{new.device}/{new.config_id}: newer measurement ({new.source}) replaced {old.source}"
        )
    plan.plan_id = plan.compute_id()
    return plan


def build_model(
    profiles: ProfileTable, cluster: ClusterSpec, workload: WorkloadSpec, options: PlanOptions | None = None
):
    """The phase-1 model as arrays (for ``--dump-lp`` and tests): (arrays, layout, candidates)."""
    opts = options or PlanOptions()
    skipped = check_inputs(profiles, cluster, workload, skip_unprofiled=opts.skip_unprofiled)
    cands = build_candidates(profiles, cluster, workload, opts, skip_pools=tuple(skipped))
    b, lay = build_milp(cands, [(d.rate_rps, d.priority) for d in workload.models], list(cluster.pools), opts)
    c = lay.u_cost if opts.objective == "lexicographic" else opts.unserved_weight * lay.u_cost + lay.energy_cost
    return b.arrays(c), lay, cands


def _without_pools(x: np.ndarray, lay: Layout, cands: Candidates, pools: list[int], lam: np.ndarray) -> np.ndarray:
    """A feasible phase-1 start for the re-solve: the previous plan with nothing deployed on ``pools``
    (their load becomes unserved).  Main columns keep their indices across re-solves (node-level columns
    are appended after them), so the previous vector up to the first headroom/node-level column carries over."""
    aggs = [a for _, iw, ia in lay.iagg for a in (iw, ia)]
    n_main = 1 + max(
        int(a.max()) for a in [lay.iy, lay.in_, lay.iv, lay.isig, lay.io, *lay.ix, *lay.ixs, *lay.iu, *aggs] if len(a)
    )
    x = np.array(x[:n_main], dtype=float)
    on = np.isin(np.asarray(cands.ded.p, dtype=np.int64), pools) if lay.K else np.zeros(0, bool)
    son = np.isin(np.asarray(cands.sh.p, dtype=np.int64), pools) if lay.J else np.zeros(0, bool)
    x[lay.iy[on]] = 0
    x[lay.in_[on]] = 0
    x[lay.iv[son]] = 0
    for p in pools:
        for col in (lay.isig[p], lay.io[p]):
            if col >= 0:
                x[col] = 0
    mk = np.asarray(cands.ded.m, dtype=np.int64)
    mj = np.asarray(cands.sh.m, dtype=np.int64)
    for si, (f, _) in enumerate(lay.scen):
        x[lay.ix[si][on]] = 0
        x[lay.ixs[si][son]] = 0
        routed = np.bincount(mk, weights=x[lay.ix[si]], minlength=lay.M) + np.bincount(
            mj, weights=x[lay.ixs[si]], minlength=lay.M
        )
        x[lay.iu[si]] = np.clip(f * lam - routed, 0.0, f * lam)
        if lay.iagg:
            fill_aggregates(x, cands, lay.ixs[si], lay.iagg[si])
    return x


def _integers(x: np.ndarray, lay: Layout) -> tuple[np.ndarray, dict[int, int]]:
    n = np.rint(x[lay.in_]).astype(int) if lay.K else np.zeros(0, int)
    sigma = {p: int(round(x[c])) for p, c in enumerate(lay.isig) if c >= 0}
    return n, sigma


def _pad(c: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([c, np.zeros(n - len(c))]) if len(c) < n else c


def _phase(name: str, r: SolveResult, extra: dict | None = None) -> dict:
    d = {
        "phase": name,
        "status": r.status,
        "objective": r.objective,
        "best_bound": r.best_bound,
        "gap": r.gap,
        "seconds": round(r.seconds, 4),
    }
    if r.message:
        d["message"] = r.message
    if extra:
        d.update(extra)
    return d


def _worst(results: list[SolveResult]) -> str:
    order = {"optimal": 0, "gap_limit": 1, "time_limit": 2, "infeasible": 3, "error": 4}
    return max((r.status for r in results), key=lambda s: order.get(s, 4))


def _solve_phases(
    fn,
    b: Builder,
    lay: Layout,
    cands: Candidates,
    opts: PlanOptions,
    time_limit: float,
    gap: float,
    check=None,
    start: np.ndarray | None = None,
    compact: bool = True,
):
    """Run the objective phases; returns (result holding the final x, phase reports, final arrays).

    ``check(x)`` lists pools whose servers do not pack; the phases stop early (returning that x) as
    soon as one does, since the caller will re-solve with those pools modelled node by node."""
    t0 = time.perf_counter()

    def left(share: float) -> float:
        return max(0.5, (time_limit - (time.perf_counter() - t0)) * share)

    if b.ncol == 0 or (lay.K == 0 and lay.J == 0):
        arrays = b.arrays()
        x = np.zeros(b.ncol)
        for si, (f, _) in enumerate(lay.scen):
            x[lay.iu[si]] = arrays.ub[lay.iu[si]]
        obj = float(lay.u_cost @ x) if len(lay.u_cost) else 0.0
        return SolveResult("optimal", x, obj, obj, 0.0, 0.0), [], arrays
    if opts.objective != "lexicographic":
        arrays = b.arrays(opts.unserved_weight * lay.u_cost + lay.energy_cost)
        r = fn(arrays, time_limit, gap)
        return r, [_phase("weighted", r)], arrays

    if opts.optimistic:
        got = _optimistic(fn, copy.deepcopy(b), lay, cands, opts, left(0.75), gap, compact)
        if got is not None:
            return got

    # 1: expected weighted unserved rate
    a1 = b.arrays(lay.u_cost)
    if start is None:  # deploy nothing, serve nothing: always feasible
        start = np.zeros(a1.n_cols)
        for si in range(len(lay.scen)):
            start[lay.iu[si]] = a1.ub[lay.iu[si]]
    guide = opts.unserved_weight * lay.u_cost + lay.energy_cost  # the unserved LP alone is degenerate at 0
    kw = {"guide": _pad(guide, a1.n_cols)} if "guide" in inspect.signature(fn).parameters else {}
    r1 = fn(a1, left(0.4), gap, x0=_pad(start, a1.n_cols), **kw)
    phases = [_phase("unserved", r1)]
    if r1.x is None or (check is not None and check(r1.x)):
        return r1, phases, a1
    done = [r1]
    z1 = float(lay.u_cost @ r1.x)
    nz = np.flatnonzero(lay.u_cost)
    row = b.rows(["lex"], -np.inf, z1 * (1 + LEX_EPS) + LEX_EPS)
    b.add(np.full(len(nz), row), nz, lay.u_cost[nz])
    best = r1

    # H: headroom (max-min; optionally then the sum), holding phase 1, for the models phase 1 fully serves
    alpha_cols: dict = {}
    if opts.headroom > 1.0:
        served = np.zeros(lay.M)
        np.add.at(served, np.asarray(cands.ded.m, dtype=np.int64), r1.x[lay.ix[lay.nominal]])
        np.add.at(served, np.asarray(cands.sh.m, dtype=np.int64), r1.x[lay.ixs[lay.nominal]])
        served[served < 1e-6] = 0.0
        # a model phase 1 cannot fully serve has no room to grow (phase 1 would have used it): leave it out
        short = r1.x[lay.iu[lay.nominal]] > 1e-6 * np.maximum(1.0, a1.ub[lay.iu[lay.nominal]])
        served[short] = 0.0
        if served.any():
            ia, it, ixsh, agg = add_headroom_block(b, lay, cands, served, opts.headroom, compact)
            alpha_cols = ia
            ah = b.arrays()
            c = np.zeros(ah.n_cols)
            c[it] = -1.0
            # start: phase 1's plan, the headroom block routing the nominal rates (every alpha = 1)
            x0 = _pad(r1.x, ah.n_cols)
            ons = served[np.asarray(cands.sh.m, dtype=np.int64)] > 0 if lay.J else np.zeros(0, bool)
            x0[ixsh] = np.where(ons, r1.x[lay.ixs[lay.nominal]], 0.0)
            fill_aggregates(x0, cands, ixsh, agg)
            x0[list(ia.values())] = 1.0
            x0[it] = 1.0
            rh1 = fn(ah.with_objective(c), left(0.25), gap, x0=x0)
            if rh1.x is not None:
                t_star = float(rh1.x[it])
                alpha = {cands.models[m]: round(float(rh1.x[col]), 6) for m, col in ia.items()}
                phases.append(_phase("headroom-min", rh1, {"t": round(t_star, 6), "alpha": alpha}))
                done.append(rh1)
                best = rh1
                _set_lb(b, it, max(1.0, t_star * (1 - 1e-6)))  # hold the max-min level (every alpha_m >= t*)
                if opts.headroom_fill:
                    ah.lb[it] = max(1.0, t_star * (1 - 1e-6))
                    c2 = np.zeros(ah.n_cols)
                    c2[list(ia.values())] = -1.0
                    rh2 = fn(ah.with_objective(c2), left(0.35), gap, x0=rh1.x)
                    done.append(rh2)
                    if rh2.x is not None:
                        alpha = {cands.models[m]: round(float(rh2.x[col]), 6) for m, col in ia.items()}
                        for m, col in ia.items():
                            _set_lb(b, col, max(1.0, float(rh2.x[col]) * (1 - 1e-4)))
                        best = rh2
                    phases.append(_phase("headroom-sum", rh2, {"alpha": alpha}))
            else:
                phases.append(_phase("headroom-min", rh1))
                done.append(rh1)

    # 2: energy (serving + idle nodes) and resources
    a2 = b.arrays(_pad(lay.energy_cost, b.ncol))
    r2 = fn(a2, left(1.0), gap, x0=_pad(best.x, a2.n_cols))
    phases.append(_phase("energy", r2))
    done.append(r2)
    if r2.x is not None and alpha_cols and not opts.headroom_fill:
        # the max-min solve's other factors are one optimum among many and the energy phase holds only t*: report
        # the factors of the returned plan (its headroom block's alphas, each >= t*)
        for ph in phases:
            if ph["phase"] == "headroom-min" and "alpha" in ph:
                ph["alpha"] = {cands.models[m]: round(float(r2.x[col]), 6) for m, col in alpha_cols.items()}
    if r2.x is None:
        x = _pad(best.x, a2.n_cols)
        return (
            SolveResult(
                r2.status,
                x,
                best.objective,
                best.best_bound,
                best.gap,
                sum(r.seconds for r in done),
                f"energy phase: {r2.status} ({r2.message}); returning the previous phase's plan",
            ),
            phases,
            a2,
        )
    status = _worst(done)
    msg = "; ".join(f"{p['phase']}: {p['status']}" for p in phases if p["status"] != "optimal")
    return SolveResult(status, r2.x, r2.objective, r2.best_bound, r2.gap, sum(r.seconds for r in done), msg), phases, a2


def _optimistic(
    fn, b: Builder, lay: Layout, cands: Candidates, opts: PlanOptions, time_limit: float, gap: float, compact: bool
):
    """One solve instead of the lexicographic sequence when the earlier phases' optima are their trivial bounds.

    Phase 1's optimum is at least the demand of the models without any candidate (nobody can serve them),
    and the headroom max-min is at most ``headroom``.  The energy model with every other model fully served
    in every scenario and every served model's factor at ``headroom`` is solved directly: a feasible plan of
    it attains both bounds, so it proves both earlier optima, and its energy optimum is the lexicographic
    one (the phases would hold exactly these levels, up to their slack).  Returns None when that model has no
    feasible plan within ``OPTIMISTIC_PROBE`` of ``time_limit`` (the caller then runs the phases); a plan found
    by then is improved from itself for the rest of ``time_limit``."""
    has = np.zeros(lay.M, bool)
    has[np.asarray(cands.ded.m, dtype=np.int64)] = True
    has[np.asarray(cands.sh.m, dtype=np.int64)] = True
    lam = np.array([b.ub_of(int(lay.iu[lay.nominal][m])) for m in range(lay.M)])  # u's bound is f * lam, f = 1
    for si in range(len(lay.scen)):
        for m in np.flatnonzero(has):
            _set_bound(b.ub, int(lay.iu[si][m]), 0.0)
    served = np.where(has, lam, 0.0)
    served[served < 1e-6] = 0.0
    ia: dict = {}
    if opts.headroom > 1.0 and served.any():
        ia, it, _, _ = add_headroom_block(b, lay, cands, served, opts.headroom, compact)
        for col in [*ia.values(), it]:
            _set_lb(b, col, opts.headroom)
    a = b.arrays(_pad(lay.energy_cost, b.ncol))
    # a first slice of the time: no plan by then (e.g. an LP-feasible but integer-infeasible model when the
    # cluster is overloaded) leaves the rest to the phases; a plan continues from itself with the rest
    t0 = time.perf_counter()
    r = fn(a, time_limit * OPTIMISTIC_PROBE, gap)
    if r.x is None:
        return None
    rest = time_limit - (time.perf_counter() - t0)
    if r.status == "time_limit" and rest > 1.0:
        r2 = fn(a, rest, gap, x0=r.x)
        if r2.x is not None and r2.objective is not None and r.objective is not None and r2.objective <= r.objective:
            bound = max(x for x in (r.best_bound, r2.best_bound, -np.inf) if x is not None)
            r2.best_bound = bound if np.isfinite(bound) else None
            if r2.best_bound is not None and r2.status != "optimal":
                r2.gap = (r2.objective - r2.best_bound) / max(1e-9, abs(r2.objective))
            r2.seconds += r.seconds
            r = r2
    z1 = float(lay.u_cost @ r.x[: len(lay.u_cost)])
    why = "its lower bound (only models without candidates unserved), met by the energy phase's plan"
    phases: list[dict] = [
        {
            "phase": "unserved",
            "status": "optimal",
            "objective": z1,
            "best_bound": z1,
            "gap": 0.0,
            "seconds": 0.0,
            "message": f"optimum = {why}",
        }
    ]
    if ia:
        alpha = {cands.models[m]: round(float(r.x[col]), 6) for m, col in ia.items()}
        hw = "the upper bound `headroom`, met by the energy phase's plan"
        for name in ("headroom-min", "headroom-sum") if opts.headroom_fill else ("headroom-min",):
            ph: dict[str, object] = {
                "phase": name,
                "status": "optimal",
                "gap": 0.0,
                "seconds": 0.0,
                "message": f"optimum = {hw}",
            }
            if name == "headroom-min":
                ph.update(objective=-opts.headroom, best_bound=-opts.headroom, t=round(opts.headroom, 6))
            else:
                tot = opts.headroom * len(ia)
                ph.update(objective=-tot, best_bound=-tot)
            ph["alpha"] = alpha
            phases.append(ph)
    note = "one solve: the earlier phases' optima are their bounds"
    phases.append(_phase("energy", r, {"message": f"{note}; {r.message}" if r.message else note}))
    msg = "" if r.status == "optimal" else f"energy: {r.status}"
    return SolveResult(r.status, r.x, r.objective, r.best_bound, r.gap, r.seconds, msg), phases, a


def _set_bound(blocks: list, col: int, value: float) -> None:
    start = 0
    for blk in blocks:
        if col < start + len(blk):
            blk[col - start] = value
            return
        start += len(blk)


def _set_lb(b: Builder, col: int, value: float) -> None:
    """Raise one column's lower bound inside the builder's blocks."""
    start = 0
    for blk in b.lb:
        if col < start + len(blk):
            blk[col - start] = value
            return
        start += len(blk)
