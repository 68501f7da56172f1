"""Solve step: MILP back-ends by name (a small registry, like PuLP's ``getSolver``).

Every back-end takes the same ``MilpArrays`` and returns a ``SolveResult``; statuses are
normalised and never taken on a wrapper's word alone (a time-limited CBC run reports
"Optimal" through ``LpStatus``; we read PuLP's ``sol_status`` instead).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .milp import MilpArrays


@dataclass
class SolveResult:
    status: str  # optimal | time_limit | gap_limit | infeasible | error
    x: Optional[np.ndarray]  # column values, None when no incumbent
    objective: Optional[float]
    best_bound: Optional[float]
    gap: Optional[float]
    seconds: float
    message: str = ""
    alpha: Optional[dict] = None  # headroom factors per model (phase H only)


SolverFn = Callable[..., SolveResult]
"""``fn(milp, time_limit_s, rel_gap, x0=None, guide=None)``: ``x0`` an optional feasible start (a MIP start where
supported), ``guide`` an optional objective vector that may steer heuristics (HiGHS: see ``_lp_guided``)."""
_REGISTRY: dict[str, tuple[SolverFn, Callable[[], bool], str]] = {}


def register(name: str, available: Callable[[], bool], doc: str):
    def deco(fn: SolverFn) -> SolverFn:
        _REGISTRY[name] = (fn, available, doc)
        return fn

    return deco


def solver_names() -> list[str]:
    return list(_REGISTRY)


def available_solvers() -> list[str]:
    return [n for n, (_, ok, _) in _REGISTRY.items() if ok()]


def get_solver(name: str) -> SolverFn:
    if name not in _REGISTRY:
        raise KeyError(f"unknown solver {name!r}; choose one of {', '.join(_REGISTRY)}")
    fn, ok, _ = _REGISTRY[name]
    if not ok():
        raise RuntimeError(f"solver {name!r} is not installed here ({_REGISTRY[name][2]})")
    return fn


def _gap(obj: Optional[float], bound: Optional[float]) -> Optional[float]:
    if obj is None or bound is None or not np.isfinite(bound):
        return None
    return abs(obj - bound) / max(1e-9, abs(obj)) if abs(obj) > 1e-9 else abs(obj - bound)


# --- HiGHS (in process, default) -------------------------------------------------------------


def _has(mod: str) -> Callable[[], bool]:
    def ok() -> bool:
        try:
            __import__(mod)
            return True
        except Exception:
            return False

    return ok


_BANNER_DONE = False


def _new_highs():
    """A silent Highs instance; the licence banner printed by the first construction goes to /dev/null."""
    import os
    import sys

    import highspy

    global _BANNER_DONE
    if _BANNER_DONE:
        h = highspy.Highs()
    else:
        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        _BANNER_DONE = True
    h.silent()
    return h


def check_solution(m: MilpArrays, x: np.ndarray, objective: Optional[float], tol: float = 1e-6) -> str:
    """Why ``x`` is not a solution of ``m`` with that objective ('' when it is): bounds, rows, integrality and
    the objective value are re-checked, so a back-end's word is never taken alone."""
    if x is None or len(x) != m.n_cols or not np.isfinite(x).all():
        return "no finite solution vector"
    scale = 1.0 + np.abs(x)
    if (x < m.lb - tol * scale).any() or (x > m.ub + tol * scale).any():
        return "a column violates its bounds"
    if m.integer.any() and (np.abs(x[m.integer] - np.rint(x[m.integer])) > 1e-5).any():
        return "an integer column is fractional"
    act = m.A @ x
    rs = 1.0 + abs(m.A) @ np.abs(x)
    if (act < m.row_lo - tol * rs).any() or (act > m.row_hi + tol * rs).any():
        bad = int(np.argmax(np.maximum(m.row_lo - act, act - m.row_hi) / rs))
        return f"row {m.row_names[bad]} is violated"
    if objective is not None:
        val = float(m.c @ x + m.offset)
        if abs(val - objective) > 1e-6 * max(1.0, abs(objective)) + 1e-7:
            return f"the returned vector's objective {val:.9g} differs from the reported {objective:.9g}"
    return ""


@register("highs", _has("highspy"), "pip install highspy")
def solve_highs(
    m: MilpArrays, time_limit: float, gap: float, x0: Optional[np.ndarray] = None, guide: Optional[np.ndarray] = None
) -> SolveResult:
    """HiGHS in process, LP-guided first (see :func:`_lp_guided`), then on the whole model.  With a MIP start
    ``x0``, the returned vector is checked against the model and the reported objective (HiGHS 1.16 can hand
    back the start instead of its incumbent); on a mismatch the model is solved again without the start."""
    t0 = time.perf_counter()
    if m.integer.any():
        g = _lp_guided(m, time_limit, gap, x0, guide)
        if isinstance(g, SolveResult):
            return g
        if g is not None:
            x0 = g
    spent = time.perf_counter() - t0
    r = _solve_mip_checked(m, max(0.5, time_limit - spent), gap, x0)
    r.seconds += spent
    return r


LP_GUIDED_LP_SHARE = 0.4
"""Share of the time limit the LP relaxation of :func:`_lp_guided` may take."""


def _lp_guided(
    m: MilpArrays, time_limit: float, gap: float, x0: Optional[np.ndarray], guide: Optional[np.ndarray] = None
):
    """Bound from the LP relaxation, plan from a restricted MIP: often within the gap long before a full solve.

    1. Solve the LP relaxation (HiGHS presolve off: on these models it costs more than it saves); its value
       ``L`` is a lower bound of the MIP.  An infeasible LP proves the MIP infeasible.
    2. Solve the MIP with every binary column the LP leaves at 0 fixed at 0 (the configurations, shared
       loads and power modes the LP does not use; binaries set in ``x0`` stay free so the start still fits).
    3. If that plan's objective ``U`` is within the gap of ``L`` (``(U - L) / |U| <= gap``, HiGHS's own
       definition), it is returned as ``optimal`` with best bound ``L``: proven within the gap for the whole
       model, since ``L`` bounds every plan of it.

    ``guide``: another objective whose LP optimum also marks binaries to keep free (the unserved phase's LP
    is degenerate at 0 and uses almost none; the weighted unserved + energy LP points at a plan).

    Returns that result, or a start vector for the whole-model solve (the restricted plan, else ``x0``),
    or None."""
    t0 = time.perf_counter()
    relaxed = MilpArrays(**{**m.__dict__, "integer": np.zeros(m.n_cols, bool)})
    lp = _solve_highs(relaxed, time_limit * LP_GUIDED_LP_SHARE, 0.0, None, {"presolve": "off"})
    if lp.status == "infeasible":
        return SolveResult(
            "infeasible", None, None, None, None, time.perf_counter() - t0, "the LP relaxation is infeasible"
        )
    if lp.status != "optimal" or lp.x is None or lp.objective is None:
        return None
    L = float(lp.objective)
    binary = m.integer & (m.lb == 0) & (m.ub == 1)
    unused = binary & (lp.x <= 1e-6)
    if guide is not None and len(guide) == m.n_cols:
        lg = _solve_highs(
            relaxed.with_objective(guide), time_limit * LP_GUIDED_LP_SHARE / 2, 0.0, None, {"presolve": "off"}
        )
        if lg.x is not None:
            unused &= lg.x <= 1e-6
    if x0 is not None and len(x0) == m.n_cols:
        unused &= x0 <= 0.5
    ub = np.where(unused, 0.0, m.ub)
    restricted = MilpArrays(**{**m.__dict__, "ub": ub})
    left = time_limit - (time.perf_counter() - t0)
    if left <= 0.5:
        return x0
    start = x0 if x0 is not None and len(x0) == m.n_cols else None
    r = _solve_highs(restricted, left * 0.5, gap / 4, start)
    if start is not None and r.x is not None and check_solution(m, r.x, r.objective):
        # HiGHS 1.16 can hand back the start instead of its incumbent: solve the small model again without it
        r = _solve_highs(restricted, max(0.5, left * 0.5 - r.seconds), gap / 4, None)
    if r.x is None or r.objective is None or check_solution(m, r.x, r.objective):
        return x0
    U = float(r.objective)
    g = (U - L) / max(abs(U), 1e-9) if abs(U) > 1e-9 else max(0.0, U - L)
    if g <= gap:
        return SolveResult(
            "optimal",
            r.x,
            U,
            L,
            max(0.0, g),
            time.perf_counter() - t0,
            f"within the gap of the LP relaxation bound {L:.9g} (plan from the MIP restricted to the "
            f"{int((binary & ~unused).sum())} of {int(binary.sum())} binaries the LP, its guide LP or the start use)",
        )
    return r.x


def _solve_mip_checked(m: MilpArrays, time_limit: float, gap: float, x0: Optional[np.ndarray]) -> SolveResult:
    r = _solve_highs(m, time_limit, gap, x0)
    if r.x is not None:
        why = check_solution(m, r.x, r.objective)
        if why and x0 is not None:
            r2 = _solve_highs(m, time_limit, gap, None)
            r2.seconds += r.seconds
            why2 = check_solution(m, r2.x, r2.objective) if r2.x is not None else ""
            if not why2:
                r2.message = (r2.message + f" (re-solved without the MIP start: {why})").strip()
                return r2
            why = why2
        if why:
            return SolveResult("error", None, None, None, None, r.seconds, f"HiGHS returned an invalid solution: {why}")
    return r


def _solve_highs(
    m: MilpArrays, time_limit: float, gap: float, x0: Optional[np.ndarray], options: Optional[dict] = None
) -> SolveResult:
    import highspy

    h = _new_highs()
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", float(gap))
    h.setOptionValue("threads", 1)
    for k, v in (options or {}).items():
        h.setOptionValue(k, v)
    lp = highspy.HighsLp()
    inf = highspy.kHighsInf
    lp.num_col_ = m.n_cols
    lp.num_row_ = m.n_rows
    lp.col_cost_ = m.c.astype(float)
    lp.col_lower_ = m.lb.astype(float)
    lp.col_upper_ = np.where(np.isfinite(m.ub), m.ub, inf).astype(float)
    lp.row_lower_ = np.where(np.isfinite(m.row_lo), m.row_lo, -inf).astype(float)
    lp.row_upper_ = np.where(np.isfinite(m.row_hi), m.row_hi, inf).astype(float)
    lp.offset_ = float(m.offset)
    A = m.A.tocsc()
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data.astype(float)
    lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in m.integer]
    t0 = time.perf_counter()
    h.passModel(lp)
    if x0 is not None and len(x0) == m.n_cols:
        sol = highspy.HighsSolution()
        sol.col_value = [float(v) for v in x0]
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    secs = time.perf_counter() - t0
    ms = h.getModelStatus()
    info = h.getInfo()
    has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
    x = np.array(h.getSolution().col_value) if has_sol else None
    obj = info.objective_function_value if has_sol else None
    bound = info.mip_dual_bound if m.integer.any() else obj
    g = info.mip_gap if (m.integer.any() and has_sol) else 0.0
    if ms == highspy.HighsModelStatus.kOptimal:
        status = "optimal"
    elif ms == highspy.HighsModelStatus.kInfeasible:
        status = "infeasible"
    elif ms in (
        highspy.HighsModelStatus.kTimeLimit,
        highspy.HighsModelStatus.kIterationLimit,
        highspy.HighsModelStatus.kSolutionLimit,
        highspy.HighsModelStatus.kInterrupt,
    ):
        status = "time_limit"
    else:
        status = "error"
    if g is not None and not np.isfinite(g):
        g = None
    msg = "" if status == "optimal" else f"HiGHS: {h.modelStatusToString(ms)}"
    if status == "time_limit" and not has_sol:
        msg += " (no feasible solution found in time)"
    return SolveResult(status, x, obj, bound if bound is not None and np.isfinite(bound) else None, g, secs, msg)


# --- CBC through PuLP (optional) ----------------------------------------------------------------


def _cbc_command(time_limit: float, gap: float):
    """A CBC on PATH (PuLP 4 / `pulp[cbc]`) first; PuLP 3's bundled binary otherwise; None if neither."""
    import warnings

    import pulp

    kw = dict(msg=False, timeLimit=max(1, int(np.ceil(time_limit))), gapRel=gap)
    if shutil.which("cbc"):
        return pulp.COIN_CMD(path=shutil.which("cbc"), **kw)
    bundled = getattr(pulp, "PULP_CBC_CMD", None)
    if bundled is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            cmd = bundled(**kw)
        if cmd.available():
            return cmd
    return None


def _cbc_available() -> bool:
    try:
        return _cbc_command(1, 0) is not None
    except Exception:
        return False


@register("cbc", _cbc_available, "pip install 'pulp[cbc]' or put a cbc binary on PATH")
def solve_cbc(m: MilpArrays, time_limit: float, gap: float, x0: Optional[np.ndarray] = None, guide=None) -> SolveResult:
    import pulp

    prob = pulp.LpProblem("synergai", pulp.LpMinimize)
    vs = []
    add = getattr(prob, "add_variable", None)  # PuLP >= 3.3; plain LpVariable before
    for j, name in enumerate(m.col_names):
        ub = float(m.ub[j]) if np.isfinite(m.ub[j]) else None
        cat = pulp.LpInteger if m.integer[j] else pulp.LpContinuous
        vs.append(
            add(f"c{j}", float(m.lb[j]), ub, cat=cat)
            if add
            else pulp.LpVariable(f"c{j}", lowBound=float(m.lb[j]), upBound=ub, cat=cat)
        )
    prob += pulp.lpSum(float(v) * vs[j] for j, v in enumerate(m.c) if v != 0) + m.offset
    A = m.A.tocsr()
    for i in range(m.n_rows):
        s, e = A.indptr[i], A.indptr[i + 1]
        expr = pulp.lpSum(float(v) * vs[j] for j, v in zip(A.indices[s:e], A.data[s:e]))
        lo, hi = m.row_lo[i], m.row_hi[i]
        if lo == hi:
            prob += expr == float(hi), f"r{i}"
        else:
            if np.isfinite(hi):
                prob += expr <= float(hi), f"r{i}"
            if np.isfinite(lo):
                prob += expr >= float(lo), f"r{i}_lo"
    cmd = _cbc_command(time_limit, gap)
    t0 = time.perf_counter()
    prob.solve(cmd)
    secs = time.perf_counter() - t0
    sol = prob.sol_status
    if sol == pulp.LpSolutionOptimal:
        status = "optimal"
    elif sol == pulp.LpSolutionIntegerFeasible:
        status = "time_limit"
    elif sol == pulp.LpSolutionInfeasible:
        status = "infeasible"
    else:
        status = "error"
    if status in ("optimal", "time_limit"):
        x = np.array([v.varValue or 0.0 for v in vs])
        obj = float(m.c @ x + m.offset)
    else:
        x, obj = None, None
    # PuLP exposes neither CBC's bound nor its gap: "optimal" means proven within gapRel, gap unknown
    return SolveResult(
        status,
        x,
        obj,
        None,
        None if status != "optimal" or gap > 0 else 0.0,
        secs,
        f"CBC: LpStatus={pulp.LpStatus[prob.status]}, sol_status={sol}"
        + (f" (stops within relative gap {gap:g}; its gap is not reported)" if status == "optimal" and gap > 0 else ""),
    )


# --- OR-Tools (SCIP and CP-SAT through the linear solver wrapper) -------------------------------


def _ortools(backend: str, m: MilpArrays, time_limit: float, gap: float) -> SolveResult:
    from ortools.linear_solver import pywraplp

    s = pywraplp.Solver.CreateSolver(backend)
    if s is None:
        return SolveResult("error", None, None, None, None, 0.0, f"OR-Tools has no {backend} here")
    inf = s.infinity()
    vs = [
        (s.IntVar if m.integer[j] else s.NumVar)(
            float(m.lb[j]), float(m.ub[j]) if np.isfinite(m.ub[j]) else inf, m.col_names[j]
        )
        for j in range(m.n_cols)
    ]
    A = m.A.tocsr()
    for i in range(m.n_rows):
        lo = float(m.row_lo[i]) if np.isfinite(m.row_lo[i]) else -inf
        hi = float(m.row_hi[i]) if np.isfinite(m.row_hi[i]) else inf
        ct = s.Constraint(lo, hi, m.row_names[i])
        for j, v in zip(A.indices[A.indptr[i] : A.indptr[i + 1]], A.data[A.indptr[i] : A.indptr[i + 1]]):
            ct.SetCoefficient(vs[j], float(v))
    obj = s.Objective()
    for j, v in enumerate(m.c):
        if v != 0:
            obj.SetCoefficient(vs[j], float(v))
    obj.SetOffset(float(m.offset))
    obj.SetMinimization()
    s.SetTimeLimit(int(time_limit * 1000))
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(pywraplp.MPSolverParameters.RELATIVE_MIP_GAP, float(gap))
    if backend == "CP-SAT":
        s.SetSolverSpecificParametersAsString("num_workers: 2")
    t0 = time.perf_counter()
    rc = s.Solve(params)
    secs = time.perf_counter() - t0
    if rc in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        x = np.array([v.solution_value() for v in vs])
        o = float(m.c @ x + m.offset)
        try:
            bound = obj.BestBound()
        except Exception:
            bound = None
        status = "optimal" if rc == pywraplp.Solver.OPTIMAL else "time_limit"
        if not m.integer.any():
            bound = o
        return SolveResult(status, x, o, bound, _gap(o, bound), secs, f"OR-Tools {backend}")
    if rc == pywraplp.Solver.INFEASIBLE:
        return SolveResult("infeasible", None, None, None, None, secs, f"OR-Tools {backend}: infeasible")
    return SolveResult("error", None, None, None, None, secs, f"OR-Tools {backend}: result code {rc}")


def _ortools_has(backend: str) -> Callable[[], bool]:
    def ok() -> bool:
        try:
            from ortools.linear_solver import pywraplp

            return pywraplp.Solver.CreateSolver(backend) is not None
        except Exception:
            return False

    return ok


@register("cpsat", _ortools_has("CP-SAT"), "pip install ortools")
def solve_cpsat(
    m: MilpArrays, time_limit: float, gap: float, x0: Optional[np.ndarray] = None, guide=None
) -> SolveResult:
    """CP-SAT is integer-only: continuous columns are scaled by 1000 and made integer (resolution 1e-3)."""
    S = 1000.0
    cont = ~m.integer
    scale = np.where(cont, S, 1.0)
    A = m.A.tocsc() @ __import__("scipy.sparse", fromlist=["diags"]).diags(1.0 / scale)
    ms = MilpArrays(
        **{
            **m.__dict__,
            "c": m.c / scale,
            "A": A.tocsr(),
            "lb": np.ceil(m.lb * scale - 1e-9),
            "ub": np.where(np.isfinite(m.ub), np.floor(m.ub * scale + 1e-9), m.ub),
            "integer": np.ones_like(m.integer),
            # equalities over scaled columns get a +-1/S band so the integer grid can meet them
            "row_lo": np.where(m.row_lo == m.row_hi, m.row_lo - 1.0 / S, m.row_lo),
            "row_hi": np.where(m.row_lo == m.row_hi, m.row_hi + 1.0 / S, m.row_hi),
        }
    )
    r = _ortools("CP-SAT", ms, time_limit, gap)
    if r.x is not None:
        r.x = r.x / scale
    return r


@register("scip", _ortools_has("SCIP"), "pip install ortools (bundles SCIP)")
def solve_scip(
    m: MilpArrays, time_limit: float, gap: float, x0: Optional[np.ndarray] = None, guide=None
) -> SolveResult:
    return _ortools("SCIP", m, time_limit, gap)
