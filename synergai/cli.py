"""`synergai` command line: a thin layer over the library.

Every bad input ends as one line on stderr (``synergai: error: file:row: field: message``)
and exit code 2; never a traceback; so does a command whose optional dependencies (an
"extra", see :mod:`synergai.extras`) are not installed.  Other packages add their commands
through ``register(app)`` functions (executor, experiments, profiler).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from synergai.models import ClusterSpec, InputError, Plan, ProfileTable, Trace, WorkloadSpec, json_schemas
from synergai.planner import OnlineScheduler, PlanOptions, plan_offline, solver_names

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Architecture-aware planner for ML inference on edge-to-cloud Kubernetes clusters.",
)
# a terminal sets the width; piped output is 160 columns wide unless $COLUMNS says otherwise
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)

VALID_ORIGINS = ("edge", "cloud")


def _version_callback(value: bool) -> None:
    if value:
        from synergai import __version__

        print(f"synergai {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version_callback,
        is_eager=True,
        help="Print the version (from the installed package metadata) and exit.",
    ),
):
    """Architecture-aware planner for ML inference on edge-to-cloud Kubernetes clusters."""


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


def _num(x: float) -> str:
    """Compact number: 3 significant digits below 100, whole numbers above."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def _power(w: Optional[float], estimated: bool) -> str:
    if w is None:
        return ""
    return f"~{_num(w)}*" if estimated else _num(w)


ESTIMATE_NOTE = (
    "* estimated: imputed power (no measurement for this configuration, e.g. a server's wall power "
    "spread over its accelerators), not a measurement"
)


def _assignment_estimated(plan: Plan, a) -> bool:
    if a.config.power_estimated:
        return True
    if a.server:
        return any(s.name == a.server and s.power_estimated for s in plan.servers)
    return False


def plan_summary(plan: Plan) -> str:
    """One line: served vs demanded load per model, then "all demand served" or what is not."""
    routed: dict[str, float] = {}
    for a in plan.assignments:
        routed[a.model] = routed.get(a.model, 0.0) + a.routed_rate_rps
    unserved = {u.model: u.rate_rps for u in plan.unserved if u.rate_rps > 1e-9}
    parts = []
    for d in sorted(plan.demands, key=lambda d: d.model):
        served = (
            max(0.0, d.rate_rps - unserved[d.model])
            if d.model in unserved
            else min(routed.get(d.model, 0.0), d.rate_rps)
        )
        parts.append(f"{d.model} {_num(served)}/{_num(d.rate_rps)}")
    tail = (
        "all demand served"
        if not unserved
        else "NOT served: " + ", ".join(f"{m} {_num(r)} req/s" for m, r in sorted(unserved.items()))
    )
    return "served/demanded req/s: " + ", ".join(parts) + " - " + tail


def objective_text(plan: Plan) -> str:
    """The solver's objective with its unit (per phase for the lexicographic objective)."""
    s = plan.solver
    if s.objective is None:
        return "objective n/a"
    units = {
        "unserved": "req/s (priority-weighted)",
        "headroom": "(capacity growth, unitless)",
        "energy": "W serving power (+ small resource term)",
    }
    if plan.objective == "lexicographic" and s.phases:
        ph = [
            f"{p.get('phase')} {_num(p['objective'])} {units.get(p.get('phase'), '')}".rstrip()
            for p in s.phases
            if p.get("objective") is not None
        ]
        return "objective (lexicographic) " + "; then ".join(ph)
    if plan.objective == "weighted":
        return f"objective {_num(s.objective)} (weighted: priority-weighted unserved req/s x a large weight + W serving power)"
    return f"objective {_num(s.objective)} W serving power (+ small resource term)"


def print_plan(plan: Plan, out: Console = console, wide: bool = False) -> None:
    """The plan as a table (fits 100 columns unless ``wide``), a summary line and the solver report."""
    dl = {d.model: d.deadline_ms for d in plan.demands}
    rows = sorted(plan.assignments, key=lambda a: (a.model, a.pool, a.server))
    shared = {s.name for s in plan.servers if s.shared}
    any_est = False
    t = Table(
        title=f"plan {plan.plan_id}",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    if wide:
        cols = [
            ("model", "left"),
            ("pool", "left"),
            ("server", "left"),
            ("configuration", "left"),
            ("replicas", "right"),
            ("rate req/s", "right"),
            ("util", "right"),
            ("cap", "right"),
            ("p99 pred ms", "right"),
            ("deadline ms", "right"),
            ("power W", "right"),
        ]
        if not plan.servers:
            cols.pop(2)
    else:
        cols = [
            ("model", "left"),
            ("pool", "left"),
            ("engine prec", "left"),
            ("batch", "right"),
            ("mode", "left"),
            ("repl", "right"),
            ("req/s", "right"),
            ("util/cap", "right"),
            ("p99/dl", "right"),
            ("W", "right"),
        ]
    for col, just in cols:
        # only the engine/configuration column wraps (at its space) when the terminal is narrow
        t.add_column(col, justify=just, no_wrap=col not in ("engine prec", "configuration"), overflow="fold")
    for a in rows:
        c = a.config
        est = _assignment_estimated(plan, a)
        any_est |= est
        standby = a.routed_rate_rps <= 0
        rate = "standby" if standby else _num(a.routed_rate_rps)
        pw = _power(a.energy_w, est)
        d = dl.get(a.model, float("nan"))
        pool = a.pool + (" (shared)" if a.server in shared else "")
        if wide:
            cells = (
                [a.model, pool]
                + ([a.server] if plan.servers else [])
                + [
                    c.config_id,
                    str(a.replicas),
                    rate,
                    f"{a.utilisation:.2f}",
                    f"{a.max_utilisation:.2f}",
                    f"{a.predicted_latency_ms:.1f}",
                    f"{d:g}",
                    pw,
                ]
            )
        else:
            cells = [
                a.model,
                pool,
                f"{c.engine} {c.precision}",
                str(c.batch_size),
                c.power_mode,
                str(a.replicas),
                rate,
                f"{a.utilisation * 100:.0f}/{a.max_utilisation * 100:.0f}%",
                f"{a.predicted_latency_ms:.{0 if a.predicted_latency_ms >= 10 else 1}f}/{d:g}",
                pw,
            ]
        t.add_row(*cells, style="dim" if standby else None)
    out.print(t)
    total_w = sum(a.energy_w for a in plan.assignments)
    total_est = any(_assignment_estimated(plan, a) for a in plan.assignments)
    legend = (
        ""
        if wide
        else "p99/dl: predicted p99 response / deadline, ms; util/cap: expected utilisation / "
        "the cap that keeps p99 inside the deadline; "
    )
    out.print(
        f"total power {'~' if total_est else ''}{_num(total_w)} W{'*' if total_est else ''}; {legend}"
        "standby: replicas kept warm for bursts (no traffic planned)",
        highlight=False,
    )
    if any_est:
        out.print(ESTIMATE_NOTE, highlight=False)
    for u in plan.unserved:
        out.print(f"[yellow]unserved[/] {u.model}: {u.rate_rps:.2f} req/s - {u.reason}")
    s = plan.solver
    gap = "n/a" if s.gap is None else f"{s.gap:.2%}"
    out.print(
        f"solver {s.backend}: {s.status}, gap {gap}, {s.seconds:.3f} s, {s.variables} variables, "
        f"{s.constraints} constraints; {objective_text(plan)}",
        highlight=False,
    )
    if s.message:
        out.print(f"  {s.message}")
    for n in plan.notes:
        out.print(f"note: {n}")
    out.print(plan_summary(plan), highlight=False)


@app.command()
def plan(
    profiles: Optional[list[Path]] = typer.Option(
        None,
        "--profiles",
        "-p",
        metavar="<path>",
        help="Profile CSV/Parquet (repeatable; merged, newer wins). Default: embedded MLPerf table.",
    ),
    cluster: Optional[Path] = typer.Option(None, "--cluster", "-c", help="ClusterSpec YAML/JSON. Default: embedded."),
    workload: Optional[Path] = typer.Option(
        None, "--workload", "-w", help="WorkloadSpec YAML/JSON. Default: embedded."
    ),
    trace: Optional[Path] = typer.Option(
        None,
        "--trace",
        "-t",
        help="Plan for the load of an arrival trace CSV (rates from it; deadlines from it or the workload).",
    ),
    solver: str = typer.Option("highs", "--solver", help=f"MILP back-end: {', '.join(solver_names())}."),
    time_limit: float = typer.Option(30.0, "--time-limit", help="Solver wall-time limit, s."),
    gap: float = typer.Option(1e-4, "--gap", help="Relative MIP gap at which to stop."),
    objective: str = typer.Option("lexicographic", "--objective", help="lexicographic | weighted"),
    load: float = typer.Option(1.0, "--load", help="Scale every model's rate by this factor."),
    headroom: float = typer.Option(
        1.5,
        "--headroom",
        help="Grow each served model's deadline-feasible capacity up to this factor before minimising energy (1 = off).",
    ),
    load_scenarios: Optional[str] = typer.Option(
        None,
        "--load-scenarios",
        help="Burst-aware planning: 'factor:probability,...' including 1:p, e.g. '1:0.8,3.5:0.2'.",
    ),
    dump_lp: Optional[Path] = typer.Option(None, "--dump-lp", help="Also write the phase-1 MILP in LP format."),
    what_if: bool = typer.Option(
        False,
        "--what-if",
        help="For unserved load, try one more node per pool and report the cheapest change that serves it.",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write the plan JSON here (nothing is written without it)."
    ),
    wide: bool = typer.Option(
        False, "--wide", help="Full configuration ids and one column per figure (wider than 100 columns)."
    ),
):
    """Solve the offline MILP; print the plan (and write it with --out)."""
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
            raise InputError(
                f"expected 'factor:probability,...' (got {load_scenarios!r})", field="--load-scenarios"
            ) from None
        if not any(f == 1.0 for f, _ in scen) or any(f <= 0 or p <= 0 for f, p in scen):
            raise InputError(
                "needs the nominal entry 1:p and positive factors and probabilities", field="--load-scenarios"
            )
    if headroom < 1.0:
        raise InputError("must be >= 1", field="--headroom")
    opts = PlanOptions(objective=objective, headroom=headroom, load_scenarios=scen)
    p = plan_offline(
        table,
        cl,
        wl,
        solver=solver,
        time_limit=time_limit,
        gap=gap,
        options=opts,
        cluster_file=str(cluster) if cluster else None,
        workload_file=str(workload) if workload else None,
    )
    if dump_lp:
        from synergai.planner.offline import build_model

        m, _, _ = build_model(table, cl, wl, opts)
        dump_lp.write_text(m.to_lp())
    print_plan(p, wide=wide)
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
    if dump_lp:
        console.print(f"wrote the phase-1 MILP to {dump_lp}", highlight=False)
    if out is not None:
        if out.is_dir():
            raise InputError("is a directory; give a file name such as plan.json", file=str(out), field="--out")
        p.save(out)
        console.print(f"wrote plan {p.plan_id} to {out}", highlight=False)
    else:
        console.print("plan not saved (add --out plan.json to write it)", highlight=False)


def _energy(j: Optional[float], estimated: bool) -> str:
    if j is None:
        return ""
    return f"~{j:.3f}*" if estimated else f"{j:.3f}"


@app.command()
def explain(
    plan_file: Path = typer.Argument(..., help="Plan JSON."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only this model."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Only this pool."),
):
    """Show every candidate considered per (model, pool) and why it was chosen or rejected."""
    p = Plan.load(plan_file)
    cands = [
        c for c in p.candidates if (model is None or c.model == model.lower()) and (pool is None or c.pool == pool)
    ]
    if model and not cands and p.demand(model.lower()) is None:
        raise InputError(f"model {model!r} is not in the plan", file=str(plan_file), field="--model")
    order = {
        "chosen": 0,
        "not_chosen": 1,
        "dominated": 2,
        "power_mode_conflict": 3,
        "misses_deadline": 4,
        "does_not_fit": 5,
    }
    t = Table(title=f"candidates in plan {p.plan_id}")
    for col in (
        "model",
        "pool",
        "configuration",
        "p99 ms",
        "p99+rtt ms",
        "cap req/s/replica",
        "J/req",
        "status",
        "why",
    ):
        t.add_column(col)
    for c in sorted(cands, key=lambda c: (c.model, c.pool, order.get(c.status, 9), c.response_p99_ms)):
        style = (
            "bold green" if c.status == "chosen" else ("dim" if c.status in ("misses_deadline", "does_not_fit") else "")
        )
        t.add_row(
            c.model,
            c.pool,
            c.config_id,
            f"{c.latency_p99_ms:.2f}",
            f"{c.response_p99_ms:.2f}",
            f"{c.capacity_rps:.1f}",
            _energy(c.energy_j_per_request, c.power_estimated),
            c.status.upper() if c.status == "chosen" else c.status,
            c.detail,
            style=style,
        )
    console.print(t)
    if any(c.power_estimated and c.energy_j_per_request is not None for c in cands):
        console.print(ESTIMATE_NOTE.replace("imputed power", "J/req from imputed power"), highlight=False)
    for u in p.unserved:
        if model is None or u.model == model.lower():
            console.print(f"[yellow]unserved[/] {u.model}: {u.rate_rps:.2f} req/s - {u.reason}")


def _check_origins(trace: Path) -> None:
    """Every ``origin`` cell is empty, edge or cloud (one line naming file, row and field otherwise)."""
    import pandas as pd

    try:
        df = pd.read_csv(trace, dtype=str, keep_default_na=False, usecols=lambda c: c.strip() == "origin")
    except (ValueError, OSError, pd.errors.ParserError):
        return  # Trace.load reports unreadable files
    if df.shape[1] == 0:
        return
    for i, v in enumerate(df.iloc[:, 0]):
        o = v.strip().lower()
        if o and o not in VALID_ORIGINS and o != "any":
            raise InputError(
                f"unknown origin {v!r}; expected one of {', '.join(VALID_ORIGINS)} (or empty)",
                file=str(trace),
                row=i + 2,
                field="origin",
            )


@app.command()
def assign(
    plan_file: Path = typer.Argument(..., help="Plan JSON (from `synergai plan --out`)."),
    trace: Path = typer.Option(
        ...,
        "--trace",
        "-t",
        help="Arrivals CSV: time_s, model[, deadline_ms, origin (edge|cloud)]; "
        "a sample ships as synergai/profiling_data/sample_arrivals.csv.",
    ),
    out: Path = typer.Option(Path("decisions.csv"), "--out", "-o", help="Decisions CSV."),
):
    """Replay a trace through the online stage (predicted times; use `experiment` to simulate).

    ``server`` is the server group (see the plan's ``servers``); ``replica`` the server's index within it.
    """
    import pandas as pd

    p = Plan.load(plan_file)
    known = {d.model for d in p.demands} | {a.model for a in p.assignments} | {c.model for c in p.candidates}
    _check_origins(trace)
    tr = Trace.load(trace, known_models=known)
    sched = OnlineScheduler(p, clock=lambda: 0.0)
    rows = []
    t0 = time.perf_counter()
    for i in range(len(tr)):
        dl = tr.deadline_ms[i]
        o = tr.origin[i]
        d = sched.assign(
            tr.model[i],
            None if dl != dl else float(dl),
            now=float(tr.time_s[i]),
            origin=o if isinstance(o, str) and o in VALID_ORIGINS else None,
        )
        local = sched.servers[d.replica][1] if d.replica >= 0 else -1
        rows.append(
            (tr.time_s[i], d.model, d.pool, d.server, local, d.start_s, d.finish_s, d.meets, d.lateness_ms, d.reason)
        )
    el = time.perf_counter() - t0
    if out.is_dir():
        raise InputError("is a directory; give a file name such as decisions.csv", file=str(out), field="--out")
    pd.DataFrame(
        rows,
        columns=[
            "time_s",
            "model",
            "pool",
            "server",
            "replica",
            "start_s",
            "est_finish_s",
            "meets_deadline",
            "est_lateness_ms",
            "reason",
        ],
    ).to_csv(out, index=False)
    met = sum(r[7] for r in rows)
    console.print(
        f"{len(rows)} decisions, {met} predicted to meet their deadline, "
        f"{el / max(1, len(rows)) * 1e6:.1f} us/decision; wrote {out}",
        highlight=False,
    )


@app.command()
def schema(out: Path = typer.Option(Path("schemas"), "--out", "-o", help="Directory for the JSON Schema files.")):
    """Write the JSON Schemas of every input and output document."""
    out.mkdir(parents=True, exist_ok=True)
    for name, sch in json_schemas().items():
        (out / f"{name}.schema.json").write_text(json.dumps(sch, indent=2) + "\n")
        console.print(f"wrote {out / (name + '.schema.json')}")


def _register_plugins() -> None:
    import importlib

    for mod in (
        "synergai.experiments.cli",
        "synergai.executor.cli",
        "synergai.profiling_data.cli",
        "synergai.executor.serving_cli",
    ):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue
            raise
        m.register(app)


def _command_name(argv: list[str]) -> Optional[str]:
    names = set(_command_names())
    for a in argv:
        if a in names:
            return a
    return None


def _command_names() -> list[str]:
    names = []
    for c in app.registered_commands:
        names.append(c.name or (c.callback.__name__.replace("_", "-") if c.callback else ""))
    return names


def _plain_flags(cmd) -> None:
    """Flags take no value: show no type placeholder (typer renders ``<bool>`` for every flag otherwise)."""
    for param in getattr(cmd, "params", ()):
        if getattr(param, "is_flag", False) and not getattr(param, "count", False) and param.metavar is None:
            param.metavar = ""
    orig = getattr(cmd, "get_help_option", None)
    if orig is not None:

        def get_help_option(ctx, _orig=orig):
            opt = _orig(ctx)
            if opt is not None and opt.metavar is None:
                opt.metavar = ""
            return opt

        cmd.get_help_option = get_help_option
    for sub in getattr(cmd, "commands", {}).values():
        _plain_flags(sub)


def main(argv: Optional[list[str]] = None) -> int:
    _register_plugins()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cmd = typer.main.get_command(app)
        _plain_flags(cmd)
        cmd.main(args=args, prog_name="synergai", standalone_mode=True)
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
    except ModuleNotFoundError as e:
        from synergai.extras import missing_extra_message

        msg = missing_extra_message(e, _command_name(args))
        if msg is None:
            raise
        print(f"synergai: error: {msg}", file=sys.stderr)
        if argv is not None:
            return 2
        sys.exit(2)
    except KeyboardInterrupt:
        print("synergai: interrupted", file=sys.stderr)
        sys.exit(130)
    return 0


if __name__ == "__main__":
    main()
