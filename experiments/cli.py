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
    def experiment(
        scenario: Optional[list[str]] = typer.Option(
            None, "--scenario", "-s", help="Built-in scenario name or a scenario YAML path (repeatable)."
        ),
        all_: bool = typer.Option(False, "--all", help="Every built-in scenario."),
        quick: bool = typer.Option(False, "--quick", help="Reduced arrivals, loads and seeds (< 2 minutes for --all)."),
        out: Path = typer.Option(Path("results"), "--out", "-o", help="Output directory."),
        seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds 0..N-1 instead of the scenario's."),
        arrivals: Optional[int] = typer.Option(
            None, "--arrivals", min=1, help="Arrivals per run instead of the scenario's (also with --quick)."
        ),
        policies: Optional[str] = typer.Option(
            None, "--policies", help="Comma-separated policy names (default: the scenario's)."
        ),
        list_: bool = typer.Option(False, "--list", help="List scenarios and policies, then exit."),
        no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
        profiles: Optional[list[Path]] = typer.Option(
            None,
            "--profiles",
            "-p",
            help="Profile CSV/Parquet for every scenario (repeatable; merged, newer wins). Default: each scenario's (embedded MLPerf table).",
        ),
        cluster: Optional[Path] = typer.Option(
            None,
            "--cluster",
            "-c",
            help="Cluster YAML/JSON for every scenario (scenario variants apply on top; scenarios whose variant does not fit it are skipped).",
        ),
        workload: Optional[Path] = typer.Option(
            None, "--workload", "-w", help="Workload YAML/JSON: the `default` mix and deadlines of every scenario."
        ),
        data_dir: Optional[Path] = typer.Option(
            None,
            "--data-dir",
            help="Directory of trace files named by relative paths in scenarios (default: $SYNERGAI_DATA_DIR, else ../shared/data next to the repository if present).",
        ),
        skip_unprofiled: bool = typer.Option(
            False,
            "--skip-unprofiled",
            help="Plan around cluster pools whose device has no profile (they stay unused) instead of failing those runs.",
        ),
        jobs: Optional[int] = typer.Option(
            None, "--jobs", "-j", help="Local worker processes (default: min(2, CPUs)); results do not depend on it."
        ),
        ray: Optional[str] = typer.Option(
            None,
            "--ray",
            help="Run cells on this Ray cluster (address, or `local`); needs `pip install 'ray[default]'`.",
        ),
    ):
        """Simulate policies on scenarios; write results.csv, report.md and PNG plots.

        Without --scenario or --all, runs the default (headline) scenarios."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from .policies import POLICIES, get_policy
        from .report import write_plots, write_report
        from .runner import count_tasks, default_jobs, run_sweep, write_outputs
        from .scenarios import DataOptions, builtin_scenarios, load_scenario, resolve

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
        if jobs is not None and jobs < 1:
            raise InputError("must be >= 1", field="--jobs")
        for flag, paths in (
            ("--profiles", profiles or []),
            ("--cluster", [cluster] if cluster else []),
            ("--workload", [workload] if workload else []),
        ):
            for p in paths:
                if not p.is_file():
                    raise InputError("file not found", file=str(p), field=flag)
        if data_dir is not None and not data_dir.is_dir():
            raise InputError("not a directory", file=str(data_dir), field="--data-dir")
        if ray:
            try:
                import ray as _ray  # noqa: F401
            except ImportError:
                raise InputError("Ray is not installed; pip install 'ray[default]'", field="--ray") from None
        data = DataOptions(
            profiles=tuple(str(p) for p in profiles or ()),
            cluster=str(cluster) if cluster else None,
            workload=str(workload) if workload else None,
            data_dir=str(data_dir) if data_dir else None,
            skip_unprofiled=skip_unprofiled,
        )
        if data.overrides:  # fail fast on a malformed user file (one line), before any simulation
            from synergai.models import ClusterSpec, ProfileTable, WorkloadSpec

            for p in data.profiles:
                ProfileTable.load(p)
            if data.cluster:
                ClusterSpec.load(data.cluster)
            if data.workload:
                WorkloadSpec.load(data.workload)
        pol = None
        if policies:
            pol = [p.strip() for p in policies.split(",") if p.strip()]
            for p in pol:
                get_policy(p)
        if all_:
            scens = [load_scenario(p) for p in builtin_scenarios().values()]
        elif scenario:
            scens = [resolve(s) for s in scenario]
        else:  # the default set: the headline scenarios
            scens = [sc for sc in (load_scenario(p) for p in builtin_scenarios().values()) if sc.headline]
        total = count_tasks(scens, quick, seeds, pol, data=data, arrivals=arrivals)
        t0 = time.perf_counter()
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as prog:
            task = prog.add_task("simulating", total=total)

            def advance(name: str, k: int) -> None:
                prog.update(task, advance=k, description=f"simulating {name}")

            results, util, opt = run_sweep(
                scens,
                quick=quick,
                seeds=seeds,
                policies=pol,
                progress=advance,
                log=lambda m: console.print(f"[yellow]{m}[/]", soft_wrap=True),
                data=data,
                jobs=jobs or default_jobs(),
                ray=ray,
                arrivals=arrivals,
            )
        paths = write_outputs(out, results, util, opt)
        cmd = "synergai experiment " + " ".join(
            (["--all"] if all_ else [f"--scenario {shlex.quote(s)}" for s in scenario or []])
            + (["--quick"] if quick else [])
            + ([f"--seeds {seeds}"] if seeds else [])
            + ([f"--arrivals {arrivals}"] if arrivals else [])
            + ([f"--policies {policies}"] if policies else [])
            + [f"--profiles {shlex.quote(str(p))}" for p in profiles or []]
            + ([f"--cluster {shlex.quote(str(cluster))}"] if cluster else [])
            + ([f"--workload {shlex.quote(str(workload))}"] if workload else [])
            + ([f"--data-dir {shlex.quote(str(data_dir))}"] if data_dir else [])
            + (["--skip-unprofiled"] if skip_unprofiled else [])
            + [f"--out {shlex.quote(str(out))}"]
        )
        paths.append(write_report(out, results, util, opt, command=cmd))
        if not no_plots:
            paths += write_plots(out, results, util)
        console.print(f"{len(results)} runs in {time.perf_counter() - t0:.1f} s")
        for p in paths:
            console.print(f"wrote {p}")
