"""`synergai` command line: a thin layer over the library.

Every bad input ends as one line on stderr (``synergai: error: file:row: field: message``)
and exit code 2; never a traceback.  Other packages add their commands through
``register(app)`` functions (executor, experiments, profiler).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from synergai.models import ClusterSpec, InputError, Plan, ProfileTable, Trace, WorkloadSpec, json_schemas
from synergai.planner import OnlineScheduler, PlanOptions, plan_offline, solver_names

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Architecture-aware planner for ML inference on edge-to-cloud Kubernetes clusters.")
console = Console(width=None if sys.stdout.isatty() else 160)


def load_inputs(profiles: Optional[list[Path]], cluster: Optional[Path], workload: Optional[Path]):
    """Inputs or the embedded defaults; several profile files are merged (newer measurement wins)."""
    import synergai.profiling_data as pd_
    if profiles:
        tables = [ProfileTable.load(p) for p in profiles]
        table = tables[0] if len(tables) == 1 else ProfileTable.merge(tables)
    else:
        table = pd_.default_profiles()
    cl = ClusterSpec.load(cluster) if cluster else pd_.default_cluster()
    wl = WorkloadSpec.load(workload) if workload else pd_.default_workload()
    return table, cl, wl


def print_plan(plan: Plan, out: Console = console) -> None:
    t = Table(title=f"plan {plan.plan_id}  ({plan.objective} objective)", show_lines=False)
    for col, just in (("model", "left"), ("pool", "left"), ("configuration", "left"), ("replicas", "right"),
                      ("rate req/s", "right"), ("util", "right"), ("p99 pred ms", "right"), ("deadline ms", "right"),
                      ("power W", "right")):
        t.add_column(col, justify=just)
    dl = {d.model: d.deadline_ms for d in plan.demands}
    for a in sorted(plan.assignments, key=lambda a: (a.model, a.pool)):
        t.add_row(a.model, a.pool, a.config.config_id, str(a.replicas), f"{a.routed_rate_rps:.1f}",
                  f"{a.utilisation:.2f}", f"{a.predicted_latency_ms:.1f}", f"{dl.get(a.model, float('nan')):g}",
                  f"{a.energy_w:.1f}")
    out.print(t)
    for u in plan.unserved:
        out.print(f"[yellow]unserved[/] {u.model}: {u.rate_rps:.2f} req/s - {u.reason}")
    s = plan.solver
    gap = "n/a" if s.gap is None else f"{s.gap:.2%}"
    out.print(f"solver {s.backend}: {s.status}, objective {s.objective if s.objective is None else round(s.objective, 4)}, "
              f"bound {s.best_bound if s.best_bound is None else round(s.best_bound, 4)}, gap {gap}, {s.seconds:.3f} s, "
              f"{s.variables} variables, {s.constraints} constraints")
    if s.message:
        out.print(f"  {s.message}")
    for n in plan.notes:
        out.print(f"note: {n}")


@app.command()
def plan(profiles: Optional[list[Path]] = typer.Option(None, "--profiles", "-p", help="Profile CSV/Parquet (repeatable; merged, newer wins). Default: embedded MLPerf table."),
         cluster: Optional[Path] = typer.Option(None, "--cluster", "-c", help="ClusterSpec YAML/JSON. Default: embedded."),
         workload: Optional[Path] = typer.Option(None, "--workload", "-w", help="WorkloadSpec YAML/JSON. Default: embedded."),
         trace: Optional[Path] = typer.Option(None, "--trace", "-t", help="Plan for the load of an arrival trace CSV (rates from it; deadlines from it or the workload)."),
         solver: str = typer.Option("highs", "--solver", help=f"MILP back-end: {', '.join(solver_names())}."),
         time_limit: float = typer.Option(30.0, "--time-limit", help="Solver wall-time limit, s."),
         gap: float = typer.Option(1e-4, "--gap", help="Relative MIP gap at which to stop."),
         objective: str = typer.Option("lexicographic", "--objective", help="lexicographic | weighted"),
         load: float = typer.Option(1.0, "--load", help="Scale every model's rate by this factor."),
         headroom: float = typer.Option(1.5, "--headroom", help="Grow each served model's deadline-feasible capacity up to this factor before minimising energy (1 = off)."),
         load_scenarios: Optional[str] = typer.Option(None, "--load-scenarios", help="Burst-aware planning: 'factor:probability,...' including 1:p, e.g. '1:0.8,3.5:0.2'."),
         dump_lp: Optional[Path] = typer.Option(None, "--dump-lp", help="Also write the phase-1 MILP in LP format."),
         what_if: bool = typer.Option(False, "--what-if", help="For unserved load, try one more node per pool and report the cheapest change that serves it."),
         out: Path = typer.Option(Path("plan.json"), "--out", "-o", help="Where to write the plan JSON.")):
    """Solve the offline MILP and write a plan."""
    if objective not in ("lexicographic", "weighted"):
        raise InputError(f"unknown objective {objective!r}; choose lexicographic or weighted", field="--objective")
    if solver not in solver_names():
        raise InputError(f"unknown solver {solver!r}; choose one of {', '.join(solver_names())}", field="--solver")
    if load <= 0:
        raise InputError("must be > 0", field="--load")
    table, cl, wl = load_inputs(profiles, cluster, workload)
    if trace is not None:
        tr = Trace.load(trace, known_models=set(table.models))
        try:
            wl = WorkloadSpec.from_trace(tr, wl, name=trace.stem)
        except InputError as e:
            raise InputError(e.message, file=str(trace), field=e.field) from None
    if load != 1.0:
        wl = wl.scaled(load)
    scen = ()
    if load_scenarios:
        try:
            scen = tuple((float(f), float(p)) for f, p in (item.split(":") for item in load_scenarios.split(",")))
        except ValueError:
            raise InputError(f"expected 'factor:probability,...' (got {load_scenarios!r})", field="--load-scenarios") from None
        if not any(f == 1.0 for f, _ in scen) or any(f <= 0 or p <= 0 for f, p in scen):
            raise InputError("needs the nominal entry 1:p and positive factors and probabilities", field="--load-scenarios")
    if headroom < 1.0:
        raise InputError("must be >= 1", field="--headroom")
    opts = PlanOptions(objective=objective, headroom=headroom, load_scenarios=scen)
    p = plan_offline(table, cl, wl, solver=solver, time_limit=time_limit, gap=gap, options=opts,
                     cluster_file=str(cluster) if cluster else None, workload_file=str(workload) if workload else None)
    if dump_lp:
        from synergai.planner.candidates import build_candidates
        from synergai.planner.milp import build_milp
        c = build_candidates(table, cl, wl, opts)
        m = build_milp(c, [(d.rate_rps, d.priority) for d in wl.models],
                       [(q.cpu, q.memory_mb, float(q.accelerators), q.nodes) for q in cl.pools], opts)
        dump_lp.write_text(m.to_lp())
    p.save(out)
    print_plan(p)
    if what_if:
        from synergai.planner.whatif import what_if as _what_if
        ws = _what_if(p, table, cl, wl, solver=solver, time_limit=time_limit, options=opts)
        if not p.unserved:
            console.print("what-if: nothing is unserved")
        for w in ws:
            after = "n/a" if w.unserved_after != w.unserved_after else f"{w.unserved_after:.1f}"
            console.print(f"what-if {w.model}: {w.change}: unserved {w.unserved_before:.1f} -> {after} req/s")
        if p.unserved and not ws:
            console.print("what-if: one more node in any single pool does not serve more")
    console.print(f"wrote {out}")


@app.command()
def explain(plan_file: Path = typer.Argument(..., help="Plan JSON."),
            model: Optional[str] = typer.Option(None, "--model", "-m", help="Only this model."),
            pool: Optional[str] = typer.Option(None, "--pool", help="Only this pool.")):
    """Show every candidate considered per (model, pool) and why it was chosen or rejected."""
    p = Plan.load(plan_file)
    cands = [c for c in p.candidates if (model is None or c.model == model.lower()) and (pool is None or c.pool == pool)]
    if model and not cands and p.demand(model.lower()) is None:
        raise InputError(f"model {model!r} is not in the plan", file=str(plan_file), field="--model")
    order = {"chosen": 0, "not_chosen": 1, "dominated": 2, "power_mode_conflict": 3, "misses_deadline": 4, "does_not_fit": 5}
    t = Table(title=f"candidates in plan {p.plan_id}")
    for col in ("model", "pool", "configuration", "p99 ms", "p99+rtt ms", "cap req/s/replica", "J/req", "status", "why"):
        t.add_column(col)
    for c in sorted(cands, key=lambda c: (c.model, c.pool, order.get(c.status, 9), c.response_p99_ms)):
        style = "bold green" if c.status == "chosen" else ("dim" if c.status in ("misses_deadline", "does_not_fit") else "")
        t.add_row(c.model, c.pool, c.config_id, f"{c.latency_p99_ms:.2f}", f"{c.response_p99_ms:.2f}",
                  f"{c.capacity_rps:.1f}", "" if c.energy_j_per_request is None else f"{c.energy_j_per_request:.3f}",
                  c.status.upper() if c.status == "chosen" else c.status, c.detail, style=style)
    console.print(t)
    for u in p.unserved:
        if model is None or u.model == model.lower():
            console.print(f"[yellow]unserved[/] {u.model}: {u.rate_rps:.2f} req/s - {u.reason}")


@app.command()
def assign(plan_file: Path = typer.Argument(..., help="Plan JSON."),
           trace: Path = typer.Option(..., "--trace", "-t", help="Arrivals CSV: time_s, model[, deadline_ms, origin]."),
           out: Path = typer.Option(Path("decisions.csv"), "--out", "-o", help="Decisions CSV.")):
    """Replay a trace through the online stage (predicted times; use `experiment` to simulate)."""
    import pandas as pd

    p = Plan.load(plan_file)
    tr = Trace.load(trace)
    sched = OnlineScheduler(p, clock=lambda: 0.0)
    rows = []
    t0 = time.perf_counter()
    for i in range(len(tr)):
        dl = tr.deadline_ms[i]
        d = sched.assign(tr.model[i], None if dl != dl else float(dl), now=float(tr.time_s[i]),
                         origin=None if tr.origin[i] == "any" else tr.origin[i])
        rows.append((tr.time_s[i], d.model, d.replica, d.pool, d.start_s, d.finish_s, d.meets, d.lateness_ms, d.reason))
    el = time.perf_counter() - t0
    pd.DataFrame(rows, columns=["time_s", "model", "replica", "pool", "start_s", "est_finish_s", "meets_deadline",
                                "est_lateness_ms", "reason"]).to_csv(out, index=False)
    met = sum(r[6] for r in rows)
    console.print(f"{len(rows)} decisions, {met} predicted to meet their deadline, "
                  f"{el / max(1, len(rows)) * 1e6:.1f} us/decision; wrote {out}")


@app.command()
def schema(out: Path = typer.Option(Path("schemas"), "--out", "-o", help="Directory for the JSON Schema files.")):
    """Write the JSON Schemas of every input and output document."""
    out.mkdir(parents=True, exist_ok=True)
    for name, sch in json_schemas().items():
        (out / f"{name}.schema.json").write_text(json.dumps(sch, indent=2) + "\n")
        console.print(f"wrote {out / (name + '.schema.json')}")


def _register_plugins() -> None:
    import importlib

    for mod in ("synergai.experiments.cli", "synergai.executor.cli", "synergai.profiling_data.cli"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue
            raise
        m.register(app)


def main(argv: Optional[list[str]] = None) -> int:
    _register_plugins()
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if argv is not None:
            return code
        raise
    except InputError as e:
        print(f"synergai: error: {e}", file=sys.stderr)
        if argv is not None:
            return 2
        sys.exit(2)
    except KeyboardInterrupt:
        print("synergai: interrupted", file=sys.stderr)
        sys.exit(130)
    return 0


if __name__ == "__main__":
    main()
