"""Decode step: the solver's column values -> a ``Plan`` (server groups, assignments, unserved, candidate fates).

Predicted latencies and utilisations come from the shared service model at the planned rates,
the same numbers the online stage and the simulator use.
"""

from __future__ import annotations

import numpy as np

from synergai.models import ClusterSpec, WorkloadSpec
from synergai.models.plan import (
    Assignment,
    ConfigChoice,
    Plan,
    Server,
    SolverReport,
    Unserved,
    dedicated_name,
    shared_name,
)

from .candidates import Candidates, PlanOptions
from .milp import Layout
from .service import ServiceModel, response_quantile

EPS = 1e-6


def config_choice(rec, power_w: float | None = None, estimated: bool = False) -> ConfigChoice:
    return ConfigChoice(
        config_id=rec.config_id,
        engine=rec.engine,
        precision=rec.precision,
        batch_size=rec.batch_size,
        threads=rec.threads,
        power_mode=rec.power_mode,
        accelerator=rec.accelerator,
        latency_p50_ms=rec.latency_p50_ms,
        latency_p90_ms=rec.latency_p90_ms,
        latency_p99_ms=rec.latency_p99_ms,
        throughput_rps=rec.throughput_rps,
        power_w=power_w if power_w is not None else rec.power_w,
        power_estimated=estimated,
        cpu_cores=rec.cpu_cores,
        memory_request_mb=rec.memory_request_mb,
        accelerators=rec.accelerators,
        source=rec.source,
    )


def decode(
    c: Candidates,
    lay: Layout,
    x: np.ndarray | None,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    opts: PlanOptions,
    report: SolverReport,
) -> Plan:
    d, s = c.ded, c.sh
    lam = np.array([dm.rate_rps for dm in workload.models], dtype=float)
    M = len(lam)
    if x is None:
        n = np.zeros(lay.K, int)
        xk = np.zeros(lay.K)
        v = np.zeros(lay.J, int)
        xj = np.zeros(lay.J)
        sigma: dict[int, int] = {}
    else:
        n = np.rint(x[lay.in_]).astype(int) if lay.K else np.zeros(0, int)
        xk = np.clip(x[lay.ix[lay.nominal]], 0, None)
        v = np.rint(x[lay.iv]).astype(int) if lay.J else np.zeros(0, int)
        xj = np.clip(x[lay.ixs[lay.nominal]], 0, None)
        sigma = {p: int(round(x[col])) for p, col in enumerate(lay.isig) if col >= 0}
        # tolerance crumbs: nothing routed to absent replicas, unloaded models or missing servers
        if lay.K:
            xk = np.minimum(xk, n * np.asarray(d.cap, dtype=float))
            xk[n == 0] = 0.0
        if lay.J:
            pj = np.asarray(s.p, dtype=int)
            xj[(v == 0) | np.array([sigma.get(int(p), 0) == 0 for p in pj], dtype=bool)] = 0.0
    mk = np.asarray(d.m, dtype=int)
    mj = np.asarray(s.m, dtype=int)
    routed = np.bincount(mk, weights=xk, minlength=M) + np.bincount(mj, weights=xj, minlength=M)
    over = routed > lam
    if over.any():  # restore exact conservation
        f = np.where(over, lam / np.maximum(routed, 1e-12), 1.0)
        xk = xk * f[mk] if lay.K else xk
        xj = xj * f[mj] if lay.J else xj
        routed = np.bincount(mk, weights=xk, minlength=M) + np.bincount(mj, weights=xj, minlength=M)
    u = np.clip(lam - routed, 0, None)

    servers: list[Server] = []
    assignments: list[Assignment] = []
    pools = list(cluster.pools)
    q = opts.quantile
    for k in range(lay.K):
        if n[k] <= 0:
            continue
        rec, pool = d.records[k], pools[d.p[k]]
        sm = ServiceModel.of(rec)
        model = c.models[d.m[k]]
        name = dedicated_name(model, pool.name, rec.config_id)
        per = xk[k] / n[k]
        util = per * sm.work_per_request
        pred = response_quantile([(sm, per)], sm, q, pool.rtt_ms / 1e3) * 1e3
        servers.append(
            Server(
                name=name,
                pool=pool.name,
                replicas=int(n[k]),
                shared=False,
                standby=xk[k] <= EPS,
                power_mode=rec.power_mode,
                cpu_cores=rec.cpu_cores,
                memory_mb=rec.memory_request_mb,
                accelerators=rec.accelerators,
                models=[model],
                routed_rate_rps=round(float(xk[k]), 6),
                utilisation=round(float(util), 6),
                max_utilisation=float(f"{d.rho[k]:.9g}"),  # significant digits: a tiny cap rounds to 0 at 6 decimals
                power_w=round(float(xk[k] * d.energy[k]), 6),
                power_estimated=d.power_est[k],
            )
        )
        assignments.append(
            Assignment(
                model=model,
                pool=pool.name,
                server=name,
                config=config_choice(rec, d.power[k], d.power_est[k]),
                replicas=int(n[k]),
                routed_rate_rps=round(float(xk[k]), 6),
                utilisation=round(float(util), 6),
                max_utilisation=float(f"{d.rho[k]:.9g}"),  # significant digits: a tiny cap rounds to 0 at 6 decimals
                predicted_latency_ms=round(pred, 4),
                energy_w=round(float(xk[k] * d.energy[k]), 6),
            )
        )
        rep = c.reports[d.report[k]]
        rep.status = "chosen"
        rep.detail = (
            f"dedicated: {n[k]} replicas, {xk[k]:.4g} req/s routed"
            if xk[k] > EPS
            else f"dedicated: {n[k]} replica(s) held for bursts (no nominal traffic)"
        )
    for p, sg in sorted(sigma.items()):
        js = [j for j in range(lay.J) if s.p[j] == p and v[j] > 0]
        if sg <= 0 or not js:
            continue
        pool = pools[p]
        name = shared_name(pool.name)
        sms = {j: ServiceModel.of(s.records[j]) for j in js}
        loads = [(sms[j], xj[j] / sg) for j in js]
        util = sum(x_ * sm.work_per_request for sm, x_ in loads)
        tot = float(sum(xj[j] for j in js))
        sl = s.slice[p]
        servers.append(
            Server(
                name=name,
                pool=pool.name,
                replicas=sg,
                shared=True,
                standby=tot <= EPS,
                power_mode=s.records[js[0]].power_mode,
                cpu_cores=round(sl[0], 6),
                memory_mb=round(sl[1], 3),
                accelerators=int(sl[2]),
                models=[c.models[s.m[j]] for j in js],
                routed_rate_rps=round(tot, 6),
                utilisation=round(float(util), 6),
                max_utilisation=round(c.rho_bar, 6),
                power_w=round(float(sum(xj[j] * s.energy[j] for j in js)), 6),
                power_estimated=any(s.power_est[j] for j in js),
            )
        )
        for j in js:
            rec, sm = s.records[j], sms[j]
            model = c.models[s.m[j]]
            pred = response_quantile(loads, sm, q, pool.rtt_ms / 1e3) * 1e3
            assignments.append(
                Assignment(
                    model=model,
                    pool=pool.name,
                    server=name,
                    config=config_choice(rec, s.power[j], s.power_est[j]),
                    replicas=sg,
                    routed_rate_rps=round(float(xj[j]), 6),
                    utilisation=round(float(util), 6),
                    max_utilisation=round(c.rho_bar, 6),
                    predicted_latency_ms=round(pred, 4),
                    energy_w=round(float(xj[j] * s.energy[j]), 6),
                )
            )
            rep = c.reports[s.report[j]]
            rep.status = "chosen"
            rep.detail = f"shared: loaded on {sg} shared server(s) of {pool.name}, {xj[j]:.4g} req/s routed" + (
                f"; also dedicated ({rep.detail})" if rep.detail.startswith("dedicated") else ""
            )

    chosen_mp = {(a.model, a.pool) for a in assignments}
    for rep in c.reports:
        if rep.status == "not_chosen" and rep.detail in ("",):
            rep.detail = (
                "another configuration was chosen for this pool"
                if (rep.model, rep.pool) in chosen_mp
                else "pool capacity went to other models or was not needed"
            )

    unserved: list[Unserved] = []
    feasible = set(d.m) | set(s.m)
    for mi, dm in enumerate(workload.models):
        rate = float(u[mi])
        if rate <= EPS * max(1.0, dm.rate_rps):
            continue
        if mi not in feasible:
            reps = [r for r in c.reports if r.model == dm.model]
            if not reps:
                reason = "no pool has a profile for this model"
            else:
                best = min(reps, key=lambda r: r.response_p99_ms)
                reason = (
                    f"no configuration meets the {dm.deadline_ms:g} ms deadline on any pool "
                    f"(best: {best.config_id} on {best.pool}: {best.status.replace('_', ' ')}, {best.detail})"
                )
        else:
            reason = "capacity exhausted: every deadline-feasible pool is full"
        unserved.append(Unserved(model=dm.model, rate_rps=round(rate, 6), reason=reason))

    return Plan(
        objective=opts.objective,
        pools=list(cluster.pools),
        demands=list(workload.models),
        servers=servers,
        assignments=assignments,
        unserved=unserved,
        candidates=c.reports,
        solver=report,
    )
