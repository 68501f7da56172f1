r"""Model step: the offline MILP as arrays (vectorised; named rows and columns so a dumped LP reads like the maths).

Notation
--------
- ``m`` models, ``p`` node pools of ``N_p`` identical nodes with per-node capacity ``K_pr`` for
  ``r`` in {cpu, mem, acc} and idle power ``pi_p`` (W per powered node), ``h`` power modes
  (``default``, an undeclared mode, is a mode of its own), ``s`` load scenarios with factor ``f_s``
  and probability ``P_s`` (one scenario ``f = 1`` unless burst scenarios are given).
- ``k`` a dedicated candidate (model ``m(k)``, pool ``p(k)``, one configuration), ``j`` a shared
  candidate (a configuration of ``m(j)`` loadable on the shared servers of ``p(j)``); both
  already meet the deadline at zero load (the data step removed the others: this is the
  deadline and per-node-fit family, applied as a domain restriction).
- ``lam_m`` rate (req/s), ``w_m`` priority; ``c_k`` usable rate of one dedicated replica (the
  service model's capacity times the largest utilisation whose response quantile meets the
  deadline); ``e_k, e_j`` energy per request (J); ``a_kr`` per-replica resource request, ``b_pr``
  the resources of one shared server (one accelerator and its share of the node, or a whole
  CPU node); ``w_j`` server-seconds per request, ``a_j`` residual work of one call (s^2; per req/s when
  batches hold one request, the worst case: ``service.shared_residual``), ``B_j`` the queueing budget
  (the largest wait scale meeting deadline - RTT, ``service.shared_budget``), ``G = G(rho_bar)`` the
  queueing factor at the shared servers' utilisation cap ``rho_bar`` (see ``service.py``);
  ``mu_j`` memory footprint; ``N_k`` replica bound derived from
  the largest rate the model can be asked to carry (``max_s f_s * alpha_max * lam_m``).

Variables
---------
``y_k`` in {0,1} configuration chosen for dedicated replicas; ``n_k`` in Z+ replicas;
``v_j`` in {0,1} configuration loaded on the pool's shared servers; ``sigma_p`` in Z+ shared
servers; ``x_{k,s}, x_{j,s} >= 0`` routed rates (req/s) per scenario; ``u_{m,s} >= 0`` unserved
rate; ``o_p`` in {0..N_p} powered nodes; ``z_ph`` in {0,1} pool ``p`` runs mode ``h`` (pools whose
candidates span several modes); headroom phase: ``alpha_m`` in [1, alpha_max], ``t``, and a
routing block ``x_{k,H}, x_{j,H}``.

Constraints
-----------
- C1 ``dem[m,s]``:   ``sum_k x_{k,s} + sum_j x_{j,s} + u_{m,s} = f_s lam_m``      demand conservation
- C2 ``util[k,s]``:  ``x_{k,s} - c_k n_k <= 0``                                  dedicated utilisation cap
- C3 ``link[k]``:    ``n_k - N_k y_k <= 0``                                       replicas only for the chosen config
- C4 ``one[m,p]``:   ``sum_{k in (m,p)} y_k <= 1``; ``sone[m,p]``: ``sum_{j in (m,p)} v_j <= 1``
- C5 ``cap[p,r]``:   ``sum_k a_kr n_k + b_pr sigma_p - K_pr o_p <= 0``, ``o_p <= N_p``   capacity of powered nodes
- C5b ``big[p,r,j]``: ``sum_{servers larger than K_pr/(j+1)} (n_k or sigma_p) - j o_p <= 0`` for j = 1, 2, 3
  (a node holds at most j of them: valid for any packing, and it cuts aggregate solutions that cannot pack)
- C6 ``mode[k]``, ``smode[j]``: ``y_k - z_{p,h(k)} <= 0``, ``v_j - z_{p,h(j)} <= 0``; ``onemode[p]``: ``sum_h z_ph <= 1``
- C6b ``sslot[j]``: ``v_j - zc_{p,c(j)} <= 0``; ``oneslot[p]``: ``sum_c zc_pc <= 1``: the configurations a pool's
  shared servers load have one slot count ``c`` (a call of a larger share than a running one would idle the
  device while it drains -- lost capacity the linear rows below do not count; ``service.shared_law`` does)
- S1 ``sutil[p,s]``: ``sum_{j in p} w_j x_{j,s} - rho_bar sigma_p <= 0``          shared utilisation cap
- S2 ``sload[j,s]``: ``x_{j,s} - f_s lam_m v_j <= 0``                              route only to loaded models
- S3 ``smem[p]``:    ``sum_{j in p} mu_j v_j <= b_p,mem``                         loaded models fit in memory
- S4 ``sq[m,p,s]``:  ``sum_{j in p} (G a_j - B_i w_j) x_{j,s} + M_mps sum_{i in (m,p), B_i = B} v_i <= M_mps``,
  one row per budget ``B`` of m's shared candidates on p (``sq[m,p,k]`` for the k-th): the row of the
  configuration actually loaded holds with its own budget
  (stated as ``Bref_p A_ps - B_mp W_ps + ...`` over the pool aggregates ``W_ps = sum_j w_j x_{j,s}`` (``wdef``)
  and ``A_ps = sum_j G a_j x_{j,s} / Bref_p`` (``adef``; ``Bref_p`` the pool's largest ``B_j``), continuous columns: the same rows with a few entries each
  instead of the pool's whole sum; S1 reads ``W_ps`` too)
  every model loaded on a shared server meets its deadline at the mixed queue (sufficient
  condition, linear and homogeneous, so it holds per server when traffic is split evenly;
  ``M_mps`` = the largest value the sum can take, so the row is void when m is not loaded)
- P  ``node[p,i,r]``: lazily, for pools whose aggregate solution does not pack onto nodes,
  per-node copies ``n_{k,i}``, ``sigma_{p,i}``, ``on_{p,i}`` with ``n_k = sum_i n_{k,i}``,
  ``sigma_p = sum_i sigma_{p,i}``, ``o_p = sum_i on_{p,i}``, ``sum_k a_kr n_{k,i} + b_pr sigma_{p,i} <= K_pr on_{p,i}``
  and ``on_{p,i} >= on_{p,i+1}`` (symmetry): exact packing (``packing.py``).

Objective (lexicographic: a solve per phase, each holding the earlier optima; or weighted, one solve)
---------------------------------------------------------------------------------------------------
1. ``min sum_s P_s sum_m w_m u_{m,s}``                                   (expected priority-weighted unserved rate)
H. headroom, for the models phase 1 serves (``s*_m`` their nominal routed rate): a routing block
   ``dem[m,H]: sum_k x_{k,H} + sum_j x_{j,H} - s*_m alpha_m = 0`` under C2, S1, S2 and S4 for the block
   (every served model's load grows by its own ``alpha_m`` at once).  The dedicated rates of the block are
   substituted out (exactly): ``dem[m,H]: sum_k c_k n_k + sum_j x_{j,H} >= s*_m alpha_m`` and
   ``hsh[m]: sum_j x_{j,H} <= s*_m alpha_m`` (any dedicated capacity beyond the need is simply not used); H1 ``max t``, ``t <= alpha_m``
   (max-min: the worst-off model's growth factor is as large as possible).  Optionally
   (``headroom_fill``) H2 ``max sum_m alpha_m`` with ``t >= t*``: ties of the max-min broken by the sum,
   an approximation of the full lexicographic max-min whose guarantee is that the smallest factor is
   still the max-min optimum ``t*``.
2. ``min sum_s P_s (sum_k e_k x_{k,s} + sum_j e_j x_{j,s}) + sum_p pi_p o_p + beta sum (server footprints)``
   (serving power plus idle power of every powered node, W; then resources), subject to
   ``sum_s P_s sum_m w_m u_{m,s} <= OPT_1 (1+eps) + eps`` (C7) and ``t >= t* (1-eps)`` (C8; with
   ``headroom_fill`` every ``alpha_m >= alpha*_m (1-eps)``).  Headroom is not free: a replica held for it
   powers its node, and that idle power is in this objective.
Weighted mode minimises ``W_u * (1) + (2)`` in one solve (no headroom phase).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .candidates import RES, Candidates, PlanOptions

Agg = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Pools of a routing block whose shared rows read aggregates, and their W_p and A_p columns (same order)."""


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

    @property
    def n_cols(self) -> int:
        return len(self.c)

    @property
    def n_rows(self) -> int:
        return self.A.shape[0]

    def with_objective(self, c: np.ndarray) -> MilpArrays:
        return MilpArrays(**{**self.__dict__, "c": c})

    def to_lp(self) -> str:
        """CPLEX-LP text with the model's names (for `synergai plan --dump-lp`)."""
        lines = [
            "\\ synergai offline MILP",
            "Minimize",
            " obj: " + (_expr(self.c, self.col_names) or "0"),
            "Subject To",
        ]
        A = self.A.tocsr()
        for i in range(self.n_rows):
            s, e = A.indptr[i], A.indptr[i + 1]
            expr = " + ".join(f"{v:.12g} {self.col_names[j]}" for j, v in zip(A.indices[s:e], A.data[s:e])).replace(
                "+ -", "- "
            )
            expr = expr or "0 " + self.col_names[0]
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


class Builder:
    """Accumulates named column blocks and row families as sparse triplets."""

    def __init__(self) -> None:
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.col_names: list[str] = []
        self.ncol = 0
        self.ri: list[np.ndarray] = []
        self.cj: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.row_lo: list[np.ndarray] = []
        self.row_hi: list[np.ndarray] = []
        self.row_names: list[str] = []
        self.nrow = 0

    def cols(self, names: list[str], lb, ub, integer: bool = False) -> np.ndarray:
        n = len(names)
        idx = self.ncol + np.arange(n)
        self.lb.append(np.broadcast_to(np.asarray(lb, dtype=float), (n,)).copy())
        self.ub.append(np.broadcast_to(np.asarray(ub, dtype=float), (n,)).copy())
        self.integer.append(np.full(n, integer))
        self.col_names += names
        self.ncol += n
        return idx

    def ub_of(self, col: int) -> float:
        start = 0
        for blk in self.ub:
            if col < start + len(blk):
                return float(blk[col - start])
            start += len(blk)
        raise IndexError(col)

    def rows(self, names: list[str], lo, hi) -> int:
        """Open a family of rows; returns the index of its first row (entries added with :meth:`add`)."""
        n = len(names)
        r0 = self.nrow
        self.row_lo.append(np.broadcast_to(np.asarray(lo, dtype=float), (n,)).copy())
        self.row_hi.append(np.broadcast_to(np.asarray(hi, dtype=float), (n,)).copy())
        self.row_names += names
        self.nrow += n
        return r0

    def add(self, rows, cols, vals) -> None:
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        vals = np.broadcast_to(np.asarray(vals, dtype=float), rows.shape).ravel()
        self.ri.append(rows)
        self.cj.append(cols)
        self.v.append(vals.copy())

    def arrays(self, c: np.ndarray | None = None) -> MilpArrays:
        A = sp.csr_matrix(
            (
                np.concatenate(self.v) if self.v else np.zeros(0),
                (
                    np.concatenate(self.ri) if self.ri else np.zeros(0, int),
                    np.concatenate(self.cj) if self.cj else np.zeros(0, int),
                ),
            ),
            shape=(self.nrow, self.ncol),
        )
        A.sum_duplicates()
        return MilpArrays(
            c=np.zeros(self.ncol) if c is None else c,
            A=A,
            row_lo=np.concatenate(self.row_lo) if self.row_lo else np.zeros(0),
            row_hi=np.concatenate(self.row_hi) if self.row_hi else np.zeros(0),
            lb=np.concatenate(self.lb) if self.lb else np.zeros(0),
            ub=np.concatenate(self.ub) if self.ub else np.zeros(0),
            integer=np.concatenate(self.integer) if self.integer else np.zeros(0, bool),
            col_names=list(self.col_names),
            row_names=list(self.row_names),
        )


@dataclass
class Layout:
    """Where each variable block lives, for the phases and the decode step."""

    K: int
    J: int
    M: int
    P: int
    iy: np.ndarray
    in_: np.ndarray
    iv: np.ndarray
    isig: np.ndarray  # per pool (-1 where the pool has no shared candidates)
    io: np.ndarray  # per pool
    ix: list[np.ndarray]  # per scenario: dedicated routed rates
    ixs: list[np.ndarray]  # per scenario: shared routed rates
    iu: list[np.ndarray]  # per scenario: unserved
    scen: list[tuple[float, float]]
    nominal: int
    iagg: list[Agg]  # per scenario: pools stated over aggregates, their W_p and A_p columns
    u_cost: np.ndarray  # full-length phase-1 objective
    energy_cost: np.ndarray  # full-length phase-2 objective
    node_level: dict[int, dict] = field(default_factory=dict)


def build_milp(
    c: Candidates, demands: list[tuple[float, float]], pools: list, opts: PlanOptions, node_level: tuple[int, ...] = ()
) -> tuple[Builder, Layout]:
    """Build families C1-C6, S1-S4 (and P for the pools in ``node_level``); objectives are set per phase.

    ``demands[m] = (lam_m, w_m)``; ``pools[p]`` a ``NodePool``.
    """
    d, s = c.ded, c.sh
    K, J, M, P = len(d), len(s), len(c.models), len(c.pools)
    lam = np.array([x[0] for x in demands], dtype=float)
    w = np.array([x[1] for x in demands], dtype=float)
    mk = np.asarray(d.m, dtype=np.int64)
    pk = np.asarray(d.p, dtype=np.int64)
    mj = np.asarray(s.m, dtype=np.int64)
    pj = np.asarray(s.p, dtype=np.int64)
    capk = np.asarray(d.cap, dtype=float)
    nmax = np.asarray(d.nmax, dtype=float)
    res = np.asarray(d.res, dtype=float).reshape(K, 3)
    Kcap = np.array([[pl.cpu, pl.memory_mb, float(pl.accelerators)] for pl in pools], dtype=float).reshape(P, 3)
    nodes = np.array([pl.nodes for pl in pools], dtype=float)
    scen = [(float(f), float(pr)) for f, pr in (opts.load_scenarios or [(1.0, 1.0)])]
    if not any(f == 1.0 for f, _ in scen):
        raise ValueError("load_scenarios must contain the nominal load (factor 1.0)")
    tot = sum(pr for _, pr in scen)
    scen = [(f, pr / tot) for f, pr in scen]
    nominal = next(i for i, (f, _) in enumerate(scen) if f == 1.0)

    kn = [f"{_n(c.models[mk[k]])},{_n(c.pools[pk[k]])},{_n(d.records[k].config_id)}" for k in range(K)]
    jn = [f"{_n(c.models[mj[j]])},{_n(c.pools[pj[j]])},{_n(s.records[j].config_id)}" for j in range(J)]
    mn = [_n(x) for x in c.models]
    pn = [_n(x) for x in c.pools]

    b = Builder()
    iy = b.cols([f"y({x})" for x in kn], 0, 1, True)
    in_ = b.cols([f"n({x})" for x in kn], 0, nmax, True)
    iv = b.cols([f"v({x})" for x in jn], 0, 1, True)
    sh_pools = sorted(set(pj.tolist()))
    isig = np.full(P, -1, dtype=np.int64)
    if sh_pools:
        sig_ub = [nodes[p] * s.per_node[p] for p in sh_pools]
        isig[sh_pools] = b.cols([f"sigma({pn[p]})" for p in sh_pools], 0, sig_ub, True)
    used = sorted(set(pk.tolist()) | set(sh_pools))
    io = np.full(P, -1, dtype=np.int64)
    if used:
        io[used] = b.cols([f"o({pn[p]})" for p in used], 0, nodes[used], True)

    ix, ixs, iu = [], [], []
    for si, (f, _) in enumerate(scen):
        tag = "" if si == nominal else f",s{f:g}"
        ix.append(b.cols([f"x({x}{tag})" for x in kn], 0, np.minimum(f * lam[mk], capk * nmax) if K else 0))
        ixs.append(b.cols([f"xs({x}{tag})" for x in jn], 0, f * lam[mj] if J else 0))
        iu.append(b.cols([f"u({x}{tag})" for x in mn], 0, f * lam))

    # C1 dem[m,s]
    for si, (f, _) in enumerate(scen):
        tag = "" if si == nominal else f",s{f:g}"
        r0 = b.rows([f"dem({x}{tag})" for x in mn], f * lam, f * lam)
        b.add(r0 + mk, ix[si], 1.0)
        b.add(r0 + mj, ixs[si], 1.0)
        b.add(r0 + np.arange(M), iu[si], 1.0)
    # C2 util[k,s]
    for si, (f, _) in enumerate(scen):
        tag = "" if si == nominal else f",s{f:g}"
        _util_rows(b, kn, tag, ix[si], in_, capk)
    # C3 link[k]
    if K:
        r0 = b.rows([f"link({x})" for x in kn], -np.inf, 0.0)
        b.add(r0 + np.arange(K), in_, 1.0)
        b.add(r0 + np.arange(K), iy, -nmax)
    # C4 one[m,p], sone[m,p]
    for name, mm, pp, cols in (("one", mk, pk, iy), ("sone", mj, pj, iv)):
        if len(cols):
            key = mm * P + pp
            uniq, inv = np.unique(key, return_inverse=True)
            r0 = b.rows([f"{name}({mn[u // P]},{pn[u % P]})" for u in uniq], -np.inf, 1.0)
            b.add(r0 + inv, cols, 1.0)
    # C5 cap[p,r]
    for ri, rname in enumerate(RES):
        rows_p = [p for p in used if (res[pk == p, ri] > 0).any() or (isig[p] >= 0 and s.slice[p][ri] > 0)]
        if not rows_p:
            continue
        r0 = b.rows([f"cap({pn[p]},{rname})" for p in rows_p], -np.inf, 0.0)
        at = {p: r0 + i for i, p in enumerate(rows_p)}
        nz = np.array([res[k, ri] > 0 and int(pk[k]) in at for k in range(K)], dtype=bool)
        if nz.any():
            b.add([at[int(p)] for p in pk[nz]], in_[nz], res[nz, ri])
        for p in rows_p:
            if isig[p] >= 0 and s.slice[p][ri] > 0:
                b.add([at[p]], [isig[p]], s.slice[p][ri])
            b.add([at[p]], [io[p]], -Kcap[p, ri])
    # C5b big[p,r,j]: a node holds at most j servers larger than 1/(j+1) of its resource r (valid for any
    # packing; it cuts aggregate solutions that cannot pack, so fewer pools need the node-level model)
    for p in used:
        items = [(in_[k], res[k]) for k in np.flatnonzero(pk == p)]
        if isig[p] >= 0:
            items.append((isig[p], np.asarray(s.slice[p], dtype=float)))
        for ri, rname in enumerate(RES):
            if Kcap[p, ri] <= 0:
                continue
            for j in (1, 2, 3):
                big = [col for col, a in items if a[ri] > Kcap[p, ri] / (j + 1) + 1e-9]
                if len(big) < 2:
                    continue
                r = b.rows([f"big({pn[p]},{rname},{j})"], -np.inf, 0.0)
                b.add(np.full(len(big), r), big, 1.0)
                b.add([r], [io[p]], -float(j))
    # C6 power modes, C6b one slot count per pool's shared servers
    _modes(b, c, pk, pj, iy, iv, pn)
    _slot_classes(b, c, pj, iv, pn)
    # S1-S4 shared servers
    iagg: list[Agg] = []
    if J:
        work = np.asarray(s.work, dtype=float)
        resid = np.asarray(s.resid, dtype=float)
        budget = np.asarray(s.budget, dtype=float)
        mem = np.asarray(s.mem, dtype=float)
        for si, (f, _) in enumerate(scen):
            tag = "" if si == nominal else f",s{f:g}"
            iagg.append(_shared_rows(b, c, tag, ixs[si], iv, isig, f * lam, work, resid, budget, mn, pn, jn))
        r0 = b.rows([f"smem({pn[p]})" for p in sh_pools], -np.inf, [s.slice[p][1] for p in sh_pools])
        at = {p: r0 + i for i, p in enumerate(sh_pools)}
        b.add([at[int(p)] for p in pj], iv, mem)
    # P node-level packing for the given pools
    lay = Layout(
        K=K,
        J=J,
        M=M,
        P=P,
        iy=iy,
        in_=in_,
        iv=iv,
        isig=isig,
        io=io,
        ix=ix,
        ixs=ixs,
        iu=iu,
        scen=scen,
        nominal=nominal,
        iagg=iagg,
        u_cost=np.zeros(0),
        energy_cost=np.zeros(0),
    )
    for p in node_level:
        _node_level(b, lay, c, p, pools[p], res, pn)

    # objectives (full length, after every column exists)
    n = b.ncol
    u_cost = np.zeros(n)
    e_cost = np.zeros(n)
    e_ded = np.asarray(d.energy, dtype=float)
    e_sh = np.asarray(s.energy, dtype=float)
    for si, (f, pr) in enumerate(scen):
        u_cost[iu[si]] = pr * w
        e_cost[ix[si]] = pr * e_ded
        e_cost[ixs[si]] = pr * e_sh
    for p in used:
        e_cost[io[p]] = pools[p].idle_power_w
    with np.errstate(divide="ignore", invalid="ignore"):
        tot_cap = Kcap * nodes[:, None]
        frac = np.where(tot_cap[pk] > 0, res / tot_cap[pk], 0.0) if K else np.zeros((0, 3))
    e_cost[in_] += opts.resource_weight * frac.sum(axis=1)
    for p in sh_pools:
        sl = np.array(s.slice[p])
        with np.errstate(divide="ignore", invalid="ignore"):
            e_cost[isig[p]] += opts.resource_weight * float(np.where(tot_cap[p] > 0, sl / tot_cap[p], 0.0).sum())
    lay.u_cost, lay.energy_cost = u_cost, e_cost
    return b, lay


def _util_rows(b: Builder, kn: list[str], tag: str, ixk: np.ndarray, in_: np.ndarray, capk: np.ndarray) -> None:
    if not len(ixk):
        return
    r0 = b.rows([f"util({x}{tag})" for x in kn], -np.inf, 0.0)
    b.add(r0 + np.arange(len(ixk)), ixk, 1.0)
    b.add(r0 + np.arange(len(ixk)), in_, -capk)


def _shared_rows(
    b: Builder,
    c: Candidates,
    tag: str,
    ixj: np.ndarray,
    iv: np.ndarray,
    isig: np.ndarray,
    lam_f: np.ndarray,
    work,
    resid,
    budget,
    mn,
    pn,
    jn,
) -> Agg:
    """S1 sutil[p], S2 sload[j], S4 sq[m,p] for one routing block (scenario or headroom); returns the pools
    stated over aggregates and the aggregate columns (W_p, A_p) in that order."""
    s = c.sh
    J = len(s)
    mj = np.asarray(s.m, dtype=np.int64)
    pj = np.asarray(s.p, dtype=np.int64)
    pools = sorted(set(pj.tolist()))
    # S4 rows: one per (model, pool, budget) -- the loaded configuration's own budget (configurations of a
    # model with equal budgets share a row; C4's sone[m,p] loads at most one of them)
    mpb = sorted(
        {(int(m), int(p), float(budget[j])) for j, (m, p) in enumerate(zip(mj, pj))}, key=lambda t: (t[1], t[0], t[2])
    )
    by_pool: dict[int, np.ndarray] = {p: np.flatnonzero(pj == p) for p in pools}
    n_mp = {p: sum(1 for _, q, _ in mpb if q == p) for p in pools}
    # aggregates W_p = sum_j w_j x_j and A_p = sum_j G a_j x_j / Bref_p (an exact reformulation) where they save
    # entries: the pool's S4 rows then read two columns each instead of repeating the pool's whole sum
    agg = np.array([p for p in pools if n_mp[p] * len(by_pool[p]) > 2 * (2 * len(by_pool[p]) + 3 * n_mp[p])], int)
    bref = _agg_ref(c, budget, agg)
    iw = b.cols([f"wsum({pn[p]}{tag})" for p in agg], 0, np.inf)
    ia = b.cols([f"asum({pn[p]}{tag})" for p in agg], 0, np.inf)
    col_w = dict(zip(agg.tolist(), iw.tolist()))
    col_a = dict(zip(agg.tolist(), ia.tolist()))
    ref = dict(zip(agg.tolist(), bref.tolist()))
    if len(agg):
        sel = np.isin(pj, agg)
        pos = np.searchsorted(agg, pj[sel])
        r0 = b.rows([f"wdef({pn[p]}{tag})" for p in agg], 0.0, 0.0)
        b.add(r0 + pos, ixj[sel], work[sel])
        b.add(r0 + np.arange(len(agg)), iw, -1.0)
        # A_p in units of the pool's loosest budget (of the order of W_p): at its raw size (s^2 per s, ~1e-3) it
        # would sit on the 1e-3 grid of a back-end that discretises rates (CP-SAT)
        r0 = b.rows([f"adef({pn[p]}{tag})" for p in agg], 0.0, 0.0)
        b.add(r0 + pos, ixj[sel], c.sh.g * resid[sel] / bref[pos])
        b.add(r0 + np.arange(len(agg)), ia, -1.0)
    # S1
    r0 = b.rows([f"sutil({pn[p]}{tag})" for p in pools], -np.inf, 0.0)
    at = {p: r0 + i for i, p in enumerate(pools)}
    dense = ~np.isin(pj, agg)
    b.add([at[int(p)] for p in pj[dense]], ixj[dense], work[dense])
    b.add([at[p] for p in agg.tolist()], iw, 1.0)
    for p in pools:
        b.add([at[p]], [isig[p]], -c.rho_bar)
    # S2 (lam_f may be a per-model bound; for the headroom block it is alpha_max * s*)
    r0 = b.rows([f"sload({x}{tag})" for x in jn], -np.inf, 0.0)
    b.add(r0 + np.arange(J), ixj, 1.0)
    b.add(r0 + np.arange(J), iv, -lam_f[mj])
    # S4: one row per (m, p, B) with shared candidates, over every shared candidate of p (or its aggregates)
    sig_max = {p: float(b.ub_of(isig[p])) for p in pools}
    names, rows, cols, vals, his = [], [], [], [], []
    vrows, vcols, vvals = [], [], []
    seen: dict[tuple[int, int], int] = {}
    for i, (m, p, B) in enumerate(mpb):
        js = by_pool[p]
        own = js[(mj[js] == m) & (budget[js] == B)]
        k = seen[(m, p)] = seen.get((m, p), -1) + 1
        coef = c.sh.g * resid[js] - B * work[js]
        pos_c = np.maximum(coef, 0.0)
        # the largest the sum can be: each rate is bounded by its demand and, jointly, by the servers' work
        # capacity sum_j w_j x_j <= rho_bar sigma_max (a knapsack: the best ratio fills it)
        big = min(float(pos_c @ lam_f[mj[js]]), c.rho_bar * sig_max[p] * float((pos_c / work[js]).max()))
        names.append(f"sq({mn[m]},{pn[p]}{',' + str(k) if k else ''}{tag})")
        if p in col_w:  # Bref_p A_p - B_mp W_p
            rows.append(np.full(2, i))
            cols.append(np.array([col_a[p], col_w[p]]))
            vals.append(np.array([ref[p], -B]))
        else:
            rows.append(np.full(len(js), i))
            cols.append(ixj[js])
            vals.append(coef)
        his.append(big)
        vrows.append(np.full(len(own), i))
        vcols.append(iv[own])
        vvals.append(np.full(len(own), big))
    if mpb:
        r0 = b.rows(names, -np.inf, np.array(his))
        b.add(r0 + np.concatenate(rows), np.concatenate(cols), np.concatenate(vals))
        b.add(r0 + np.concatenate(vrows), np.concatenate(vcols), np.concatenate(vvals))
    return agg, iw, ia


def _modes(b: Builder, c: Candidates, pk, pj, iy, iv, pn) -> None:
    """C6: one power mode per pool, over dedicated and shared candidates (``default`` is its own mode)."""
    _one_per_pool(
        b, pn, "z", "onemode", [("mode", pk, c.ded.mode, iy, c.ded.records), ("smode", pj, c.sh.mode, iv, c.sh.records)]
    )


def _slot_classes(b: Builder, c: Candidates, pj, iv, pn) -> None:
    """C6b: the shared configurations loaded on a pool have one slot count (pools offering several)."""
    _one_per_pool(b, pn, "zc", "oneslot", [("sslot", pj, c.sh.slots, iv, c.sh.records)])


def _one_per_pool(b: Builder, pn, var: str, one: str, blocks) -> None:
    """``x_i - z_{p,h(i)} <= 0`` per candidate and ``sum_h z_ph <= 1`` per pool, for pools whose candidates
    span several classes ``h``; ``blocks`` = [(row name, pool per candidate, class per candidate, decision
    columns, records), ...]."""
    classes: dict[int, list] = {}
    for _, pp, hh, _, _ in blocks:
        for p, h in zip(pp.tolist(), hh):
            lst = classes.setdefault(int(p), [])
            if h not in lst:
                lst.append(h)
    pairs = [(p, h) for p, hs in sorted(classes.items()) if len(hs) > 1 for h in hs]
    if not pairs:
        return
    iz = b.cols([f"{var}({pn[p]},{_n(str(h))})" for p, h in pairs], 0, 1, True)
    zi = {pair: iz[i] for i, pair in enumerate(pairs)}
    for name, pp, hh, cols, labels in blocks:
        sel = [i for i in range(len(cols)) if (int(pp[i]), hh[i]) in zi]
        if not sel:
            continue
        r0 = b.rows(
            [f"{name}({pn[int(pp[i])]},{_n(labels[i].model)},{_n(labels[i].config_id)})" for i in sel], -np.inf, 0.0
        )
        b.add(r0 + np.arange(len(sel)), cols[sel], 1.0)
        b.add(r0 + np.arange(len(sel)), [zi[(int(pp[i]), hh[i])] for i in sel], -1.0)
    zp = sorted({p for p, _ in pairs})
    r0 = b.rows([f"{one}({pn[p]})" for p in zp], -np.inf, 1.0)
    at = {p: r0 + i for i, p in enumerate(zp)}
    b.add([at[p] for p, _ in pairs], iz, 1.0)


def _node_level(b: Builder, lay: Layout, c: Candidates, p: int, pool, res: np.ndarray, pn: list[str]) -> None:
    """Family P for pool p: per-node copies of its replicas, shared servers and power state."""
    d = c.ded
    ks = [k for k in range(len(d)) if d.p[k] == p]
    N = int(pool.nodes)
    has_sig = lay.isig[p] >= 0
    slice_ = c.sh.slice.get(p, (0.0, 0.0, 0.0))
    per_node_sig = c.sh.per_node.get(p, 0)
    cols_n = {}
    for k in ks:
        cols_n[k] = b.cols(
            [f"n({_n(c.models[d.m[k]])},{pn[p]},{_n(d.records[k].config_id)},node{i})" for i in range(N)],
            0,
            d.nmax[k],
            True,
        )
    csig = b.cols([f"sigma({pn[p]},node{i})" for i in range(N)], 0, per_node_sig, True) if has_sig else None
    con = b.cols([f"on({pn[p]},node{i})" for i in range(N)], 0, 1, True)
    # totals
    for k in ks:
        r = b.rows([f"nsum({_n(c.models[d.m[k]])},{pn[p]},{_n(d.records[k].config_id)})"], 0.0, 0.0)
        b.add(np.full(N, r), cols_n[k], 1.0)
        b.add([r], [lay.in_[k]], -1.0)
    if has_sig:
        r = b.rows([f"sigsum({pn[p]})"], 0.0, 0.0)
        b.add(np.full(N, r), csig, 1.0)
        b.add([r], [lay.isig[p]], -1.0)
    r = b.rows([f"osum({pn[p]})"], 0.0, 0.0)
    b.add(np.full(N, r), con, 1.0)
    b.add([r], [lay.io[p]], -1.0)
    # per-node capacity
    Kc = (pool.cpu, pool.memory_mb, float(pool.accelerators))
    for ri, rname in enumerate(RES):
        if not any(res[k, ri] > 0 for k in ks) and not (has_sig and slice_[ri] > 0):
            continue
        r0 = b.rows([f"node({pn[p]},{i},{rname})" for i in range(N)], -np.inf, 0.0)
        for k in ks:
            if res[k, ri] > 0:
                b.add(r0 + np.arange(N), cols_n[k], res[k, ri])
        if has_sig and slice_[ri] > 0:
            b.add(r0 + np.arange(N), csig, slice_[ri])
        b.add(r0 + np.arange(N), con, -Kc[ri])
    if N > 1:
        r0 = b.rows([f"sym({pn[p]},{i})" for i in range(N - 1)], -np.inf, 0.0)
        b.add(r0 + np.arange(N - 1), con[1:], 1.0)
        b.add(r0 + np.arange(N - 1), con[:-1], -1.0)
    lay.node_level[p] = {"n": cols_n, "sigma": csig, "on": con}


def add_headroom_block(
    b: Builder, lay: Layout, c: Candidates, served: np.ndarray, alpha_max: float, compact: bool = True
) -> tuple[dict, int, np.ndarray, Agg]:
    """Phase H's routing block: every model m with s*_m > 0 routes alpha_m s*_m at once (C2, S1, S2, S4 hold).

    ``compact``: the block's dedicated rates substituted out (``dem[m,H]`` over replica capacity, ``hsh[m]``);
    else explicit dedicated rates under C2 (same feasible set; CP-SAT, which puts rates on a 1e-3 grid, loses
    the headroom optimum on the compact form: conformance seed 2, t 1.357 against 1.5).
    Returns ({m: alpha column}, t column, the block's shared-rate columns, its pool aggregate columns).
    """
    d = c.ded
    mk = np.asarray(d.m, dtype=np.int64)
    mj = np.asarray(c.sh.m, dtype=np.int64)
    ms = [m for m in range(lay.M) if served[m] > 0]
    mn = [_n(x) for x in c.models]
    pn = [_n(x) for x in c.pools]
    jn = [f"{mn[c.sh.m[j]]},{pn[c.sh.p[j]]},{_n(c.sh.records[j].config_id)}" for j in range(lay.J)]
    ub_m = alpha_max * served
    ixsh = b.cols([f"xs({x},H)" for x in jn], 0, ub_m[mj] if lay.J else 0)
    ia = dict(zip(ms, b.cols([f"alpha({mn[m]})" for m in ms], 1.0, alpha_max)))
    it = int(b.cols(["t"], 1.0, alpha_max)[0])
    if compact:
        # dem[m,H]: dedicated capacity + shared routed >= s*_m alpha_m; hsh[m]: shared routed <= s*_m alpha_m
        # (together: some dedicated routing within C2 meets the block's demand exactly); models not served route nothing
        r0 = b.rows([f"dem({mn[m]},H)" for m in range(lay.M)], 0.0, np.inf)
        b.add(r0 + mk, lay.in_, np.asarray(d.cap, dtype=float))
        b.add(r0 + mj, ixsh, 1.0)
        for m in ms:
            b.add([r0 + m], [ia[m]], -served[m])
        msh = sorted(set(mj.tolist()))
        if msh:
            r1 = b.rows([f"hsh({mn[m]})" for m in msh], -np.inf, 0.0)
            at = {m: r1 + i for i, m in enumerate(msh)}
            b.add([at[int(m)] for m in mj], ixsh, 1.0)
            for m in msh:
                if m in ia:
                    b.add([at[m]], [ia[m]], -served[m])
    else:  # the explicit form: dedicated rates of the block under C2
        kn = [f"{mn[d.m[k]]},{pn[d.p[k]]},{_n(d.records[k].config_id)}" for k in range(lay.K)]
        ixh = b.cols([f"x({x},H)" for x in kn], 0, ub_m[mk] if lay.K else 0)
        r0 = b.rows([f"dem({mn[m]},H)" for m in range(lay.M)], 0.0, 0.0)
        b.add(r0 + mk, ixh, 1.0)
        b.add(r0 + mj, ixsh, 1.0)
        for m in ms:
            b.add([r0 + m], [ia[m]], -served[m])
        _util_rows(b, kn, ",H", ixh, lay.in_, np.asarray(d.cap, dtype=float))
    agg: Agg = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    if lay.J:
        agg = _shared_rows(
            b,
            c,
            ",H",
            ixsh,
            lay.iv,
            lay.isig,
            ub_m,
            np.asarray(c.sh.work, float),
            np.asarray(c.sh.resid, float),
            np.asarray(c.sh.budget, float),
            mn,
            pn,
            jn,
        )
    r0 = b.rows([f"hdrmin({mn[m]})" for m in ms], -np.inf, 0.0)
    for i, m in enumerate(ms):
        b.add([r0 + i, r0 + i], [it, ia[m]], [1.0, -1.0])
    return ia, it, ixsh, agg


def _agg_ref(c: Candidates, budget, pools: np.ndarray) -> np.ndarray:
    """Per pool of ``pools``: the largest queueing budget of its shared candidates (the unit of A_p)."""
    pj = np.asarray(c.sh.p, dtype=np.int64)
    bud = np.asarray(budget, dtype=float)
    return np.array([max(float(bud[pj == p].max()), 1e-9) for p in pools.tolist()])


def fill_aggregates(x: np.ndarray, c: Candidates, ixs: np.ndarray, agg: Agg) -> None:
    """Set the pool aggregates W_p, A_p of one routing block in ``x`` from its shared rates (for MIP starts)."""
    pools, iw, ia = agg
    if not len(ixs) or not len(pools):
        return
    pj = np.asarray(c.sh.p, dtype=np.int64)
    sel = np.isin(pj, pools)
    pos = np.searchsorted(pools, pj[sel])
    xs = x[ixs][sel]
    x[iw] = np.bincount(pos, weights=xs * np.asarray(c.sh.work, float)[sel], minlength=len(pools))
    a = c.sh.g * np.asarray(c.sh.resid, float)[sel] / _agg_ref(c, c.sh.budget, pools)[pos]
    x[ia] = np.bincount(pos, weights=xs * a, minlength=len(pools))
