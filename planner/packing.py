"""Packing: do a pool's servers fit onto its individual nodes?

The MILP's capacity rows (C5) are per pool, so an aggregate solution may not pack onto the
identical nodes of a pool.  :func:`pack_ffd` (first-fit decreasing, deterministic) is the quick
check and :func:`pack_exact` (a budgeted exact search) the second opinion when FFD fails; a pool
neither places is not repaired after the fact -- the offline stage re-solves with
that pool modelled node by node (family P in ``milp.py``), which is exact, so every plan packs by
construction and its status describes the model that was solved.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np

Item = tuple[float, float, float]


def pack_ffd(items: Sequence[Item], node_cap: Item, nodes: int) -> list[list[int]] | None:
    """First-fit decreasing of server footprints onto identical nodes; None when they do not fit."""

    def size(i: int):
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


def pool_items(c, n: np.ndarray, sigma: dict[int, int]) -> dict[int, list[Item]]:
    """Footprints per pool: every dedicated replica and every shared server."""
    items: dict[int, list[Item]] = defaultdict(list)
    for k in range(len(c.ded)):
        if n[k] > 0:
            items[c.ded.p[k]].extend([c.ded.res[k]] * int(n[k]))
    for p, s in sigma.items():
        if s > 0:
            items[p].extend([c.sh.slice[p]] * int(s))
    return items


def pack_exact(items: Sequence[Item], node_cap: Item, nodes: int, budget: int = 20000) -> list[list[int]] | None:
    """A placement of the items on ``nodes`` identical nodes by depth-first search (largest first; nodes with the
    same free capacity tried once), or None when none exists or the search spends ``budget`` steps without one
    (None means "not shown to pack", so a caller treating it as unpackable stays exact; so does a pool of more
    than 900 servers, which the recursive search does not attempt)."""
    if not items:
        return [[] for _ in range(nodes)]
    order = sorted(range(len(items)), key=lambda i: tuple(-a for a in items[i]))
    free = [list(node_cap) for _ in range(nodes)]
    placed: list[list[int]] = [[] for _ in range(nodes)]
    steps = 0

    def place(t: int) -> bool:
        nonlocal steps
        if t == len(order):
            return True
        i = order[t]
        need = items[i]
        seen = set()
        for nd in range(nodes):
            key = tuple(round(x, 9) for x in free[nd])
            if key in seen:
                continue
            seen.add(key)
            steps += 1
            if steps > budget:
                return False
            if all(need[r] <= free[nd][r] + 1e-9 for r in range(3)):
                for r in range(3):
                    free[nd][r] -= need[r]
                placed[nd].append(i)
                if place(t + 1):
                    return True
                placed[nd].pop()
                for r in range(3):
                    free[nd][r] += need[r]
        return False

    if len(order) > 900:  # the search recurses once per item: beyond Python's stack, "not shown to pack"
        return None
    return placed if place(0) and steps <= budget else None


def unpackable_pools(c, n: np.ndarray, sigma: dict[int, int], pools: list) -> list[int]:
    """Pools whose servers neither FFD nor a budgeted exact search (:func:`pack_exact`) places on the pool's nodes."""
    bad = []
    for p, its in pool_items(c, n, sigma).items():
        pool = pools[p]
        cap = (pool.cpu, pool.memory_mb, float(pool.accelerators))
        if pack_ffd(its, cap, pool.nodes) is None and pack_exact(its, cap, pool.nodes) is None:
            bad.append(p)
    return sorted(bad)


def nodes_used(items: Sequence[Item], pool) -> int:
    """Nodes a pool needs for these footprints (FFD); the pool's size when they do not fit."""
    placed = pack_ffd(items, (pool.cpu, pool.memory_mb, float(pool.accelerators)), pool.nodes)
    return pool.nodes if placed is None else sum(1 for x in placed if x)
