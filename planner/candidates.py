"""Data step: enumerate what the MILP may deploy, and reject the hopeless with a reason.

Two kinds of deployable unit, both plain data (the MILP builder never sees a pydantic object):

- a **dedicated** candidate ``k`` = (model, pool, configuration): replicas that each run one
  configuration of one model with the configuration's own resource request, usable up to the
  utilisation ``rho_k`` at which the service model (``service.py``) still meets the deadline;
- a **shared** candidate ``j`` = (model, pool, configuration) loadable on the pool's *shared
  servers*: one server per slice of a node (one accelerator and its share of cores and memory on
  accelerator pools, the whole node on CPU pools) that loads several models and time-shares the
  device between them, under the pool's utilisation cap and the linear mixed-queue condition.

Every (model, pool, configuration) considered gets a ``Candidate`` report (chosen, or why not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from synergai.models import ClusterSpec, InputError, NodePool, ProfileRecord, ProfileTable, WorkloadSpec
from synergai.models.plan import Candidate

from .service import ServiceArrays, device_power_ceiling, g_factor, serving_power

RES = ("cpu", "mem", "acc")


@dataclass
class PlanOptions:
    """Planner knobs; defaults are what the CLI uses."""

    util_cap: float = 0.85
    """Hard upper bound on a server's utilisation, whatever the queueing model allows (0-1); shared
    servers are planned at exactly this cap (their mixed-queue condition is stated for it)."""
    quantile: float = 0.99
    """Response-time quantile that must meet the deadline."""
    objective: str = "lexicographic"
    """`lexicographic` (unserved, then headroom, then energy: several solves) or `weighted` (one solve)."""
    unserved_weight: float = 1e5
    """Weight of 1 req/s unserved (times priority) in the weighted objective (W-equivalents)."""
    resource_weight: float = 1e-2
    """Weight of one pool-capacity-normalised server footprint in the energy phase (W-equivalents)."""
    headroom: float = 1.5
    """After the unserved optimum, make every served model's load able to grow at once by a factor
    alpha_m >= t with the common t as large as possible up to this value (max-min), before minimising
    energy (1 = off)."""
    headroom_fill: bool = False
    """After the max-min headroom t*, also maximise the sum of the factors (ties of the max-min broken by the
    sum) and hold them while minimising energy.  Off by default: extra headroom beyond t* is not worth
    powering idle nodes for; every served model keeps alpha_m >= t* either way."""
    load_scenarios: tuple = ()
    """Optional ``((factor, probability), ...)`` including ``(1.0, p)``: the plan must also do well when
    every rate is multiplied by ``factor`` (e.g. an MMPP's burst state); minimises expected unserved."""
    shared_servers: bool = True
    """Offer shared servers (several models per server on one accelerator or node)."""
    shared_configs: int = 3
    """At most this many configurations per (model, pool) are offered to shared servers (the highest
    capacity, the lowest energy and the loosest queueing budget first); 0 = all."""
    prune_dominated: bool = True
    optimistic: bool = True
    """Lexicographic mode: first try one energy solve with the earlier phases held at their trivial bounds
    (every model that has a candidate fully served, every headroom factor at ``headroom``); when it has a
    plan, that plan proves both bounds optimal and the phases are skipped.  Otherwise the phases run."""
    skip_unprofiled: bool = False
    """Plan around pools whose device has no profile (the pool stays unused and a note says so)
    instead of rejecting the cluster."""


@dataclass
class Dedicated:
    """Dedicated candidates as parallel lists (index k)."""

    records: list[ProfileRecord] = field(default_factory=list)
    m: list[int] = field(default_factory=list)
    p: list[int] = field(default_factory=list)
    cap: list[float] = field(default_factory=list)  # c_k = rho_k * capacity, req/s per replica
    rho: list[float] = field(default_factory=list)
    energy: list[float] = field(default_factory=list)  # e_k, J per request
    power: list[float] = field(default_factory=list)  # W while serving
    power_est: list[bool] = field(default_factory=list)
    res: list[tuple[float, float, float]] = field(default_factory=list)  # cpu, mem, acc per replica
    nmax: list[int] = field(default_factory=list)
    mode: list[str] = field(default_factory=list)
    report: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.m)


@dataclass
class Shared:
    """Shared-server candidates (index j) and per-pool slices."""

    records: list[ProfileRecord] = field(default_factory=list)
    m: list[int] = field(default_factory=list)
    p: list[int] = field(default_factory=list)
    work: list[float] = field(default_factory=list)  # w_j = 1 / capacity, server-s per request
    resid: list[float] = field(default_factory=list)  # a_j, residual work per call (service.shared_residual), s^2
    slots: list[int] = field(default_factory=list)  # execution slots of the configuration (C6b: one count per pool)
    budget: list[float] = field(default_factory=list)  # B_j = deadline - rtt - batch wait - S(q), s
    mem: list[float] = field(default_factory=list)  # memory footprint when loaded, MiB
    energy: list[float] = field(default_factory=list)
    power: list[float] = field(default_factory=list)
    power_est: list[bool] = field(default_factory=list)
    mode: list[str] = field(default_factory=list)
    report: list[int] = field(default_factory=list)
    slice: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # pool -> cpu, mem, acc per server
    per_node: dict[int, int] = field(default_factory=dict)  # pool -> shared servers per node
    g: float = 0.0  # G(rho_bar)

    def __len__(self) -> int:
        return len(self.m)


@dataclass
class Candidates:
    models: list[str]
    pools: list[str]
    ded: Dedicated
    sh: Shared
    reports: list[Candidate]
    rho_bar: float
    max_factor: float
    unprofiled: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ded) + len(self.sh)


def check_inputs(
    profiles: ProfileTable,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    cluster_file: str | None = None,
    workload_file: str | None = None,
    skip_unprofiled: bool = False,
) -> list[str]:
    """Cross-file checks the single-file validators cannot do; returns the pools left unused."""
    devices = set(profiles.devices)
    skipped = []
    for i, pool in enumerate(cluster.pools):
        if pool.device not in devices:
            if skip_unprofiled:
                skipped.append(pool.name)
                continue
            near = _nearest(pool.device, sorted(devices))
            raise InputError(
                f"pool {pool.name!r}: no profile for device {pool.device!r} (nearest known: "
                f"{', '.join(near)}); profile it, or pass --skip-unprofiled to leave the pool unused",
                file=cluster_file or "<cluster>",
                field=f"pools.{i}.device",
            )
    models = set(profiles.models)
    for i, d in enumerate(workload.models):
        if d.model not in models:
            raise InputError(
                f"unknown model {d.model!r} (no profile has it; known: {', '.join(sorted(models))})",
                file=workload_file or "<workload>",
                field=f"models.{i}.model",
            )
    return skipped


def _nearest(name: str, known: list[str], k: int = 3) -> list[str]:
    import difflib

    best = difflib.get_close_matches(name, known, n=k, cutoff=0.0)
    return best or known[:k]


def shared_slice(pool: NodePool) -> tuple[tuple[float, float, float], int]:
    """(cpu, mem, acc) of one shared server on this pool, and shared servers per node."""
    if pool.accelerators > 0:
        k = pool.accelerators
        return (pool.cpu / k, pool.memory_mb / k, 1.0), k
    return (pool.cpu, pool.memory_mb, 0.0), 1


def build_candidates(
    profiles: ProfileTable,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    opts: PlanOptions | None = None,
    skip_pools: tuple[str, ...] = (),
) -> Candidates:
    """Vectorised over configurations: service quantities come from :class:`ServiceArrays` (the same
    formulas as :class:`ServiceModel`, which the decode step uses for what is chosen)."""
    opts = opts or PlanOptions()
    pools = list(cluster.pools)
    models = [d.model for d in workload.models]
    records = list(profiles.records)
    ceiling = device_power_ceiling(records)
    sa = ServiceArrays.of(records, opts.quantile)
    pw_est = [serving_power(r, ceiling) for r in records]
    scen = list(opts.load_scenarios) or [(1.0, 1.0)]
    max_factor = max(f for f, _ in scen) * max(1.0, opts.headroom)
    rho_bar = opts.util_cap
    ded, sh, reports = Dedicated(), Shared(g=g_factor(rho_bar, opts.quantile)), []

    by_md: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(records):
        by_md.setdefault((r.model, r.device), []).append(i)
    for pi, pool in enumerate(pools):
        if pool.name not in skip_pools and pool.nodes > 0:
            sh.slice[pi], sh.per_node[pi] = shared_slice(pool)

    # pass 1: reports, deadline and fit checks; collect what needs a utilisation cap
    pend: list[tuple] = []  # (mi, pi, record index, report index, fits, sfits, qbudget, budget)
    for mi, dem in enumerate(workload.models):
        for pi, pool in enumerate(pools):
            if pool.name in skip_pools:
                continue
            have = (pool.cpu, pool.memory_mb, float(pool.accelerators))
            sl = sh.slice.get(pi)
            for i in by_md.get((dem.model, pool.device), []):
                rec = records[i]
                fixed = float(sa.batch_wait[i] + sa.quantile[i]) + pool.rtt_ms / 1e3
                pw, est = pw_est[i]
                epr = pw / float(sa.capacity[i])
                rep = Candidate.model_construct(
                    model=dem.model,
                    pool=pool.name,
                    config_id=rec.config_id,
                    latency_p99_ms=rec.latency_p99_ms,
                    response_p99_ms=round(fixed * 1e3, 6),
                    capacity_rps=0.0,
                    energy_j_per_request=round(epr, 9),
                    power_estimated=est,
                    status="not_chosen",
                    detail="",
                )
                reports.append(rep)
                if pool.architecture != rec.architecture:
                    rep.status, rep.detail = (
                        "does_not_fit",
                        f"profile is {rec.architecture}, pool is {pool.architecture}",
                    )
                    continue
                if fixed * 1e3 > dem.deadline_ms:
                    wait = float(sa.batch_wait[i])
                    rep.status = "misses_deadline"
                    rep.detail = (
                        f"p{opts.quantile * 100:g} {float(sa.quantile[i]) * 1e3:.3g} ms + rtt {pool.rtt_ms:.3g} ms"
                        + (f" + batch wait {wait * 1e3:.3g} ms" if wait else "")
                        + f" = {fixed * 1e3:.3g} ms > deadline {dem.deadline_ms:.3g} ms"
                    )
                    continue
                if pool.nodes == 0:
                    rep.status, rep.detail = "does_not_fit", "pool has no nodes"
                    continue
                need = (rec.cpu_cores, rec.memory_request_mb, float(rec.accelerators))
                fits = all(a <= b + 1e-9 for a, b in zip(need, have))
                mem_fp = rec.memory_mb or rec.memory_request_mb
                sfits = bool(
                    opts.shared_servers
                    and sl is not None
                    and rec.cpu_cores <= sl[0] + 1e-9
                    and mem_fp <= sl[1] + 1e-9
                    and rec.accelerators <= sl[2] + 1e-9
                )
                if not fits and not sfits:
                    short = [n for n, a, b in zip(("cpu", "memory", "accelerators"), need, have) if a > b + 1e-9]
                    rep.status = "does_not_fit"
                    rep.detail = "one replica needs more " + ", ".join(short) + " than a node has"
                    continue
                pend.append(
                    (
                        mi,
                        pi,
                        i,
                        len(reports) - 1,
                        fits,
                        sfits,
                        dem.deadline_ms / 1e3 - fixed,
                        (dem.deadline_ms - pool.rtt_ms) / 1e3,
                    )
                )
    if pend:
        idx = np.array([e[2] for e in pend], dtype=np.int64)
        sub = sa.take(idx)
        dl_rtt = np.array([e[7] for e in pend])
        rho_all = np.minimum(opts.util_cap, sub.max_utilisation(dl_rtt, opts.util_cap, opts.quantile))
        # shared servers: a pool's shared servers load configurations of one slot count (C6b in milp.py), so the
        # residual a_j counts calls of equal share (service.shared_residual with cmin = c_j); if the pool may
        # load a batching configuration (fits the slice, meets the deadline at zero load, model with demand),
        # a request may always find the device busy: p_wait = 1, else rho_bar
        sfit = np.array([bool(e[5]) and workload.models[e[0]].rate_rps > 0 for e in pend])
        pool_of = np.array([e[1] for e in pend], dtype=np.int64)
        pw_all = np.full(len(pend), rho_bar)
        for pi in np.unique(pool_of[sfit & (sub.batch > 1)]).tolist():
            pw_all[pool_of == pi] = 1.0
        resid_all = sub.shared_residual(sub.slots)
        # shared-server budget B_k of the linear row G * sum a_j x_j <= B_k * sum w_j x_j (service.shared_budget)
        qb_all = np.where([e[6] > 0 for e in pend], sub.shared_budget(dl_rtt, pw_all, opts.quantile), 0.0)
    # pass 2: candidates per (model, pool)
    groups: dict[tuple[int, int], tuple[list, list]] = {}
    for n_, ((mi, pi, i, ri, fits, sfits, _, _), rho, qbudget) in enumerate(
        zip(pend, rho_all if pend else [], qb_all if pend else [])
    ):
        qbudget = float(qbudget)
        rec, pool, dem = records[i], pools[pi], workload.models[mi]
        rep = reports[ri]
        rho = float(rho)
        if rho <= 1e-6 and not (sfits and qbudget > 0):
            rep.status = "misses_deadline"
            rep.detail = "no queueing headroom: any load pushes the response quantile past the deadline"
            continue
        cap_i = float(sa.capacity[i])
        pw, est = pw_est[i]
        epr = pw / cap_i
        rep.capacity_rps = round(rho * cap_i, 6)
        gd, gs = groups.setdefault((mi, pi), ([], []))
        if fits and rho > 1e-6:
            cap = rho * cap_i
            need = (rec.cpu_cores, rec.memory_request_mb, float(rec.accelerators))
            have = (pool.cpu, pool.memory_mb, float(pool.accelerators))
            per_node = min(math.floor(h / n + 1e-9) if n > 0 else 10**6 for n, h in zip(need, have))
            need_max = math.ceil(max_factor * dem.rate_rps / cap - 1e-9) if dem.rate_rps > 0 else 0
            nmax = min(per_node * pool.nodes, need_max)
            if nmax > 0:
                gd.append(
                    dict(
                        records=rec,
                        m=mi,
                        p=pi,
                        cap=cap,
                        rho=rho,
                        energy=epr,
                        power=pw,
                        power_est=est,
                        res=need,
                        nmax=nmax,
                        mode=rec.power_mode,
                        report=ri,
                    )
                )
        if sfits and qbudget > 0 and dem.rate_rps > 0:
            gs.append(
                dict(
                    records=rec,
                    m=mi,
                    p=pi,
                    work=float(sa.work[i]),
                    resid=float(resid_all[n_]),
                    slots=int(sa.slots[i]),
                    budget=qbudget,
                    mem=rec.memory_mb or rec.memory_request_mb,
                    energy=epr,
                    power=pw,
                    power_est=est,
                    mode=rec.power_mode,
                    report=ri,
                )
            )
        if dem.rate_rps <= 0:
            rep.detail = "no demand"
    for key in sorted(groups):
        group_d, group_s = groups[key]
        if opts.prune_dominated and len(group_d) > 1:
            group_d = _prune(reports, group_d, better=("cap",), worse=("energy",), res=True)
        if len(group_s) > 1:
            group_s = _prune(
                reports, group_s, better=("budget",), worse=("work", "resid", "energy", "mem"), res=False, mark=False
            )
            if opts.shared_configs and len(group_s) > opts.shared_configs:
                group_s = _top_shared(group_s, opts.shared_configs)
        for e in group_d:
            for k, v in e.items():
                getattr(ded, k).append(v)
        for e in group_s:
            for k, v in e.items():
                getattr(sh, k).append(v)
    _shrink_slices(sh)
    return Candidates(
        models=models,
        pools=[p.name for p in pools],
        ded=ded,
        sh=sh,
        reports=reports,
        rho_bar=rho_bar,
        max_factor=max_factor,
        unprofiled=list(skip_pools),
    )


def _shrink_slices(sh: Shared) -> None:
    """Reserve for a shared server only what its candidates can use: the most cores any of them needs and
    the memory of the largest configuration of every model (never more than the node's share)."""
    for p, (cpu, mem, acc) in list(sh.slice.items()):
        js = [j for j in range(len(sh)) if sh.p[j] == p]
        if not js:
            del sh.slice[p]
            continue
        need_cpu = max(sh.records[j].cpu_cores for j in js)
        per_model: dict[int, float] = {}
        for j in js:
            per_model[sh.m[j]] = max(per_model.get(sh.m[j], 0.0), sh.mem[j])
        sh.slice[p] = sl = (min(cpu, need_cpu), min(mem, sum(per_model.values())), acc)
        # how many such servers one node holds (the node is per_node slices of the unshrunk size)
        node = (cpu * sh.per_node[p], mem * sh.per_node[p], acc * sh.per_node[p])
        sh.per_node[p] = min(math.floor(n / x + 1e-9) for n, x in zip(node, sl) if x > 0)


def _prune(
    reports: list[Candidate], group: list[dict], *, better: tuple, worse: tuple, res: bool, mark: bool = True
) -> list[dict]:
    """Drop a candidate when another of the same (model, pool), power mode (and, shared, slot count) is at least
    as good in every respect (``better`` keys larger-is-better, ``worse`` smaller-is-better, resources smaller-is-better).

    Safe: swapping the dominated configuration for the dominating one keeps every constraint
    satisfied and does not raise the objective.  Exact ties keep the first.
    """
    n = len(group)
    cols = [np.array([e[x] for e in group], dtype=float) for x in better]
    cols += [-np.array([e[x] for e in group], dtype=float) for x in worse]
    if res:
        r = np.array([e["res"] for e in group], dtype=float)
        cols += [-r[:, i] for i in range(3)]
    V = np.stack(cols, axis=1)  # larger is better in every column
    ge = (V[None, :, :] >= V[:, None, :]).all(axis=2)  # ge[i, j]: j at least as good as i everywhere
    gt = (V[None, :, :] > V[:, None, :]).any(axis=2)
    idx = np.arange(n)
    modes = np.array([hash((e["mode"], e.get("slots"))) for e in group])  # C6 and C6b: swaps stay feasible
    same_mode = modes[:, None] == modes[None, :]
    dominated_by = ge & (gt | (idx[None, :] < idx[:, None])) & same_mode & (idx[None, :] != idx[:, None])
    # the relation is transitive, so a candidate with any dominator also has an undominated one
    drop = dominated_by.any(axis=1)
    if mark:
        for i in np.flatnonzero(drop):
            j = (
                int(np.argmax(dominated_by[i] & ~drop))
                if (dominated_by[i] & ~drop).any()
                else int(np.argmax(dominated_by[i]))
            )
            rep = reports[group[i]["report"]]
            rep.status = "dominated"
            rep.detail = f"{group[j]['records'].config_id} serves at least as much with no more energy or resources"
    return [e for i, e in enumerate(group) if not drop[i]]


def _top_shared(group: list[dict], k: int) -> list[dict]:
    """At most k shared configurations per (model, pool): best capacity, least energy, loosest budget, ..."""
    keys = [lambda e: e["work"], lambda e: e["energy"], lambda e: -e["budget"]]
    chosen: list[int] = []
    rounds = 0
    while len(chosen) < k and rounds < k:
        for key in keys:
            order = sorted(range(len(group)), key=lambda i: (key(group[i]), i))
            for i in order:
                if i not in chosen:
                    chosen.append(i)
                    break
            if len(chosen) >= k:
                break
        rounds += 1
    return [group[i] for i in sorted(chosen)]
