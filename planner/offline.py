"""Offline stage: data -> model -> solve -> decode, returning a ``Plan``."""
from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np

from synergai.models import ClusterSpec, ProfileTable, WorkloadSpec
from synergai.models.plan import Assignment, ConfigChoice, Plan, SolverReport, Unserved

from .candidates import Candidates, PlanOptions, build_candidates, check_inputs
from .milp import MilpArrays, build_milp
from .queueing import LatencyDist, response_quantile
from .solvers import SolveResult, get_solver

EPS = 1e-6


def pack_ffd(items: list[tuple[float, float, float]], node_cap: tuple[float, float, float], nodes: int) -> list[list[int]] | None:
    """First-fit decreasing of replica footprints onto identical nodes; None when they do not fit."""
    def size(i):
        r = [a / b if b > 0 else (0.0 if a == 0 else math.inf) for a, b in zip(items[i], node_cap)]
        return (-max(r), -sum(r), tuple(-a for a in items[i]))
    order = sorted(range(len(items)), key=size)  # a total order: the result depends only on the multiset
    free = [list(node_cap) for _ in range(nodes)]
    placed: list[list[int]] = [[] for _ in range(nodes)]
    for i in order:
        need = items[i]
        for n in range(nodes):
            if all(need[r] <= free[n][r] + 1e-9 for r in range(3)):
                for r in range(3):
                    free[n][r] -= need[r]
                placed[n].append(i)
                break
        else:
            return None
    return placed


def plan_offline(profiles: ProfileTable, cluster: ClusterSpec, workload: WorkloadSpec, *, solver: str = "highs",
                 time_limit: float = 30.0, gap: float = 1e-4, options: PlanOptions | None = None,
                 cluster_file: str | None = None, workload_file: str | None = None) -> Plan:
    """Choose configurations, replicas and routing for every (model, pool).

    Raises ``InputError`` for inconsistent inputs; unserveable demand is reported in the plan.
    """
    opts = options or PlanOptions()
    check_inputs(profiles, cluster, workload, cluster_file, workload_file)
    cands = build_candidates(profiles, cluster, workload, opts)
    demands = [(d.rate_rps, d.priority) for d in workload.models]
    pool_caps = [(p.cpu, p.memory_mb, float(p.accelerators), p.nodes) for p in cluster.pools]
    fn = get_solver(solver)

    scale = np.ones((len(cluster.pools), 3))
    phases: list[dict] = []
    t_start = time.perf_counter()
    notes: list[str] = []
    for attempt in range(4):
        milp = build_milp(cands, demands, pool_caps, opts, cap_scale=scale)
        remaining = max(0.5, time_limit - (time.perf_counter() - t_start))
        res, phases_run = _solve_phases(fn, milp, opts, remaining, gap)
        phases = phases_run  # the final attempt's phases; earlier attempts are in the notes
        if res.x is None:
            break
        n = np.rint(res.x[milp.in_]).astype(int)
        bad = _unpackable_pools(cands, n, cluster)
        if not bad:
            break
        # first drop headroom replicas (beyond what the routed rate needs) on the offending pools;
        # the spare-capacity step later adds back whatever packs
        cap_k = np.asarray(cands.cap_rps, dtype=float)
        routed = np.max([res.x[milp.ix]] + [res.x[ixs] for ixs in milp.ix_scen], axis=0)  # every load scenario
        n_min = np.ceil(routed / np.maximum(cap_k, 1e-12) - 1e-6).clip(0).astype(int)
        trial = n.copy()
        on_bad = np.isin(np.asarray(cands.p), bad)
        trial[on_bad] = np.minimum(n[on_bad], n_min[on_bad])
        if not _unpackable_pools(cands, trial, cluster):
            res.x[milp.in_] = trial
            notes.append("headroom replicas trimmed on " + ", ".join(cluster.pools[p].name for p in bad)
                         + " so the plan packs onto nodes")
            break
        for p in bad:
            scale[p] *= 0.9
            notes.append(f"pool {cluster.pools[p].name}: aggregate solution did not pack onto nodes; "
                         f"re-solved with capacity x{scale[p][0]:.2f}")
    secs = time.perf_counter() - t_start

    report = SolverReport(backend=solver, status="trivial" if len(cands) == 0 else res.status,
                          objective=res.objective, best_bound=res.best_bound, gap=res.gap, seconds=round(secs, 4),
                          phases=phases, variables=milp.n_cols, constraints=milp.n_rows, message=res.message)
    if res.status == "time_limit":
        report.message = (f"time limit {time_limit:g} s reached: returning the best plan found "
                          f"(gap {res.gap if res.gap is not None else 'unknown'}). " + res.message).strip()
    plan = decode(cands, milp, res, cluster, workload, opts, report)
    plan.notes.extend(notes)
    for new, old in profiles.replaced:
        plan.notes.append(f"profile {new.model}/{new.device}/{new.config_id}: newer measurement "
                          f"({new.source}) replaced {old.source}")
    plan.plan_id = plan.compute_id()
    return plan


def _solve_phases(fn, milp: MilpArrays, opts: PlanOptions, time_limit: float, gap: float) -> tuple[SolveResult, list[dict]]:
    if milp.n_cols == 0 or len(milp.ix) == 0:
        x = np.zeros(milp.n_cols)
        x[milp.iu] = milp.ub[milp.iu]
        obj = float(milp.c @ x)
        return SolveResult("optimal", x, obj, obj, 0.0, 0.0), []
    if opts.objective != "lexicographic":
        r = fn(milp, time_limit, gap)
        return r, [_phase("weighted", r)]
    t0 = time.perf_counter()
    r1 = fn(milp, time_limit * 0.5, gap)
    phases = [_phase("unserved", r1)]
    if r1.x is None:
        return r1, phases
    z1 = float(milp.u_cost_all @ r1.x[milp.iu_all])
    coefs = np.zeros(milp.n_cols)
    coefs[milp.iu_all] = milp.u_cost_all
    base = milp.with_row(coefs, -np.inf, z1 * (1 + 1e-7) + 1e-7, "lex")
    rH = None
    if opts.headroom > 1.0:
        base, rH = _headroom_phase(fn, base, milp, r1.x, opts, max(0.5, (time_limit - (time.perf_counter() - t0)) * 0.5), gap)
        phases.append(_phase("headroom", rH))
    m2 = base.with_objective(np.append(milp.phase2_cost, np.zeros(base.n_cols - milp.n_cols)))
    r2 = fn(m2, max(0.5, time_limit - (time.perf_counter() - t0)), gap)
    phases.append(_phase("energy", r2))
    if r2.x is None:  # keep the best earlier incumbent rather than nothing
        prev = rH if rH is not None and rH.x is not None else r1
        return SolveResult(prev.status if prev.status != "optimal" else r2.status, prev.x[:milp.n_cols],
                           prev.objective, prev.best_bound, prev.gap, prev.seconds,
                           f"energy phase failed ({r2.message}); returning the {'headroom' if prev is rH else 'unserved'}-phase plan"), phases
    if rH is not None and rH.x is None:
        rH.message = f"headroom phase skipped: {rH.status} ({rH.message})"
        rH.status = "optimal"
    worst = [r.status for r in (r1, rH, r2) if r is not None and r.status != "optimal"]
    status = worst[0] if worst else "optimal"
    secs = sum(r.seconds for r in (r1, rH, r2) if r is not None)
    return SolveResult(status, r2.x[:milp.n_cols], r2.objective, r2.best_bound, r2.gap, secs,
                       "; ".join(r.message for r in (r1, rH, r2) if r is not None and r.message)), phases


def _headroom_phase(fn, base: MilpArrays, milp: MilpArrays, x1: np.ndarray, opts: PlanOptions, time_limit: float,
                    gap: float):
    """Phase H: per served model m, a growth factor alpha_m in [1, alpha_max] of its served load that
    deadline-feasible capacity could absorb (C8); maximise the smallest first, then the sum
    (``max (M+1) t + sum_m alpha_m``, ``t <= alpha_m``), and pin every alpha_m for phase 2."""
    import scipy.sparse as sp

    served = np.bincount(milp.m_k, weights=x1[milp.ix], minlength=len(milp.iu))  # phase-1 routed
    lam = milp.ub[milp.iu]
    ms = [m for m in range(len(milp.iu)) if served[m] > 1e-6 * max(1.0, lam[m])]
    if not ms:
        return base, SolveResult("optimal", None, None, None, None, 0.0, "nothing served")
    mh = base
    ia = {}
    for m in ms:
        mh = mh.with_column(f"alpha({milp.col_names[milp.iu[m]][2:-1]})", 1.0, opts.headroom)
        ia[m] = mh.n_cols - 1
    mh = mh.with_column("t", 1.0, opts.headroom)
    it = mh.n_cols - 1
    row_of = {m: i for i, m in enumerate(ms)}
    rows, cols, vals = [], [], []
    for k, r_m in enumerate(milp.m_k):
        if r_m in row_of:
            rows.append(row_of[r_m])
            cols.append(milp.in_[k])
            vals.append(milp.cap_k[k])
    for m in ms:
        rows.append(row_of[m])
        cols.append(ia[m])
        vals.append(-served[m] * (1 - 1e-6))  # slack for the phase-1 solution's own tolerances
    n = len(ms)
    for m in ms:  # t - alpha_m <= 0
        rows += [n + row_of[m], n + row_of[m]]
        cols += [it, ia[m]]
        vals += [1.0, -1.0]
    A_new = sp.csr_matrix((vals, (rows, cols)), shape=(2 * n, mh.n_cols))
    names = ([f"hdr({milp.col_names[milp.iu[m]][2:-1]})" for m in ms]
             + [f"hdrmin({milp.col_names[milp.iu[m]][2:-1]})" for m in ms])
    mh = mh.with_rows(A_new, np.concatenate([np.zeros(n), np.full(n, -np.inf)]),
                      np.concatenate([np.full(n, np.inf), np.zeros(n)]), names)
    obj = np.zeros(mh.n_cols)
    obj[it] = -(n + 1.0)
    for m in ms:
        obj[ia[m]] = -1.0
    r = fn(mh.with_objective(obj), time_limit, gap)
    if r.x is None:
        return base, r
    lb = mh.lb.copy()
    for m in ms:
        lb[ia[m]] = max(1.0, float(r.x[ia[m]]) * (1 - 1e-4))
    r.alpha = {milp.col_names[milp.iu[m]][2:-1]: round(float(r.x[ia[m]]), 6) for m in ms}
    return MilpArrays(**{**mh.__dict__, "lb": lb}), r


def _phase(name: str, r: SolveResult) -> dict:
    d = {"phase": name, "status": r.status, "objective": r.objective, "best_bound": r.best_bound, "gap": r.gap,
         "seconds": round(r.seconds, 4)}
    if getattr(r, "alpha", None):
        d["alpha"] = r.alpha
    return d


def _unpackable_pools(c: Candidates, n: np.ndarray, cluster: ClusterSpec) -> list[int]:
    items: dict[int, list] = defaultdict(list)
    for k in range(len(c)):
        if n[k] > 0:
            items[c.p[k]].extend([c.res[k]] * int(n[k]))
    bad = []
    for p, its in items.items():
        pool = cluster.pools[p]
        if pack_ffd(its, (pool.cpu, pool.memory_mb, float(pool.accelerators)), pool.nodes) is None:
            bad.append(p)
    return bad


def _repair_packing(c: Candidates, n: np.ndarray, cluster: ClusterSpec) -> np.ndarray:
    """Last resort when re-solving did not yield a packable plan: drop the replicas FFD cannot place."""
    bad = _unpackable_pools(c, n, cluster)
    if not bad:
        return n
    n = n.copy()
    for p in bad:
        pool = cluster.pools[p]
        cap = (pool.cpu, pool.memory_mb, float(pool.accelerators))
        ks = [k for k in range(len(c)) if c.p[k] == p and n[k] > 0]
        while pack_ffd([c.res[k] for k in ks for _ in range(int(n[k]))], cap, pool.nodes) is None:
            k = max(ks, key=lambda j: n[j])
            n[k] -= 1
    return n


def _choice(rec) -> ConfigChoice:
    return ConfigChoice(config_id=rec.config_id, engine=rec.engine, precision=rec.precision, batch_size=rec.batch_size,
                        threads=rec.threads, power_mode=rec.power_mode, accelerator=rec.accelerator,
                        latency_p50_ms=rec.latency_p50_ms, latency_p90_ms=rec.latency_p90_ms,
                        latency_p99_ms=rec.latency_p99_ms, throughput_rps=rec.throughput_rps, power_w=rec.power_w,
                        cpu_cores=rec.cpu_cores, memory_request_mb=rec.memory_request_mb,
                        accelerators=rec.accelerators, source=rec.source)


def decode(c: Candidates, milp: MilpArrays, res: SolveResult, cluster: ClusterSpec, workload: WorkloadSpec,
           opts: PlanOptions, report: SolverReport) -> Plan:
    """Turn the solver's column values into a Plan (assignments, unserved with reasons, candidate fates)."""
    K = len(c)
    if res.x is None:
        n = np.zeros(K, dtype=int)
        x = np.zeros(K)
        u = np.array([d.rate_rps for d in workload.models])
    else:
        n = np.rint(res.x[milp.in_]).astype(int)
        x = np.clip(res.x[milp.ix], 0, None)
        u = np.clip(res.x[milp.iu], 0, None)
        n = _repair_packing(c, n, cluster)
        x = np.minimum(x, n * np.asarray(c.cap_rps, dtype=float)) if K else x
        x[n == 0] = 0.0
        # restore exact conservation (integer-grid back-ends and tolerances leave crumbs)
        lam = np.array([d.rate_rps for d in workload.models])
        mk = np.asarray(c.m, dtype=int)
        routed = np.bincount(mk, weights=x, minlength=len(lam)) if K else np.zeros(len(lam))
        over = routed > lam
        if over.any():
            f = np.where(over, lam / np.maximum(routed, 1e-12), 1.0)
            x = x * f[mk]
            routed = np.bincount(mk, weights=x, minlength=len(lam))
        u = np.clip(lam - routed, 0, None)

    if opts.use_spare_capacity and res.x is not None:
        n = _fill_spare(c, n, x, cluster)

    assignments: list[Assignment] = []
    for k in range(K):
        if n[k] <= 0:
            continue
        rec = c.records[k]
        pool = cluster.pools[c.p[k]]
        util = x[k] / (n[k] * rec.throughput_rps)
        dist = LatencyDist(rec.latency_p50_ms, rec.latency_p90_ms, rec.latency_p99_ms)
        pred = response_quantile(util, dist, opts.quantile, 1000.0 / rec.throughput_rps) + pool.rtt_ms + c.batch_wait_ms[k]
        assignments.append(Assignment(model=c.models[c.m[k]], pool=pool.name, config=_choice(rec), replicas=int(n[k]),
                                      routed_rate_rps=round(float(x[k]), 6), utilisation=round(float(util), 6),
                                      max_utilisation=round(c.rho[k], 6), predicted_latency_ms=round(pred, 4),
                                      energy_w=round(float(x[k] * c.energy_j[k]), 6)))
        rep = c.reports[c.report_index[k]]
        rep.status = "chosen"
        rep.detail = (f"{n[k]} replicas, {x[k]:.4g} req/s routed" if x[k] > 0
                      else f"{n[k]} standby replica(s) in idle capacity, for bursts (no planned traffic)")
    chosen_mp = {(a.model, a.pool) for a in assignments}
    for k in range(K):
        rep = c.reports[c.report_index[k]]
        if rep.status == "not_chosen" and not rep.detail:
            key = (c.models[c.m[k]], c.pools[c.p[k]])
            rep.detail = ("another configuration was chosen for this pool" if key in chosen_mp
                          else "pool capacity went to other models or was not needed")

    unserved: list[Unserved] = []
    feasible_models = {c.m[k] for k in range(K)}
    for mi, d in enumerate(workload.models):
        rate = float(u[mi]) if mi < len(u) else d.rate_rps
        if rate <= EPS * max(1.0, d.rate_rps):
            continue
        if mi not in feasible_models:
            reps = [r for r in c.reports if r.model == d.model]
            if not reps:
                reason = "no pool has a profile for this model"
            else:
                best = min(reps, key=lambda r: r.response_p99_ms)
                reason = (f"no configuration meets the {d.deadline_ms:g} ms deadline on any pool "
                          f"(best: {best.config_id} on {best.pool}: {best.status.replace('_', ' ')}, {best.detail})")
        else:
            reason = "capacity exhausted: every deadline-feasible pool is full"
        unserved.append(Unserved(model=d.model, rate_rps=round(rate, 6), reason=reason))

    return Plan(objective=opts.objective, pools=list(cluster.pools), demands=list(workload.models),
                assignments=assignments, unserved=unserved, candidates=c.reports, solver=report)


def _fill_spare(c: Candidates, n: np.ndarray, x: np.ndarray, cluster: ClusterSpec) -> np.ndarray:
    """Put idle capacity to work as burst headroom, while it still packs onto the nodes.

    First one standby replica (routed rate 0) for each model that has a deadline-feasible
    candidate on a pool but no assignment there (its best-capacity candidate, in the pool's
    power mode), so the online stage can spill bursts to it; then extra replicas for the
    busiest chosen assignments, one at a time.
    """
    n = n.copy()
    from .milp import UNSPECIFIED_MODE

    by_pool: dict[int, list[int]] = defaultdict(list)
    for k in range(len(c)):
        if n[k] > 0 and x[k] > 0:
            by_pool[c.p[k]].append(k)
    # standby replicas for (model, pool) pairs the plan left empty
    has = {(c.m[k], c.p[k]) for k in range(len(c)) if n[k] > 0}
    mode = {}
    for k in range(len(c)):
        if n[k] > 0 and c.records[k].power_mode != UNSPECIFIED_MODE:
            mode[c.p[k]] = c.records[k].power_mode
    best: dict[tuple[int, int], int] = {}
    for k in range(len(c)):
        key = (c.m[k], c.p[k])
        pm = c.records[k].power_mode
        if key in has or (pm != UNSPECIFIED_MODE and mode.get(c.p[k], pm) != pm):
            continue
        if key not in best or c.cap_rps[k] > c.cap_rps[best[key]]:
            best[key] = k
    for (mi, p), k in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        pool = cluster.pools[p]
        pm = c.records[k].power_mode
        if pm != UNSPECIFIED_MODE and mode.get(p, pm) != pm:
            continue
        items = [c.res[j] for j in range(len(c)) if c.p[j] == p for _ in range(int(n[j]))] + [c.res[k]]
        if pack_ffd(items, (pool.cpu, pool.memory_mb, float(pool.accelerators)), pool.nodes) is not None:
            n[k] = 1
            if pm != UNSPECIFIED_MODE:
                mode[p] = pm
            by_pool[p].append(k)
    for p, ks in by_pool.items():
        pool = cluster.pools[p]
        cap = (pool.cpu, pool.memory_mb, float(pool.accelerators))
        items = [c.res[k] for k in range(len(c)) if c.p[k] == p for _ in range(int(n[k]))]
        if pack_ffd(items, cap, pool.nodes) is None:
            continue
        full: set[int] = set()
        while len(full) < len(ks):
            # the same packing test as the invariant (FFD from scratch), so what we add stays packable
            k = max((j for j in ks if j not in full), key=lambda j: x[j] / (n[j] * c.records[j].throughput_rps))
            if pack_ffd(items + [c.res[k]], cap, pool.nodes) is None:
                full.add(k)
                continue
            items.append(c.res[k])
            n[k] += 1
    return n
