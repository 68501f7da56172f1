"""Exact hindsight optimum (OR-Tools CP-SAT): the schedule that minimises QoS violations, then total
lateness, knowing the whole trace and every drawn service time.

Model (integer microseconds), per deployment:
- an optional interval per (request i, server r hosting i's model): duration = the simulator's service time
  of i on r (the call of i's model's configuration there, same score ``z_i``), start >= arrival + RTT/2;
  exactly one present per request;
- the simulator's device model per server: a server has ``L = lcm(slots)`` units and a call of a
  configuration with ``c`` slots takes ``L / c`` of them for its duration (``planner.service`` slots), so a
  cumulative constraint of capacity L per server (L = 1: no overlap). This covers dedicated and *shared*
  servers (several models, one device) and multi-slot servers exactly, in any order (no FIFO constraint);
- batching servers (batch > 1) are NOT modelled: a deployment with one is skipped (``status = skipped``,
  named in the report), so the optimum bounds the batch-1 deployments compared only;
- ``v_i`` = 1 when i may miss its deadline: present(i, r) and not v_i => end + RTT/2 <= arrival + deadline;
  lateness ``L_i >= end + RTT/2 - (arrival + deadline)``;
- phase 1 minimises sum v_i; phase 2 fixes it and minimises sum L_i.
Rounding makes it a relaxation (durations and releases rounded down, due times up), so a *proven* phase-1
optimum is a lower bound on the violations of every policy that runs that deployment, in any order (no
FIFO constraint). ``solve_best`` takes the minimum over several deployments (those of the policies
compared), so it bounds every one of them; an unproven result is labelled and is not a bound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

from synergai.models import ProfileTable

from .sim import Arrivals, Deployment, service_params

US = 1_000_000


@dataclass
class OptimalResult:
    status: str  # optimal | feasible | skipped | infeasible
    violations: Optional[int]  # phase-1 objective (a lower bound when status == optimal)
    bound: Optional[float]  # CP-SAT's best bound on phase 1
    excess_ms_total: Optional[float]
    requests: int
    deployment: str
    seconds: float
    message: str = ""

    @property
    def proven(self) -> bool:
        return self.status == "optimal"


def solve_optimal(
    arrivals: Arrivals,
    deployment: Deployment,
    *,
    truth: Optional[ProfileTable] = None,
    time_limit: float = 20.0,
    workers: int = 2,
) -> OptimalResult:
    from ortools.sat.python import cp_model

    t0 = time.perf_counter()
    n = len(arrivals)
    if any(rec.batch_size > 1 for r in deployment.replicas for rec in r.records.values()):
        return OptimalResult(
            "skipped", None, None, None, n, deployment.name, 0.0, "deployment has batching servers (not modelled)"
        )
    sp = service_params(deployment, truth, trace_service=arrivals.log_mult is not None)
    units = [math.lcm(*(sp.models[k].slots for k in of.values())) for of in sp.of]
    score = arrivals.log_mult if arrivals.log_mult is not None else arrivals.z
    by_model = deployment.by_model()
    m = cp_model.CpModel()
    horizon = 0
    cand: list[list[tuple[int, int, int, int, int]]] = []  # per request: (server, release, duration, due, units)
    forced_late = 0
    for i in range(n):
        model = arrivals.models[arrivals.model[i]]
        a = float(arrivals.time_s[i])
        dl = float(arrivals.deadline_s[i])
        row = []
        for r in by_model.get(model, []):
            k = sp.of[r][model]
            rel = int(math.floor((a + sp.half[r]) * US))
            dur = int(math.floor(sp.models[k].draw(float(score[i])) * US))
            due = int(math.ceil((a + dl - sp.half[r]) * US))
            row.append((r, rel, dur, due, units[r] // sp.models[k].slots))
        if not row:
            forced_late += 1
        cand.append(row)
        horizon = max(horizon, max((c[1] for c in row), default=0)) + max((c[2] for c in row), default=0)
    horizon += 1
    per_rep: dict[int, list] = {}
    v = []
    late = []
    pres_of = []
    for i, row in enumerate(cand):
        if not row:
            pres_of.append([])
            continue
        vi = m.NewBoolVar(f"v{i}")
        li = m.NewIntVar(0, horizon, f"L{i}")
        pres = []
        for r, rel, dur, due, u in row:
            p = m.NewBoolVar(f"p{i}_{r}")
            s = m.NewIntVar(rel, horizon, f"s{i}_{r}")
            e = m.NewIntVar(rel + dur, horizon + dur, f"e{i}_{r}")
            iv = m.NewOptionalIntervalVar(s, dur, e, p, f"x{i}_{r}")
            per_rep.setdefault(r, []).append((iv, u))
            m.Add(e <= due).OnlyEnforceIf([p, vi.Not()])
            m.Add(li >= e - due).OnlyEnforceIf(p)
            pres.append(p)
        m.AddExactlyOne(pres)
        v.append(vi)
        late.append(li)
        pres_of.append(pres)
    for r, ivs in per_rep.items():
        if units[r] == 1:
            m.AddNoOverlap([iv for iv, _ in ivs])
        else:
            m.AddCumulative([iv for iv, _ in ivs], [u for _, u in ivs], units[r])

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = workers
    solver.parameters.max_time_in_seconds = time_limit / 2
    m.Minimize(sum(v))
    st = solver.Solve(m)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return OptimalResult(
            "infeasible" if st == cp_model.INFEASIBLE else "unknown",
            None,
            None,
            None,
            n,
            deployment.name,
            time.perf_counter() - t0,
            solver.StatusName(st),
        )
    vbest = int(round(solver.ObjectiveValue()))
    bound = float(solver.BestObjectiveBound())
    proven = st == cp_model.OPTIMAL
    m.Add(sum(v) <= vbest)
    # warm start phase 2 with the phase-1 solution
    for lst in pres_of:
        for p in lst:
            m.AddHint(p, solver.Value(p))
    m.Minimize(sum(late))
    solver.parameters.max_time_in_seconds = max(1.0, time_limit / 2)
    st2 = solver.Solve(m)
    excess = solver.ObjectiveValue() / 1e3 if st2 in (cp_model.OPTIMAL, cp_model.FEASIBLE) else None
    if excess is not None and forced_late:
        excess += 1e3 * sum(float(arrivals.deadline_s[i]) for i, row in enumerate(cand) if not row)
    return OptimalResult(
        "optimal" if proven else "feasible",
        vbest + forced_late,
        bound + forced_late,
        excess,
        n,
        deployment.name,
        time.perf_counter() - t0,
        "" if proven else "time limit: not proven, not a lower bound",
    )


def solve_best(arrivals: Arrivals, deployments: list[Deployment], **kw) -> tuple[OptimalResult, list[OptimalResult]]:
    """Solve each distinct deployment; the best proven (else best) result and all of them."""
    seen = set()
    results = []
    for d in deployments:
        sig = d.signature()
        if sig in seen or not len(d):
            continue
        seen.add(sig)
        results.append(solve_optimal(arrivals, d, **kw))
    solved = [r for r in results if r.violations is not None]
    if not solved:
        return (
            results[0]
            if results
            else OptimalResult("skipped", None, None, None, len(arrivals), "", 0.0, "no deployment")
        ), results
    best = min(solved, key=lambda r: (r.violations, r.excess_ms_total if r.excess_ms_total is not None else math.inf))
    if not all(r.proven for r in results):
        best = OptimalResult(
            "feasible" if len(solved) == len(results) else "partial",
            best.violations,
            best.bound,
            best.excess_ms_total,
            best.requests,
            best.deployment,
            sum(r.seconds for r in results),
            "some deployment not solved or not proven optimal: not a lower bound for all",
        )
    else:
        best = OptimalResult(
            best.status,
            best.violations,
            best.bound,
            best.excess_ms_total,
            best.requests,
            best.deployment,
            sum(r.seconds for r in results),
            best.message,
        )
    return best, results
