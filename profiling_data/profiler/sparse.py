"""Sparse search: find the Pareto front without measuring the full grid (``--budget N``).

The grid of one *group* (engine x model x precision) is batch sizes x thread counts.  A configuration is
judged on three objectives: p99 latency of one call (lower is better), throughput (higher) and threads
(lower: CPU a replica reserves).  The front that matters to the planner is per **model** -- over every
engine and precision of that model -- so measuring a group whose configurations are all dominated by another
engine's is wasted budget.

Method (coarse-to-fine bisection over the index space of each axis):

1. **Anchors.** Every group's corners, in this order over all groups: (smallest batch, most threads) and
   (smallest batch, fewest threads) -- the low-latency corners, also the cheapest to measure; then (largest
   batch, most threads) and (largest batch, fewest threads) -- the high-throughput ones.  The first corner of
   every group is measured first; the other corners of a group come before any bisection only while the group
   is *alive* (fewer than two points measured, or one of them on its model's current front) -- a group whose
   measured corners are all dominated by other engines/precisions gets its remaining corners only after the
   promising bisections of live groups.
2. **Bisection.** A candidate is an unmeasured grid point that lies midway (in index space) between two
   measured points of its group on the same row (same threads) or column (same batch) with nothing measured
   between them.  Its value is predicted by log-linear interpolation of the two bracketing points and made
   optimistic by a margin ``delta = max(10 %, half the log-ratio between the brackets)`` -- the more the
   brackets differ, the less the straight line is trusted.  It is *promising* if that optimistic prediction is
   not dominated by anything measured for the model.  Priority: corners of live groups, then promising
   midpoints, then corners of dead groups, then the other midpoints; among midpoints of one kind the higher
   (number of bracketing points on the model's current front, bracket width, margin) wins: wide promising gaps
   next to the front are split first, then narrower ones -- coarse to fine.
3. **Fallback.** When no bracketed midpoint is left, unmeasured points are taken by their index distance to
   the nearest front point of their group.

The search stops when the budget is spent or the grid is exhausted; configurations already in the output
file count as measured and cost nothing.  ``front_recovery`` scores a sparse run against the full grid
(used by ``bench_profiler.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Iterable


@dataclass(frozen=True, order=True)
class Point:
    group: tuple  # (engine, model, precision)
    batch: int
    threads: int

    @property
    def model(self) -> str:
        return self.group[1]


@dataclass(frozen=True)
class Obs:
    latency_ms: float  # p99 of one call
    throughput_rps: float
    threads: int


def dominates(a: Obs, b: Obs) -> bool:
    return (
        a.latency_ms <= b.latency_ms
        and a.throughput_rps >= b.throughput_rps
        and a.threads <= b.threads
        and (a.latency_ms < b.latency_ms or a.throughput_rps > b.throughput_rps or a.threads < b.threads)
    )


def pareto(points: dict[Hashable, Obs]) -> set:
    """Keys of the non-dominated observations."""
    items = list(points.items())
    return {k for k, o in items if not any(dominates(o2, o) for k2, o2 in items if k2 != k)}


class SparseSearch:
    """Chooses the next configuration to measure; feed back results with :meth:`observe`."""

    def __init__(
        self, grids: dict[tuple, tuple[list[int], list[int]]], budget: int, known: dict[Point, Obs] | None = None
    ):
        self.grids = {g: (sorted(set(b)), sorted(set(t))) for g, (b, t) in grids.items()}
        self.budget = budget
        self.spent = 0
        self.obs: dict[Point, Obs] = {}
        self.failed: set[Point] = set()
        for p, o in (known or {}).items():
            if p.group in self.grids:
                self.obs[p] = o
        self._anchors = self._anchor_order()

    # ------------------------------------------------------------------ bookkeeping
    def _all(self) -> Iterable[Point]:
        for g, (bs, ts) in self.grids.items():
            for b in bs:
                for t in ts:
                    yield Point(g, b, t)

    def _done(self, p: Point) -> bool:
        return p in self.obs or p in self.failed

    def observe(self, p: Point, o: Obs | None) -> None:
        """Record a measurement (``None``: the configuration could not run; it costs budget all the same)."""
        self.spent += 1
        if o is None:
            self.failed.add(p)
        else:
            self.obs[p] = o

    def remaining(self) -> int:
        return sum(1 for p in self._all() if not self._done(p))

    def _anchor_order(self) -> list[Point]:
        out = []
        for which in range(4):
            for g, (bs, ts) in self.grids.items():
                b = bs[0] if which in (0, 1) else bs[-1]
                t = ts[-1] if which in (0, 2) else ts[0]
                p = Point(g, b, t)
                if p not in out:
                    out.append(p)
        return out

    def _model_front(self, model: str) -> set[Point]:
        pts = {p: o for p, o in self.obs.items() if p.model == model}
        return pareto(pts)

    # ------------------------------------------------------------------ choice
    def _alive(self, g: tuple, fronts: dict[str, set[Point]]) -> bool:
        """A group is alive until two of its points were measured and none of them is on its model's front."""
        mine = [p for p in self.obs if p.group == g]
        return len(mine) < 2 or any(p in fronts[g[1]] for p in mine)

    def next(self) -> Point | None:
        if self.spent >= self.budget:
            return None
        first = [a for a in self._anchors[: len(self.grids)] if not self._done(a)]
        if first:  # level 1: one anchor of every group
            return first[0]
        fronts = {m: self._model_front(m) for m in {g[1] for g in self.grids}}
        best, best_score = None, None

        def offer(p: Point, score: tuple) -> None:
            nonlocal best, best_score
            if best_score is None or score > best_score:
                best, best_score = p, score

        for rank, a in enumerate(self._anchors[len(self.grids) :]):
            if not self._done(a):
                # other corners of live groups come before any bisection; of dead groups only after the
                # promising bisections
                offer(a, (4 if self._alive(a.group, fronts) else 2, -rank))
        for g, (bs, ts) in self.grids.items():
            model = g[1]
            front = fronts[model]
            model_obs = [o for p, o in self.obs.items() if p.model == model]
            for axis in ("batch", "threads"):
                lines = ts if axis == "batch" else bs  # rows of constant threads, or columns of constant batch
                vals = bs if axis == "batch" else ts
                for fixed in lines:
                    meas = [i for i, v in enumerate(vals) if self._done(self._pt(g, axis, v, fixed))]
                    for i, j in zip(meas, meas[1:]):
                        if j - i < 2:
                            continue
                        m = (i + j) // 2
                        cand = self._pt(g, axis, vals[m], fixed)
                        if self._done(cand):
                            continue
                        pa, pb = self._pt(g, axis, vals[i], fixed), self._pt(g, axis, vals[j], fixed)
                        sc = self._score(
                            cand, self.obs.get(pa), self.obs.get(pb), j - i, model_obs, pa in front, pb in front
                        )
                        offer(cand, (3 if sc[0] else 1, *sc[1:]))
        if best is not None:
            return best
        return self._fallback(fronts)

    @staticmethod
    def _pt(g: tuple, axis: str, v: int, fixed: int) -> Point:
        return Point(g, v, fixed) if axis == "batch" else Point(g, fixed, v)

    def _score(
        self,
        cand: Point,
        oa: Obs | None,
        ob: Obs | None,
        width: int,
        model_obs: list[Obs],
        a_front: bool,
        b_front: bool,
    ) -> tuple:
        known = [o for o in (oa, ob) if o is not None]
        if not known:
            return (0, 0, width, 0.0, -cand.threads, -cand.batch)
        lat = math.exp(sum(math.log(o.latency_ms) for o in known) / len(known))
        tput = math.exp(sum(math.log(o.throughput_rps) for o in known) / len(known))
        if len(known) == 2:
            delta = max(
                0.10,
                abs(math.log(known[0].latency_ms / known[1].latency_ms)) / 2,
                abs(math.log(known[0].throughput_rps / known[1].throughput_rps)) / 2,
            )
        else:
            delta = 0.5
        opt = Obs(lat * math.exp(-delta), tput * math.exp(delta), cand.threads)
        promising = int(not any(dominates(o, opt) for o in model_obs))
        return (promising, int(a_front) + int(b_front), width, round(delta, 6), -cand.threads, -cand.batch)

    def _fallback(self, fronts: dict[str, set[Point]]) -> Point | None:
        best, best_key = None, None
        for p in self._all():
            if self._done(p):
                continue
            bs, ts = self.grids[p.group]
            front = [q for q in fronts[p.model] if q.group == p.group]
            if front:
                d = min(
                    abs(bs.index(p.batch) - bs.index(q.batch)) + abs(ts.index(p.threads) - ts.index(q.threads))
                    for q in front
                )
            else:
                d = 10**6
            key = (-d, -p.threads, -p.batch)
            if best_key is None or key > best_key:
                best, best_key = p, key
        return best


# ---------------------------------------------------------------------------------------- evaluation
def hypervolume(obs: list[Obs], ref_latency: float, ref_threads: float) -> float:
    """Volume dominated by ``obs`` in (latency down to 0 from ``ref_latency``, throughput up from 0,
    threads down from ``ref_threads``): exact, by slicing over the discrete thread levels."""
    pts = [o for o in obs if o.latency_ms < ref_latency and o.threads < ref_threads]
    if not pts:
        return 0.0
    levels = sorted({o.threads for o in pts}) + [ref_threads]
    vol = 0.0
    for lo, hi in zip(levels, levels[1:]):
        layer = [o for o in pts if o.threads <= lo]
        vol += (hi - lo) * _hv2d(layer, ref_latency)
    return vol


def _hv2d(pts: list[Obs], ref_latency: float) -> float:
    # maximise throughput, minimise latency: sweep by latency ascending
    area, best_t = 0.0, 0.0
    srt = sorted(pts, key=lambda o: (o.latency_ms, -o.throughput_rps))
    for i, o in enumerate(srt):
        best_t = max(best_t, o.throughput_rps)
        nxt = srt[i + 1].latency_ms if i + 1 < len(srt) else ref_latency
        area += (nxt - o.latency_ms) * best_t
    return area


def front_recovery(full: dict[Point, Obs], measured: Iterable[Point], tol: float = 0.05) -> dict:
    """Score a measured subset against the full grid (values of both taken from ``full``).

    Per model: ``exact`` = share of the full-grid front that was measured; ``within`` = share of full-front
    points matched by a measured point no worse than ``tol`` in latency and throughput with no more threads;
    ``hv`` = hypervolume of the measured set / hypervolume of the full grid.  Returned as means over models
    plus the per-model values.
    """
    measured = {p for p in measured if p in full}
    per = {}
    for model in sorted({p.model for p in full}):
        fm = {p: o for p, o in full.items() if p.model == model}
        front = pareto(fm)
        mm = [fm[p] for p in measured if p in fm]
        exact = sum(1 for p in front if p in measured) / len(front)
        within = sum(
            1
            for p in front
            if any(
                o.latency_ms <= fm[p].latency_ms * (1 + tol)
                and o.throughput_rps >= fm[p].throughput_rps / (1 + tol)
                and o.threads <= fm[p].threads
                for o in mm
            )
        ) / len(front)
        ref_l = max(o.latency_ms for o in fm.values()) * 1.1
        ref_t = max(o.threads for o in fm.values()) + 1
        hv_full = hypervolume(list(fm.values()), ref_l, ref_t)
        hv = hypervolume(mm, ref_l, ref_t) / hv_full if hv_full > 0 else 1.0
        per[model] = {
            "front": len(front),
            "exact": exact,
            "within": within,
            "hv": hv,
            "measured": len(mm),
            "grid": len(fm),
        }
    n = max(1, len(per))
    return {
        "exact": sum(v["exact"] for v in per.values()) / n,
        "within": sum(v["within"] for v in per.values()) / n,
        "hv": sum(v["hv"] for v in per.values()) / n,
        "per_model": per,
    }
