"""Brute-force oracle for the offline planner's MILP, written from its documented semantics only.

It never imports the planner's candidate builder, MILP, offline driver or decoder: the data rules
(deadline, per-node fit, shared-server slices, energy per request) are re-implemented here from the
formulation in ``planner/milp.py``'s docstring, on top of the shared world model
(``synergai.planner.service``).  Every integer decision is enumerated -- per pool a power mode, per
(model, pool) one dedicated configuration or none and one shared configuration or none, and an
explicit per-node placement of replicas and shared servers onto the pool's individual nodes -- and
the continuous routing for each is an LP solved with ``scipy.optimize.linprog``.

Exactness of the enumeration (why it may skip what it skips):

- with ``resource_weight = 0`` a replica or shared server on an already powered node costs nothing
  and only relaxes constraints, so it suffices to enumerate *maximal* node patterns (no further
  server of the selected kinds fits), capped at the count that could ever carry traffic
  (``floor(F lam / c) + 1`` with ``F`` the largest load factor or headroom);
- a configuration with no replica (a loaded shared configuration with no shared server) is the
  same as not choosing it, only with more constraints, so those are not enumerated separately;
- lower bounds (capacity per model for phase 1, idle power plus the cheapest serving energy for the
  energy phase) only skip combinations that cannot beat the incumbent.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from synergai.planner.service import (
    ServiceModel,
    device_power_ceiling,
    g_factor,
    max_utilisation,
    response_quantile,
    serving_power,
    shared_budget,
)

LEX_EPS = 1e-7  # the planner holds phase 1 at OPT1 (1 + eps) + eps
ALPHA_HOLD = 1e-4  # ... and each alpha at alpha* (1 - 1e-4) in the energy phase
FIT = 1e-9


@dataclass
class Ded:
    m: int
    p: int
    rec: object
    c: float  # usable req/s per replica
    rho: float
    e: float  # J per request
    res: tuple  # cpu, mem, acc
    mode: str


@dataclass
class Sh:
    m: int
    p: int
    rec: object
    w: float  # server-s per request
    a: float  # residual work per req/s
    B: float  # queueing budget, s
    mem: float  # footprint
    e: float
    mode: str
    slots: int = 1  # execution slots (one count per pool's shared servers)


@dataclass(frozen=True)
class PoolOption:
    p: int
    ded: tuple  # ((k, n), ...)
    sh: tuple  # (j, ...) loaded shared configurations
    sigma: int  # shared servers
    o: int  # powered nodes


class Oracle:
    def __init__(self, profiles, cluster, workload, opts):
        self.pools = list(cluster.pools)
        self.models = [d.model for d in workload.models]
        self.lam = np.array([d.rate_rps for d in workload.models], float)
        self.wt = np.array([d.priority for d in workload.models], float)
        self.dl = [d.deadline_ms for d in workload.models]
        self.q = opts.quantile
        self.rho_bar = opts.util_cap
        self.G = g_factor(opts.util_cap, opts.quantile)
        scen = list(opts.load_scenarios) or [(1.0, 1.0)]
        tot = sum(pr for _, pr in scen)
        self.scen = [(float(f), float(pr) / tot) for f, pr in scen]
        self.amax = max(1.0, float(opts.headroom)) if opts.objective == "lexicographic" else 1.0
        self.F = max(max(f for f, _ in self.scen), self.amax)
        ceiling = device_power_ceiling(profiles.records)
        self.ded: list[Ded] = []
        self.sh: list[Sh] = []
        self.raw_slice: dict[int, tuple] = {}
        self.per_node: dict[int, int] = {}
        for p, pool in enumerate(self.pools):
            if opts.shared_servers and pool.nodes > 0:
                if pool.accelerators > 0:
                    k = pool.accelerators
                    self.raw_slice[p] = (pool.cpu / k, pool.memory_mb / k, 1.0)
                else:
                    self.raw_slice[p] = (pool.cpu, pool.memory_mb, 0.0)
        loadable: dict[int, list] = {}
        for m, dem in enumerate(workload.models):
            for p, pool in enumerate(self.pools):
                for rec in profiles.records:
                    if rec.model != dem.model or rec.device != pool.device or rec.architecture != pool.architecture:
                        continue
                    if pool.nodes == 0 or dem.rate_rps <= 0:
                        continue
                    sm = ServiceModel.of(rec)
                    fixed = sm.batch_wait + sm.quantile(self.q) + pool.rtt_ms / 1e3
                    if fixed * 1e3 > dem.deadline_ms:
                        continue
                    e = serving_power(rec, ceiling)[0] / sm.capacity
                    need = (rec.cpu_cores, rec.memory_request_mb, float(rec.accelerators))
                    have = (pool.cpu, pool.memory_mb, float(pool.accelerators))
                    rho = min(
                        opts.util_cap,
                        max_utilisation(sm, (dem.deadline_ms - pool.rtt_ms) / 1e3, cap=opts.util_cap, q=self.q),
                    )
                    if all(a <= b + FIT for a, b in zip(need, have)) and rho > 1e-6:
                        self.ded.append(Ded(m, p, rec, rho * sm.capacity, rho, e, need, rec.power_mode))
                    sl = self.raw_slice.get(p)
                    fp = rec.memory_mb or rec.memory_request_mb
                    if (
                        sl is not None
                        and rec.cpu_cores <= sl[0] + FIT
                        and fp <= sl[1] + FIT
                        and rec.accelerators <= sl[2] + FIT
                    ):
                        loadable.setdefault(p, []).append((m, rec, sm, fp, e, (dem.deadline_ms - pool.rtt_ms) / 1e3))
        # shared servers (service.py, milp.py C6b): the configurations loaded on a pool's shared servers have one
        # slot count, so a_j counts calls of equal share (shared_residual with cmin = c_j); a loadable batching
        # configuration on the pool makes the probability of waiting 1, else rho_bar
        for p, items in loadable.items():
            pw = 1.0 if any(sm.batch > 1 for _, _, sm, _, _, _ in items) else opts.util_cap
            groups: dict[int, list[Sh]] = {}
            for m, rec, sm, fp, e, budget in items:
                B = shared_budget(sm, budget, pw, self.q)
                if B > 0:
                    groups.setdefault(m, []).append(
                        Sh(
                            m,
                            p,
                            rec,
                            sm.work_per_request,
                            sm.shared_residual(sm.slots),
                            B,
                            fp,
                            e,
                            rec.power_mode,
                            sm.slots,
                        )
                    )
            for m in sorted(groups):
                self.sh.extend(_undominated(groups[m]))
        # the shared server's reservation: what its candidates can use, never more than the slice
        self.slice: dict[int, tuple] = {}
        for p, (cpu, mem, acc) in self.raw_slice.items():
            js = [s for s in self.sh if s.p == p]
            if not js:
                continue
            big: dict[int, float] = {}
            for s in js:
                big[s.m] = max(big.get(s.m, 0.0), s.mem)
            self.slice[p] = (min(cpu, max(s.rec.cpu_cores for s in js)), min(mem, sum(big.values())), acc)
        self.has_cand = np.array(
            [any(d.m == m for d in self.ded) or any(s.m == m for s in self.sh) for m in range(len(self.models))]
        )
        self.options = [self._pool_options(p) for p in range(len(self.pools))]
        self.n_lp = 0

    # ------------------------------------------------------------------ enumeration
    def _pool_options(self, p: int) -> list[PoolOption]:
        pool = self.pools[p]
        cap = (pool.cpu, pool.memory_mb, float(pool.accelerators))
        D = [k for k, d in enumerate(self.ded) if d.p == p]
        S = [j for j, s in enumerate(self.sh) if s.p == p]
        modes = sorted({self.ded[k].mode for k in D} | {self.sh[j].mode for j in S})
        out = {PoolOption(p, (), (), 0, 0)}
        M = len(self.models)
        for h in modes:
            dch = [[None] + [k for k in D if self.ded[k].m == m and self.ded[k].mode == h] for m in range(M)]
            sch = [[None] + [j for j in S if self.sh[j].m == m and self.sh[j].mode == h] for m in range(M)]
            for dsel in itertools.product(*dch):
                ks = [k for k in dsel if k is not None]
                for ssel in itertools.product(*sch):
                    js = [j for j in ssel if j is not None]
                    if not ks and not js:
                        continue
                    if js and sum(self.sh[j].mem for j in js) > self.slice[p][1] + 1e-6:
                        continue
                    if len({self.sh[j].slots for j in js}) > 1:  # one slot count per pool's shared servers
                        continue
                    items = [self.ded[k].res for k in ks]
                    bound = [math.floor(self.F * self.lam[self.ded[k].m] / self.ded[k].c) + 1 for k in ks]
                    if js:
                        items.append(self.slice[p])
                        work = sum(self.sh[j].w * self.F * self.lam[self.sh[j].m] for j in js)
                        bound.append(math.floor(work / self.rho_bar) + 1)
                    for tot, o in placements(items, bound, cap, pool.nodes):
                        ded = tuple((k, n) for k, n in zip(ks, tot) if n > 0)
                        sig = tot[len(ks)] if js else 0
                        out.add(PoolOption(p, ded, tuple(js) if sig > 0 else (), sig, o))
        return sorted(out, key=lambda o: (o.o, o.ded, o.sh, o.sigma))

    def combos(self):
        return itertools.product(*self.options)

    def n_combos(self) -> int:
        return math.prod(len(o) for o in self.options)

    # ------------------------------------------------------------------ bounds
    def _caps(self, combo) -> np.ndarray:
        """Upper bound on each model's servable rate in one routing block (exact when no pool's shared
        servers host two configurations)."""
        cap = np.zeros(len(self.models))
        for opt in combo:
            for k, n in opt.ded:
                cap[self.ded[k].m] += n * self.ded[k].c
            if opt.sigma and len(opt.sh) == 1:
                j = opt.sh[0]
                s = self.sh[j]
                if self.G * s.a - s.B * s.w <= 0:
                    cap[s.m] += self.rho_bar * opt.sigma / s.w
            else:
                for j in opt.sh:
                    cap[self.sh[j].m] += self.rho_bar * opt.sigma / self.sh[j].w
        return cap

    def _coupled(self, combo) -> bool:
        return any(len(o.sh) > 1 for o in combo)

    def _unserved_lb(self, combo) -> float:
        cap = self._caps(combo)
        return float(sum(pr * np.sum(self.wt * np.maximum(0.0, f * self.lam - cap)) for f, pr in self.scen))

    def idle(self, combo) -> float:
        return sum(self.pools[o.p].idle_power_w * o.o for o in combo)

    def _emin(self, combo) -> np.ndarray:
        e = np.full(len(self.models), np.inf)
        for opt in combo:
            for k, _ in opt.ded:
                e[self.ded[k].m] = min(e[self.ded[k].m], self.ded[k].e)
            for j in opt.sh:
                e[self.sh[j].m] = min(e[self.sh[j].m], self.sh[j].e)
        return e

    # ------------------------------------------------------------------ the routing LP
    def lp(self, combo, kind: str, opt1: float = 0.0, served=None, t_low: float = 1.0, alpha_low=None):
        """kind: 'p1' (min unserved), 'h1' (max t), 'h2' (max sum alpha), 'e' (min energy).
        Returns the objective (energy includes idle power; h1/h2 as positive values) or None if infeasible."""
        self.n_lp += 1
        M = len(self.models)
        D = [(k, n) for o in combo for k, n in o.ded]
        J = [(j, o.sigma) for o in combo for j in o.sh]
        nb = len(D) + len(J)
        S = len(self.scen)
        blocks = [(f, pr) for f, pr in self.scen]
        H = kind != "p1" and served is not None and np.any(served > 0)
        hm = [m for m in range(M) if H and served[m] > 0]
        nv = S * (nb + M) + (nb + len(hm) + 1 if H else 0)
        c = np.zeros(nv)
        lb = np.zeros(nv)
        ub = np.full(nv, np.inf)
        Aeq, beq, Aub, bub = [], [], [], []

        def block_rows(x0, lam_b, xb_ub):
            # routing block starting at column x0: bounds, S1, S4
            for i, (k, n) in enumerate(D):
                ub[x0 + i] = min(n * self.ded[k].c, xb_ub[self.ded[k].m])
            for i, (j, sg) in enumerate(J):
                ub[x0 + len(D) + i] = xb_ub[self.sh[j].m]
            for o in combo:
                if not o.sigma:
                    continue
                cols = [x0 + len(D) + i for i, (j, _) in enumerate(J) if self.sh[j].p == o.p]
                js = [j for j, _ in J if self.sh[j].p == o.p]
                row = np.zeros(nv)
                row[cols] = [self.sh[j].w for j in js]
                Aub.append(row)
                bub.append(self.rho_bar * o.sigma)
                for jm in js:  # one row per loaded configuration (one per model): its own budget
                    B = self.sh[jm].B
                    row = np.zeros(nv)
                    row[cols] = [self.G * self.sh[j].a - B * self.sh[j].w for j in js]
                    Aub.append(row)
                    bub.append(0.0)

        def model_of(i):
            return self.ded[D[i][0]].m if i < len(D) else self.sh[J[i - len(D)][0]].m

        for s, (f, pr) in enumerate(blocks):
            x0 = s * (nb + M)
            u0 = x0 + nb
            block_rows(x0, f * self.lam, f * self.lam)
            ub[u0 : u0 + M] = f * self.lam
            for m in range(M):
                row = np.zeros(nv)
                for i in range(nb):
                    if model_of(i) == m:
                        row[x0 + i] = 1.0
                row[u0 + m] = 1.0
                Aeq.append(row)
                beq.append(f * self.lam[m])
            if kind == "p1":
                c[u0 : u0 + M] = pr * self.wt
            elif kind == "e":
                for i in range(nb):
                    c[x0 + i] = pr * (self.ded[D[i][0]].e if i < len(D) else self.sh[J[i - len(D)][0]].e)
        if kind != "p1":  # hold phase 1
            row = np.zeros(nv)
            for s, (f, pr) in enumerate(blocks):
                u0 = s * (nb + M) + nb
                row[u0 : u0 + M] = pr * self.wt
            Aub.append(row)
            bub.append(opt1 * (1 + LEX_EPS) + LEX_EPS)
        if H:
            x0 = S * (nb + M)
            a0 = x0 + nb
            tcol = a0 + len(hm)
            block_rows(x0, None, self.amax * served)
            for m in range(M):
                row = np.zeros(nv)
                for i in range(nb):
                    if model_of(i) == m:
                        row[x0 + i] = 1.0
                if m in hm:
                    row[a0 + hm.index(m)] = -served[m]
                Aeq.append(row)
                beq.append(0.0)
            lb[a0 : a0 + len(hm)] = 1.0
            ub[a0 : a0 + len(hm) + 1] = self.amax
            lb[tcol] = max(1.0, t_low)
            if alpha_low is not None:
                for i, m in enumerate(hm):
                    lb[a0 + i] = max(1.0, alpha_low[m])
            for i in range(len(hm)):
                row = np.zeros(nv)
                row[tcol] = 1.0
                row[a0 + i] = -1.0
                Aub.append(row)
                bub.append(0.0)
            if kind == "h1":
                c[tcol] = -1.0
            elif kind == "h2":
                c[a0 : a0 + len(hm)] = -1.0
        if np.any(lb > ub + 1e-12):
            return None
        r = linprog(
            c,
            A_ub=np.array(Aub) if Aub else None,
            b_ub=np.array(bub) if bub else None,
            A_eq=np.array(Aeq),
            b_eq=np.array(beq),
            bounds=list(zip(lb, ub)),
            method="highs",
        )
        if r.status != 0:
            return None
        if kind == "e":
            return float(r.fun) + self.idle(combo)
        return -float(r.fun) if kind in ("h1", "h2") else float(r.fun)

    # ------------------------------------------------------------------ phases
    def phase1(self) -> tuple[float, list]:
        """Minimal expected weighted unserved rate, and the combinations that reach it."""
        cands = sorted(((self._unserved_lb(cb), cb) for cb in self.combos()), key=lambda t: t[0])
        best = math.inf
        vals = []
        for lbv, cb in cands:
            if lbv > best + 1e-6 * max(1.0, best):
                break
            v = self.lp(cb, "p1") if self._coupled(cb) else lbv
            vals.append((v, cb))
            best = min(best, v)
        self.opt1 = best
        hold = best * (1 + LEX_EPS) + LEX_EPS + 1e-9
        self.phase1_set = [cb for v, cb in vals if v is not None and v <= hold]
        return best, self.phase1_set

    def served_unique(self) -> np.ndarray | None:
        """s*_m when phase 1 determines it (every model with a candidate fully served), else None."""
        hopeless = sum(pr * float(np.sum((self.wt * f * self.lam)[~self.has_cand])) for f, pr in self.scen)
        if self.opt1 <= hopeless + 1e-7 * max(1.0, hopeless):
            return np.where(self.has_cand, self.lam, 0.0)
        return None

    def headroom(self, served: np.ndarray, fill: bool = True) -> tuple[float, float]:
        """(t*, max sum alpha at t >= t* -- only when ``fill``) over the phase-1 optimal combinations."""
        hm = served > 0
        best_t = -math.inf
        ubs = []
        for cb in self.phase1_set:
            cap = self._caps(cb)
            a_ub = np.minimum(self.amax, np.where(hm, cap / np.where(hm, served, 1.0), np.inf))
            ubs.append((float(a_ub[hm].min()), float(a_ub[hm].sum()), cb))
        for tub, _, cb in sorted(ubs, key=lambda t: -t[0]):
            if tub <= best_t + 1e-9:
                break
            v = self.lp(cb, "h1", self.opt1, served)
            if v is not None:
                best_t = max(best_t, v)
        best_s = -math.inf
        for tub, sub, cb in [] if not fill else sorted(ubs, key=lambda t: -t[1]):
            if sub <= best_s + 1e-9:
                break
            if tub < best_t * (1 - 1e-6) - 1e-9:
                continue
            v = self.lp(cb, "h2", self.opt1, served, t_low=best_t * (1 - 1e-6))
            if v is not None:
                best_s = max(best_s, v)
        return best_t, best_s

    def energy(self, served=None, alpha=None, t_star: float = 1.0) -> tuple[float, tuple]:
        """Minimal expected serving + idle power over the phase-1 optimal combinations; with ``served``
        (s*) a headroom routing block must carry every alpha_m >= t* (and alpha_m >= the planner's
        alpha_m (1 - 1e-4) when ``alpha`` is given: ``headroom_fill``)."""
        M = len(self.models)
        alpha_low = None if alpha is None else {m: alpha[m] * (1 - ALPHA_HOLD) for m in range(M)}
        hold = self.opt1 * (1 + LEX_EPS) + LEX_EPS
        rows = []
        for cb in self.phase1_set:
            e = self._emin(cb)
            need = 0.0
            for f, pr in self.scen:
                umax = np.minimum(f * self.lam, hold / (pr * self.wt))
                lo = np.maximum(0.0, f * self.lam - umax)
                need += pr * float(np.sum(np.where(lo > 0, lo * np.where(np.isfinite(e), e, 0.0), 0.0)))
            rows.append((self.idle(cb) + need, cb))
        best, arg = math.inf, None
        for lbv, cb in sorted(rows, key=lambda t: t[0]):
            if lbv > best * (1 + 1e-9) + 1e-9:
                break
            v = self.lp(cb, "e", self.opt1, served, t_low=t_star * (1 - 1e-6), alpha_low=alpha_low)
            if v is not None and v < best:
                best, arg = v, cb
        return best, arg


def _undominated(group: list[Sh]) -> list[Sh]:
    """Shared configurations of one (model, pool): drop one when another of the same power mode is at
    least as good in budget, work, residual, energy and memory (strictly in one, or listed earlier)."""
    drop: set[int] = set()
    for i, a in enumerate(group):
        for j, b in enumerate(group):
            if i == j or j in drop or a.mode != b.mode or a.slots != b.slots:
                continue
            ge = b.B >= a.B and b.w <= a.w and b.a <= a.a and b.e <= a.e and b.mem <= a.mem
            strict = b.B > a.B or b.w < a.w or b.a < a.a or b.e < a.e or b.mem < a.mem or j < i
            if ge and strict:
                drop.add(i)
                break
    return [s for i, s in enumerate(group) if i not in drop]


def placements(items, bound, cap, nodes):
    """Pareto-maximal (totals, powered nodes) of servers of the given footprints placed node by node.

    ``items[i]`` a footprint (cpu, mem, acc), ``bound[i]`` the most of it that can ever be useful."""
    n = len(items)
    rng = []
    for it, bd in zip(items, bound):
        fit = min((math.floor(c / r + FIT) if r > 0 else bd) for r, c in zip(it, cap))
        rng.append(range(0, min(bd, fit) + 1))

    def fits(cnt):
        return all(sum(c * it[r] for c, it in zip(cnt, items)) <= cap[r] + FIT for r in range(3))

    pats = []
    for cnt in itertools.product(*rng):
        if not any(cnt) or not fits(cnt):
            continue
        maximal = all(cnt[i] >= bound[i] or not fits(cnt[:i] + (cnt[i] + 1,) + cnt[i + 1 :]) for i in range(n))
        if maximal:
            pats.append(cnt)
    out = []
    cur = {(0,) * n}
    for o in range(1, nodes + 1):
        nxt = {tuple(min(bound[i], t[i] + p[i]) for i in range(n)) for t in cur for p in pats}
        cur = _pareto(nxt)
        for t in cur:
            if not any(all(a >= b for a, b in zip(t2, t)) for t2, _ in out):
                out.append((t, o))
    return out


def _pareto(states: set) -> set:
    st = sorted(states, reverse=True)
    keep: list = []
    for s in st:
        if not any(all(a >= b for a, b in zip(k, s)) for k in keep):
            keep.append(s)
    return set(keep)


# ---------------------------------------------------------------------- plan checks
def packs(items: list[tuple], cap: tuple, nodes: int) -> int | None:
    """Fewest nodes the items pack onto (exact search), or None when they do not fit on ``nodes``."""
    items = sorted(items, reverse=True)
    if not items:
        return 0

    def place(i, loads, limit):
        if i == len(items):
            return True
        seen = set()
        for b in range(limit):
            key = tuple(round(x, 9) for x in loads[b])
            if key in seen:
                continue
            seen.add(key)
            if all(loads[b][r] + items[i][r] <= cap[r] + FIT for r in range(3)):
                loads[b] = tuple(loads[b][r] + items[i][r] for r in range(3))
                if place(i + 1, loads, limit):
                    return True
                loads[b] = tuple(loads[b][r] - items[i][r] for r in range(3))
        return False

    for k in range(1, nodes + 1):
        if place(0, [(0.0, 0.0, 0.0)] * k, k):
            return k
    return None


def plan_servers_by_pool(plan) -> dict[str, list[tuple]]:
    items: dict[str, list[tuple]] = {}
    for g in plan.server_groups():
        items.setdefault(g.pool, []).extend([(g.cpu_cores, g.memory_mb, float(g.accelerators))] * g.replicas)
    return items


def shared_latencies(plan, q: float) -> list[tuple[str, float, float]]:
    """(model, predicted q-quantile response ms recomputed from the service model, deadline ms) per
    assignment on a shared group."""
    out = []
    for g in plan.server_groups():
        if not g.shared or g.replicas <= 0:
            continue
        asg = plan.assignments_of(g.name)
        loads = [(ServiceModel.of(a.config), a.routed_rate_rps / g.replicas) for a in asg]
        rtt = plan.pool(g.pool).rtt_ms / 1e3
        for a, (sm, _) in zip(asg, loads):
            out.append((a.model, response_quantile(loads, sm, q, rtt) * 1e3, plan.demand(a.model).deadline_ms))
    return out
