"""`synergai experiment`: run scenarios, write results.csv, report.md and plots."""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Optional

import typer

from synergai.models import InputError


def register(app: typer.Typer) -> None:
    @app.command()
    def experiment(scenario: Optional[list[str]] = typer.Option(None, "--scenario", "-s", help="Built-in scenario name or a scenario YAML path (repeatable)."),
                   all_: bool = typer.Option(False, "--all", help="Every built-in scenario."),
                   quick: bool = typer.Option(False, "--quick", help="Reduced arrivals, loads and seeds (< 2 minutes for --all)."),
                   out: Path = typer.Option(Path("results"), "--out", "-o", help="Output directory."),
                   seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds 0..N-1 instead of the scenario's."),
                   policies: Optional[str] = typer.Option(None, "--policies", help="Comma-separated policy names (default: the scenario's)."),
                   list_: bool = typer.Option(False, "--list", help="List scenarios and policies, then exit."),
                   no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots.")):
        """Simulate policies on scenarios; write results.csv, report.md and PNG plots."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from .policies import POLICIES, get_policy
        from .report import write_plots, write_report
        from .runner import count_tasks, run_sweep, write_outputs
        from .scenarios import builtin_scenarios, load_scenario, resolve

        console = Console(stderr=True)
        if list_:
            for name, path in builtin_scenarios().items():
                sc = load_scenario(path)
                console.print(f"[bold]{name}[/]{' (headline)' if sc.headline else ''}: {sc.description}")
            for name, cls in POLICIES.items():
                console.print(f"policy [bold]{name}[/]: {cls.doc}")
            return
        if seeds is not None and seeds < 1:
            raise InputError("must be >= 1", field="--seeds")
        pol = None
        if policies:
            pol = [p.strip() for p in policies.split(",") if p.strip()]
            for p in pol:
                get_policy(p)
        if all_:
            scens = [load_scenario(p) for p in builtin_scenarios().values()]
        elif scenario:
            scens = [resolve(s) for s in scenario]
        else:
            raise InputError("give --scenario NAME (repeatable) or --all", field="--scenario")
        total = count_tasks(scens, quick, seeds, pol)
        t0 = time.perf_counter()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as prog:
            task = prog.add_task("simulating", total=total)

            def advance(name: str, k: int) -> None:
                prog.update(task, advance=k, description=f"simulating {name}")

            results, util, opt = run_sweep(scens, quick=quick, seeds=seeds, policies=pol, progress=advance,
                                           log=lambda m: console.print(f"[yellow]{m}[/]"))
        paths = write_outputs(out, results, util, opt)
        cmd = "synergai experiment " + " ".join(
            (["--all"] if all_ else [f"--scenario {shlex.quote(s)}" for s in scenario or []])
            + (["--quick"] if quick else []) + ([f"--seeds {seeds}"] if seeds else [])
            + ([f"--policies {policies}"] if policies else []) + [f"--out {shlex.quote(str(out))}"])
        paths.append(write_report(out, results, util, opt, command=cmd))
        if not no_plots:
            paths += write_plots(out, results, util)
        console.print(f"{len(results)} runs in {time.perf_counter() - t0:.1f} s")
        for p in paths:
            console.print(f"wrote {p}")
