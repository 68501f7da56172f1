r"""Model step: the offline MILP as arrays (vectorised; names kept so a dumped LP reads like the maths).

Notation
--------
- ``m`` models, ``p`` node pools, ``r`` in {cpu, mem, acc} resources, ``h`` power modes.
- ``k`` a feasible candidate (model ``m(k)``, pool ``p(k)``, one profiled configuration).
  Candidates whose p99 latency + RTT (+ batch wait) misses the deadline, or whose replica
  does not fit on one node, were removed by the data step (this *is* the deadline and
  per-node-fit constraint family, applied as a domain restriction).
- ``lam_m`` expected rate (req/s), ``w_m`` priority, ``c_k = rho_k * mu_k`` usable rate per
  replica (throughput times the utilisation cap that keeps the p99 response inside the
  deadline, see ``queueing.py``), ``e_k`` energy per request (J), ``a_kr`` per-replica request
  of resource ``r``, ``C_pr = nodes_p * cap_pr`` pool capacity, ``N_k`` replica bound.

Variables
---------
``y_k`` in {0,1} configuration chosen; ``n_k`` in Z+ replicas; ``x_k >= 0`` routed rate (req/s);
``u_m >= 0`` unserved rate (req/s); ``z_ph`` in {0,1} pool ``p`` runs power mode ``h`` (only
for pools whose candidates span several power modes).

Objective (lexicographic, up to three solves; or weighted, one solve)
--------------------------------------------------------------------
1. ``min sum_m w_m u_m``                                   (priority-weighted unserved rate)
H. ``max (M+1) t + sum_m alpha_m``, ``1 <= t <= alpha_m <= alpha_max``  (headroom: model m's served load
   could grow by ``alpha_m``, so bursts and profile error meet deadline-feasible capacity; the smallest
   factor first, then the rest), with C8 ``hdr[m]: sum_{k: m(k)=m} c_k n_k - alpha_m s*_m >= 0``
   (``s*_m`` the rate phase 1 routes for m), ``hdrmin[m]: t - alpha_m <= 0`` and C7.
2. ``min sum_k e_k x_k + beta * sum_k n_k sum_r a_kr / C_p(k)r``  (serving power in W, then resources)
   subject to C7 and ``alpha_m >= alpha_m* (1 - eps)`` (phase H skipped when ``alpha_max = 1``).
Weighted mode minimises ``W_u * (1) + (2)`` in one solve.

Constraints
-----------
- C1 ``dem[m]``:      ``sum_{k: m(k)=m} x_k + u_m = lam_m``        demand conservation
- C2 ``util[k]``:     ``x_k - c_k n_k <= 0``                       utilisation cap per replica
- C3 ``link[k]``:     ``n_k - N_k y_k <= 0``                       replicas only for the chosen config
- C4 ``one[m,p]``:    ``sum_{k in (m,p)} y_k <= 1``                one configuration per (model, pool)
- C5 ``cap[p,r]``:    ``sum_{k: p(k)=p} a_kr n_k <= C_pr``          pool capacity
- C6 ``mode[k]``:     ``y_k - z_{p(k),h(k)} <= 0`` and ``onemode[p]: sum_h z_ph <= 1``  one power mode per pool
  (profiles with power mode ``default``, i.e. not declared, are compatible with any mode)
- C7 ``lex``:         ``sum_m w_m u_m <= OPT_1 (1 + eps) + eps``     (phases H and 2)
- C8 ``hdr[m]``:      headroom, see phase H (phases H and 2)
- C9 ``dem[m,s]``, ``util[k,s]``: optional load scenarios ``(f_s, p_s)`` (e.g. a burst state of an MMPP):
  the same y, n must also route ``f_s lam_m``; objective 1 becomes ``sum_s p_s sum_m w_m u_{m,s}``
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .candidates import Candidates, PlanOptions

RES = ("cpu", "mem", "acc")
#: A profile measured without a declared power mode runs under whatever mode the pool is in.
UNSPECIFIED_MODE = "default"


@dataclass
class MilpArrays:
    """A MILP in array form: ``min c.x + offset  s.t.  row_lo <= A x <= row_hi, lb <= x <= ub``."""

    c: np.ndarray
    A: sp.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    integer: np.ndarray  # bool per column
    col_names: list[str]
    row_names: list[str]
    offset: float = 0.0
    # column blocks, for decoding
    iy: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    in_: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    ix: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    iu: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    unserved_cost: np.ndarray = field(default_factory=lambda: np.zeros(0))  # w_m per u column
    iu_all: np.ndarray = field(default_factory=lambda: np.zeros(0, int))    # u columns of every load scenario
    u_cost_all: np.ndarray = field(default_factory=lambda: np.zeros(0))     # p_s w_m for iu_all
    ix_scen: list = field(default_factory=list)                             # x columns of each extra load scenario
    cap_k: np.ndarray = field(default_factory=lambda: np.zeros(0))          # c_k, usable rate per replica
    m_k: np.ndarray = field(default_factory=lambda: np.zeros(0, int))       # model index of each candidate
    phase2_cost: np.ndarray = field(default_factory=lambda: np.zeros(0))    # full-length phase-2 objective

    @property
    def n_cols(self) -> int:
        return len(self.c)

    @property
    def n_rows(self) -> int:
        return self.A.shape[0]

    def with_objective(self, c: np.ndarray) -> "MilpArrays":
        return MilpArrays(**{**self.__dict__, "c": c})

    def with_row(self, coefs: np.ndarray, lo: float, hi: float, name: str) -> "MilpArrays":
        row = sp.csr_matrix(coefs.reshape(1, -1))
        return MilpArrays(**{**self.__dict__, "A": sp.vstack([self.A, row], format="csr"),
                             "row_lo": np.append(self.row_lo, lo), "row_hi": np.append(self.row_hi, hi),
                             "row_names": self.row_names + [name]})

    def with_column(self, name: str, lb: float, ub: float, cost: float = 0.0, integer: bool = False) -> "MilpArrays":
        """Append one column (all-zero in existing rows); returns the new model."""
        A = sp.hstack([self.A, sp.csr_matrix((self.n_rows, 1))], format="csr")
        return MilpArrays(**{**self.__dict__, "A": A, "c": np.append(self.c, cost), "lb": np.append(self.lb, lb),
                             "ub": np.append(self.ub, ub), "integer": np.append(self.integer, integer),
                             "col_names": self.col_names + [name],
                             "phase2_cost": np.append(self.phase2_cost, 0.0)})

    def with_rows(self, A_new: sp.spmatrix, lo: np.ndarray, hi: np.ndarray, names: list[str]) -> "MilpArrays":
        return MilpArrays(**{**self.__dict__, "A": sp.vstack([self.A, sp.csr_matrix(A_new)], format="csr"),
                             "row_lo": np.concatenate([self.row_lo, lo]), "row_hi": np.concatenate([self.row_hi, hi]),
                             "row_names": self.row_names + names})

    def to_lp(self) -> str:
        """CPLEX-LP text with the model's names (for `synergai plan --dump-lp`)."""
        lines = ["\\ synergai offline MILP", "Minimize", " obj: " + _expr(self.c, self.col_names) or "0", "Subject To"]
        A = self.A.tocsr()
        for i in range(self.n_rows):
            s, e = A.indptr[i], A.indptr[i + 1]
            expr = " + ".join(f"{v:.12g} {self.col_names[j]}" for j, v in zip(A.indices[s:e], A.data[s:e])).replace("+ -", "- ")
            lo, hi = self.row_lo[i], self.row_hi[i]
            if lo == hi:
                lines.append(f" {self.row_names[i]}: {expr} = {hi:.12g}")
            else:
                if np.isfinite(hi):
                    lines.append(f" {self.row_names[i]}: {expr} <= {hi:.12g}")
                if np.isfinite(lo):
                    lines.append(f" {self.row_names[i]}_lo: {expr} >= {lo:.12g}")
        lines.append("Bounds")
        for j, name in enumerate(self.col_names):
            ub = "+inf" if not np.isfinite(self.ub[j]) else f"{self.ub[j]:.12g}"
            lines.append(f" {self.lb[j]:.12g} <= {name} <= {ub}")
        gen = [n for n, i in zip(self.col_names, self.integer) if i]
        if gen:
            lines.append("General")
            lines.extend(" " + n for n in gen)
        lines.append("End")
        return "\n".join(lines) + "\n"


def _expr(c: np.ndarray, names: list[str]) -> str:
    return " + ".join(f"{v:.12g} {names[j]}" for j, v in enumerate(c) if v != 0).replace("+ -", "- ")


_SAFE = re.compile(r"[^A-Za-z0-9_.]+")


def _n(s: str) -> str:
    return _SAFE.sub("_", s)


def build_milp(c: Candidates, demands: list[tuple[float, float]], pool_caps: list[tuple[float, float, float, int]],
               opts: PlanOptions, cap_scale: np.ndarray | None = None) -> MilpArrays:
    """Build the arrays. ``demands[m] = (lam_m, w_m)``; ``pool_caps[p] = (cpu, mem, acc, nodes)`` per node.

    ``cap_scale[p, r]`` (default 1) shrinks pool capacity; the decode step uses it when
    the aggregate solution does not pack onto individual nodes.
    """
    K, M, P = len(c), len(c.models), len(c.pools)
    mk = np.asarray(c.m, dtype=np.int64)
    pk = np.asarray(c.p, dtype=np.int64)
    cap = np.asarray(c.cap_rps, dtype=float)
    nmax = np.asarray(c.nmax, dtype=float)
    res = np.asarray(c.res, dtype=float).reshape(K, 3)
    energy = np.asarray(c.energy_j, dtype=float)
    lam = np.array([d[0] for d in demands], dtype=float)
    w = np.array([d[1] for d in demands], dtype=float)
    C = np.array([[pc[0] * pc[3], pc[1] * pc[3], pc[2] * pc[3]] for pc in pool_caps], dtype=float).reshape(P, 3)
    if cap_scale is not None:
        C = C * cap_scale

    # power modes per pool: only pools whose candidates span more than one mode get z variables
    modes_by_pool: dict[int, list[str]] = {}
    for k in range(K):
        pm = c.records[k].power_mode
        if pm == UNSPECIFIED_MODE:
            continue
        lst = modes_by_pool.setdefault(int(pk[k]), [])
        if pm not in lst:
            lst.append(pm)
    zpairs = [(p, h) for p, hs in sorted(modes_by_pool.items()) if len(hs) > 1 for h in hs]
    Z = len(zpairs)
    zindex = {pair: i for i, pair in enumerate(zpairs)}

    # columns: y (K) | n (K) | x (K) | u (M) | z (Z)
    iy = np.arange(K)
    in_ = K + iy
    ix = 2 * K + iy
    iu = 3 * K + np.arange(M)
    iz = 3 * K + M + np.arange(Z)
    ncol = 3 * K + M + Z

    cfg_names = [f"{_n(c.models[mk[k]])},{_n(c.pools[pk[k]])},{_n(c.records[k].config_id)}" for k in range(K)]
    col_names = ([f"y({s})" for s in cfg_names] + [f"n({s})" for s in cfg_names] + [f"x({s})" for s in cfg_names]
                 + [f"u({_n(m)})" for m in c.models] + [f"z({_n(c.pools[p])},{_n(h)})" for p, h in zpairs])

    lb = np.zeros(ncol)
    ub = np.full(ncol, np.inf)
    ub[iy] = 1.0
    ub[in_] = nmax
    ub[ix] = np.minimum(lam[mk], cap * nmax) if K else ub[ix]
    ub[iu] = lam
    ub[iz] = 1.0
    integer = np.zeros(ncol, dtype=bool)
    integer[iy] = integer[in_] = integer[iz] = True

    rows_i, cols_j, vals = [], [], []
    row_lo, row_hi, row_names = [], [], []
    r0 = 0

    # C1 dem[m]
    rows_i += [mk + r0, r0 + np.arange(M)]
    cols_j += [ix, iu]
    vals += [np.ones(K), np.ones(M)]
    row_lo.append(lam)
    row_hi.append(lam)
    row_names += [f"dem({_n(m)})" for m in c.models]
    r0 += M

    # C2 util[k]
    rows_i += [r0 + iy, r0 + iy]
    cols_j += [ix, in_]
    vals += [np.ones(K), -cap]
    row_lo.append(np.full(K, -np.inf))
    row_hi.append(np.zeros(K))
    row_names += [f"util({s})" for s in cfg_names]
    r0 += K

    # C3 link[k]
    rows_i += [r0 + iy, r0 + iy]
    cols_j += [in_, iy]
    vals += [np.ones(K), -nmax]
    row_lo.append(np.full(K, -np.inf))
    row_hi.append(np.zeros(K))
    row_names += [f"link({s})" for s in cfg_names]
    r0 += K

    # C4 one[m,p]
    mp = mk * P + pk
    uniq, inv = np.unique(mp, return_inverse=True)
    rows_i.append(r0 + inv)
    cols_j.append(iy)
    vals.append(np.ones(K))
    row_lo.append(np.full(len(uniq), -np.inf))
    row_hi.append(np.ones(len(uniq)))
    row_names += [f"one({_n(c.models[u // P])},{_n(c.pools[u % P])})" for u in uniq]
    r0 += len(uniq)

    # C5 cap[p,r]: only rows that some candidate touches
    used_p = np.unique(pk)
    prow = {int(p): i for i, p in enumerate(used_p)}
    for ri, rname in enumerate(RES):
        nz = res[:, ri] > 0
        if not nz.any():
            continue
        local = np.array([prow[int(p)] for p in pk[nz]], dtype=np.int64)
        rows_i.append(r0 + local)
        cols_j.append(in_[nz])
        vals.append(res[nz, ri])
        row_lo.append(np.full(len(used_p), -np.inf))
        row_hi.append(C[used_p, ri])
        row_names += [f"cap({_n(c.pools[p])},{rname})" for p in used_p]
        r0 += len(used_p)

    # C6 mode[k], onemode[p]
    if Z:
        ks = [k for k in range(K) if (int(pk[k]), c.records[k].power_mode) in zindex]
        ks_arr = np.array(ks, dtype=np.int64)
        zk = np.array([iz[zindex[(int(pk[k]), c.records[k].power_mode)]] for k in ks], dtype=np.int64)
        rr = r0 + np.arange(len(ks))
        rows_i += [rr, rr]
        cols_j += [iy[ks_arr], zk]
        vals += [np.ones(len(ks)), -np.ones(len(ks))]
        row_lo.append(np.full(len(ks), -np.inf))
        row_hi.append(np.zeros(len(ks)))
        row_names += [f"mode({cfg_names[k]})" for k in ks]
        r0 += len(ks)
        zp = sorted({p for p, _ in zpairs})
        zrow = {p: i for i, p in enumerate(zp)}
        rows_i.append(r0 + np.array([zrow[p] for p, _ in zpairs], dtype=np.int64))
        cols_j.append(iz)
        vals.append(np.ones(Z))
        row_lo.append(np.full(len(zp), -np.inf))
        row_hi.append(np.ones(len(zp)))
        row_names += [f"onemode({_n(c.pools[p])})" for p in zp]
        r0 += len(zp)

    A = sp.csr_matrix((np.concatenate(vals) if vals else np.zeros(0),
                       (np.concatenate(rows_i) if rows_i else np.zeros(0, int),
                        np.concatenate(cols_j) if cols_j else np.zeros(0, int))), shape=(r0, ncol))

    phase1 = np.zeros(ncol)
    phase1[iu] = w
    phase2 = np.zeros(ncol)
    phase2[ix] = energy
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(C[pk] > 0, res / C[pk], 0.0) if K else np.zeros((0, 3))
    phase2[in_] = opts.resource_weight * frac.sum(axis=1)
    obj = phase1 if opts.objective == "lexicographic" else phase1 * opts.unserved_weight + phase2

    out = MilpArrays(c=obj, A=A, row_lo=np.concatenate(row_lo), row_hi=np.concatenate(row_hi), lb=lb, ub=ub,
                     integer=integer, col_names=col_names, row_names=row_names, iy=iy, in_=in_, ix=ix, iu=iu,
                     unserved_cost=w, phase2_cost=phase2, iu_all=iu.copy(), u_cost_all=w.copy(), cap_k=cap, m_k=mk)
    scen = list(opts.load_scenarios) if opts.load_scenarios else [(1.0, 1.0)]
    if len(scen) > 1:
        out = _add_load_scenarios(out, c, lam, w, cap, energy, scen, opts)
    return out


def _add_load_scenarios(m: MilpArrays, c: Candidates, lam, w, cap, energy, scen, opts: PlanOptions) -> MilpArrays:
    """Scenario blocks (family C9): the same configurations and replicas must also route ``f_s lam_m``.

    For each extra load scenario s: columns ``x_{k,s}``, ``u_{m,s}``; rows ``dem[m,s]`` and
    ``util[k,s]``; the unserved objective becomes ``sum_s p_s sum_m w_m u_{m,s}`` and phase 2's
    energy the expectation over scenarios.  The nominal scenario (factor 1) keeps the original
    columns, which the plan reports as its routing.
    """
    K, M = len(c), len(c.models)
    p0 = next((p for f, p in scen if f == 1.0), None)
    if p0 is None:
        raise ValueError("load_scenarios must contain the nominal load (factor 1.0)")
    total = sum(p for _, p in scen)
    mk = np.asarray(c.m, dtype=np.int64)
    A, lo, hi, lb, ub, cost, names, rnames = m.A, [m.row_lo], [m.row_hi], [m.lb], [m.ub], [m.c], list(m.col_names), list(m.row_names)
    integer = [m.integer]
    phase2 = [m.phase2_cost.copy()]
    phase2[0][m.ix] *= p0 / total
    obj0 = m.c.copy()
    obj0[m.iu] *= p0 / total
    cost = [obj0]
    iu_all = [m.iu]
    u_cost = [w * p0 / total]
    ncol = m.n_cols
    blocks = []
    for s, (f, p) in enumerate(scen):
        if f == 1.0:
            continue
        ix_s = ncol + np.arange(K)
        iu_s = ncol + K + np.arange(M)
        ncol += K + M
        blocks.append((ix_s, iu_s, f, p))
    # assemble with one sparse build per scenario (columns appended after the nominal model)
    A = A.tocsr()
    ncol_final = ncol
    A = sp.hstack([A, sp.csr_matrix((A.shape[0], ncol_final - m.n_cols))], format="csr")
    extra_rows = []
    for ix_s, iu_s, f, p in blocks:
        ri, cj, v = [], [], []
        ri += [mk, np.arange(M)]
        cj += [ix_s, iu_s]
        v += [np.ones(K), np.ones(M)]
        ri += [M + np.arange(K), M + np.arange(K)]
        cj += [ix_s, m.in_]
        v += [np.ones(K), -cap]
        extra_rows.append(sp.csr_matrix((np.concatenate(v), (np.concatenate(ri), np.concatenate(cj))),
                                        shape=(M + K, ncol_final)))
        lo += [lam * f, np.full(K, -np.inf)]
        hi += [lam * f, np.zeros(K)]
        lb += [np.zeros(K + M)]
        ub += [np.minimum(lam[mk] * f, cap * m.ub[m.in_]), lam * f]
        integer += [np.zeros(K + M, dtype=bool)]
        tag = f"s{f:g}"
        names += [f"x({n[2:-1]},{tag})" for n in m.col_names[m.ix[0]:m.ix[0] + K]] if K else []
        names += [f"u({n[2:-1]},{tag})" for n in (m.col_names[i] for i in m.iu)]
        rnames += [f"dem({n[2:-1]},{tag})" for n in (m.col_names[i] for i in m.iu)]
        rnames += [f"util({n[2:-1]},{tag})" for n in m.col_names[m.ix[0]:m.ix[0] + K]] if K else []
        cs = np.zeros(K + M)
        cs[K:] = (w * p / total) if opts.objective == "lexicographic" else (w * p / total) * opts.unserved_weight
        if opts.objective != "lexicographic":
            cs[:K] = energy * p / total
        cost.append(cs)
        p2 = np.zeros(K + M)
        p2[:K] = energy * p / total
        phase2.append(p2)
        iu_all.append(iu_s)
        u_cost.append(w * p / total)
    A = sp.vstack([A] + extra_rows, format="csr")
    return MilpArrays(c=np.concatenate(cost), A=A, row_lo=np.concatenate(lo), row_hi=np.concatenate(hi),
                      lb=np.concatenate(lb), ub=np.concatenate(ub), integer=np.concatenate(integer), col_names=names,
                      row_names=rnames, iy=m.iy, in_=m.in_, ix=m.ix, iu=m.iu, unserved_cost=m.unserved_cost,
                      phase2_cost=np.concatenate(phase2), iu_all=np.concatenate(iu_all), u_cost_all=np.concatenate(u_cost),
                      ix_scen=[b[0] for b in blocks], cap_k=m.cap_k, m_k=m.m_k)
