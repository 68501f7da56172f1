"""CLI commands of the profiler: ``profile``, ``import-mlperf``, ``profile-cluster``.

Registered into the main ``synergai`` app by :func:`register` (see ``synergai/cli.py``).  Bad input raises
``models.InputError`` (one line on stderr, exit 2).  Numeric options are parsed here rather than by click
so that a bad value is a one-line error like every other one.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from synergai.models import ClusterSpec, InputError, ProfileTable

# logs of a Job or CI are not terminals: give the results table room instead of truncating it
console = Console(soft_wrap=True) if sys.stdout.isatty() else Console(width=160, soft_wrap=True)

DEFAULT_OUT = Path("measured_profiles.csv")


def _fail(message: str) -> None:
    """A failure that is not bad input (cluster/API): one line on stderr, exit 1."""
    print(f"synergai: error: {' '.join(message.split())}", file=sys.stderr)
    raise typer.Exit(1)


def _int(v: Optional[str], flag: str) -> Optional[int]:
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:
        raise InputError(f"not an integer (got {v!r})", field=flag) from None


def _float(v: Optional[str], flag: str) -> Optional[float]:
    if v is None:
        return None
    try:
        x = float(v)
    except ValueError:
        raise InputError(f"not a number (got {v!r})", field=flag) from None
    if not math.isfinite(x):
        raise InputError(f"not a finite number (got {v!r})", field=flag)
    return x


# ------------------------------------------------------------------------------------------------ profile
def _engines_table() -> Table:
    from synergai.profiling_data.profiler import engines as eng

    t = Table(title="inference engines")
    t.add_column("engine")
    t.add_column("status")
    t.add_column("version / reason")
    for name, (ok, why) in eng.availability().items():
        t.add_row(name, "[green]available[/]" if ok else "[yellow]unavailable[/]", escape(why))
    return t


def _results_table(outcomes, title: str) -> Table:
    t = Table(title=title)
    for col, j in (
        ("model", "left"),
        ("engine", "left"),
        ("prec", "left"),
        ("batch", "right"),
        ("thr", "right"),
        ("p50 ms", "right"),
        ("p90 ms", "right"),
        ("p99 ms", "right"),
        ("p99/p50", "right"),
        ("req/s", "right"),
        ("repeat CV", "right"),
        ("CPU cores", "right"),
        ("peak MiB", "right"),
    ):
        t.add_column(col, justify=j)
    for o in outcomes:
        if not o.ok:
            continue
        r, m = o.record, o.meta
        t.add_row(
            r.model,
            r.engine,
            r.precision,
            str(r.batch_size),
            str(r.threads),
            f"{r.latency_p50_ms:.3f}",
            f"{r.latency_p90_ms:.3f}",
            f"{r.latency_p99_ms:.3f}",
            f"{m.get('spread_p99_p50', r.latency_p99_ms / r.latency_p50_ms):.2f}",
            f"{r.throughput_rps:.1f}",
            f"{100 * m.get('repeat_cv', 0.0):.1f}%",
            f"{m.get('cpu_util_cores', 0.0):.2f}",
            f"{r.memory_mb or 0:.0f}",
        )
    return t


def profile(
    engine: Optional[list[str]] = typer.Option(
        None,
        "--engine",
        "-e",
        help="Engine (repeatable or comma list): onnxruntime (default), openvino, or `all` available.",
    ),
    model_name: Optional[list[str]] = typer.Option(
        None,
        "--model-name",
        "-m",
        help="Built-in model (repeatable): resnet, mobilenet, transformer (= resnet50, mobilenet-v2, bert-mini) or resnet-tiny, mobilenet-tiny, transformer-tiny. Default: the three real ones.",
    ),
    model: Optional[list[Path]] = typer.Option(
        None, "--model", help="Your own ONNX file (repeatable); first input dimension = batch."
    ),
    batch: Optional[list[str]] = typer.Option(
        None, "--batch", "-b", help="Batch sizes (repeatable or comma list). Default 1,2,4,8,16 (quick: 1,4)."
    ),
    threads: Optional[list[str]] = typer.Option(
        None,
        "--threads",
        "-t",
        help="Thread counts (<= usable cores). Default powers of two up to the cores (quick: 1 and all).",
    ),
    precision: Optional[list[str]] = typer.Option(None, "--precision", help="fp32, int8 (default both)."),
    budget: Optional[str] = typer.Option(
        None, "--budget", help="Measure at most N configurations, chosen to find the Pareto front (coarse-to-fine)."
    ),
    out: Path = typer.Option(
        DEFAULT_OUT, "--out", "-o", help="Profile CSV to append to (resumable); details go to OUT.meta.jsonl."
    ),
    force: bool = typer.Option(False, "--force", help="Re-measure configurations already in --out."),
    device: Optional[str] = typer.Option(
        None,
        "--device",
        help="Device name for the records (default: derived from this machine), e.g. a ClusterSpec pool's device.",
    ),
    min_runs: Optional[str] = typer.Option(
        None, "--min-runs", help="Timed calls per configuration, at least (default 30; quick 6)."
    ),
    min_time: Optional[str] = typer.Option(
        None, "--min-time", help="Timed seconds per configuration, at least (default 2; quick 0.3)."
    ),
    quick: bool = typer.Option(False, "--quick", help="Small grid and short timings (about a minute on a small node)."),
    list_engines: bool = typer.Option(False, "--list-engines", help="Show which engines are available and exit."),
    publish_configmap: Optional[str] = typer.Option(
        None, "--publish-configmap", help="Inside a profiling Job: write the result into this ConfigMap."
    ),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool name recorded in the published ConfigMap."),
    namespace: Optional[str] = typer.Option(
        None, "--namespace", help="Namespace of the published ConfigMap (default: the pod's)."
    ),
    kubeconfig: Optional[Path] = typer.Option(
        None, "--kubeconfig", help="With --publish-configmap outside a pod: the kubeconfig to use."
    ),
):
    """Measure real inference on this node for a grid of configurations and append ProfileRecords."""
    from synergai.profiling_data.profiler import runner

    if list_engines:
        console.print(_engines_table())
        return
    if publish_configmap and not pool:
        raise InputError("--publish-configmap needs --pool", field="--pool")
    plan = runner.make_plan(
        engines=runner.parse_list(engine, "--engine"),
        model_names=runner.parse_list(model_name, "--model-name"),
        model_paths=list(model or []),
        precisions=runner.parse_list(precision, "--precision"),
        batches=runner.parse_ints(batch, "--batch"),
        threads=runner.parse_ints(threads, "--threads"),
        quick=quick,
        budget=_int(budget, "--budget"),
        device=device,
        min_runs=_int(min_runs, "--min-runs"),
        min_time=_float(min_time, "--min-time"),
    )
    store = runner.Store(out)
    f = plan.facts
    console.print(
        f"device [bold]{escape(f.device)}[/] ({escape(f.cpu_model)}, {f.architecture}, {f.cores_usable} usable of "
        f"{f.cores_online} cores, accelerator {f.accelerator}, power mode {f.power_mode})"
    )
    for name, why in plan.unavailable.items():
        console.print(f"[yellow]engine {name}: unavailable[/] - {escape(why)}; skipped")
    grid = plan.grid()
    console.print(
        f"grid: {len(plan.models)} model(s) x {len(plan.engines)} engine(s) x {len(plan.precisions)} precision(s) x "
        f"batch {plan.batches} x threads {plan.threads} = {len(grid)} configurations"
        + (f"; budget {plan.budget}" if plan.budget is not None else "")
        + f"; settings {plan.settings.compact()}"
    )

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = None
    failures: list[str] = []

    def on_start(total: int):
        nonlocal task
        task = progress.add_task("profiling", total=total)

    def measure_fn(p, c):
        progress.update(task, description=c.label())
        return runner.measure_config(p, c, energy=energy)

    def on_done(o):
        if o.error:
            failures.append(f"{o.config.label()}: {o.error}")
        progress.advance(task)

    from synergai.profiling_data.profiler import device as dev

    energy = dev.Rapl()
    t0 = time.perf_counter()
    interrupted = False
    with progress:
        try:
            outcomes = runner.run(plan, store, force=force, on_start=on_start, on_done=on_done, measure_fn=measure_fn)
        except KeyboardInterrupt as e:
            outcomes = getattr(e, "outcomes", [])
            interrupted = True
    wall = time.perf_counter() - t0
    measured = [o for o in outcomes if o.ok]
    skipped = [o for o in outcomes if o.skipped]
    if measured:
        console.print(_results_table(measured, f"measured on {f.device}"))
    for line in failures:
        console.print(f"[yellow]not measured[/] {escape(line)}")
    spreads = [o.meta.get("spread_p99_p50", 0) for o in measured]
    cvs = [o.meta.get("repeat_cv", 0) for o in measured]
    summary = (
        f"{len(measured)} measured, {len(skipped)} already in {out} (skipped; --force re-measures), "
        f"{len(failures)} not measurable, {wall:.1f} s"
    )
    if measured:
        summary += (
            f"; spread p99/p50 median {statistics.median(spreads):.2f} (max {max(spreads):.2f}), "
            f"repeat CV median {100 * statistics.median(cvs):.1f}% (max {100 * max(cvs):.1f}%)"
        )
    console.print(summary)
    if interrupted:
        console.print(f"[yellow]interrupted[/]: kept {len(measured)} new record(s) in {out}; run again to resume")
        raise typer.Exit(130)
    console.print(f"wrote {out} ({len(store.records)} records) and {store.meta_path}")
    if publish_configmap:
        from synergai.executor import profiling_jobs as pj

        if not out.exists():
            raise InputError("nothing measured, nothing to publish", file=str(out))
        try:
            api = pj.api_client(str(kubeconfig) if kubeconfig else None)
            line = pj.publish(
                api, out, name=publish_configmap, pool=pool, device=f.device, namespace=namespace or pj.pod_namespace()
            )
        except pj.ProfileJobError as e:
            _fail(str(e))
        console.print(line)


# ------------------------------------------------------------------------------------------ import-mlperf
def import_mlperf(
    data: Optional[Path] = typer.Option(
        None,
        "--data",
        help="Directory with results.csv and systems.csv (default: ../shared/data/mlperf-inference-v3.0).",
    ),
    results: Optional[Path] = typer.Option(
        None, "--results", help="results.csv of an MLPerf Inference round (with --systems)."
    ),
    systems: Optional[Path] = typer.Option(None, "--systems", help="systems.csv of the same round."),
    round_label: Optional[str] = typer.Option(
        None, "--round", help="Round label (e.g. v3.1) when the results have no `round` column."
    ),
    published: Optional[str] = typer.Option(
        None,
        "--published",
        help="Round publication date YYYY-MM-DD (measured_at); default: from the round's own metadata (a date column, or round.yaml/SOURCE.md/README.md beside results.csv).",
    ),
    aliases: Optional[list[Path]] = typer.Option(
        None,
        "--aliases",
        help="Extra device alias YAML (repeatable; consulted before the bundled profiling_data/device_aliases.yaml).",
    ),
    pick: str = typer.Option(
        "representative",
        "--pick",
        help="Among runs of one profile key: `representative` (median p99, upper median) or `lowest-p99`.",
    ),
    out: Path = typer.Option(
        Path("mlperf_profiles.csv"),
        "--out",
        "-o",
        help="Profile CSV to write. Point it at profiling_data/default_profiles.csv to rebuild the embedded default.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the one-line summary."),
):
    """Turn an MLPerf Inference results table into ProfileRecords (same normalisation as the default data).

    Prints what was skipped and why, and what was flagged (assumed Server batch sizes, missing dates)."""
    import os
    from datetime import datetime

    import synergai.profiling_data as pdata
    from synergai.profiling_data.mlperf import (
        DEFAULT_DATA_DIR,
        coverage_matrix,
        import_mlperf_with_report,
        load_aliases,
    )

    if (results is None) != (systems is None):
        raise InputError(
            "give both --results and --systems (or --data DIR)", field="--results" if results is None else "--systems"
        )
    when = None
    if published:
        try:
            when = datetime.strptime(published.strip(), "%Y-%m-%d")
        except ValueError:
            raise InputError(f"not a date YYYY-MM-DD: {published!r}", field="--published") from None
    al = load_aliases(aliases or [])
    if results is None:
        env = os.environ.get("SYNERGAI_DATA_DIR")
        d = data or (Path(env) / "mlperf-inference-v3.0" if env else DEFAULT_DATA_DIR)
        if not d.is_dir():
            raise InputError("directory not found; pass --data DIR or --results/--systems", file=str(d), field="--data")
        results, systems = d / "results.csv", d / "systems.csv"
    elif data is not None:
        raise InputError("give --data or --results/--systems, not both", field="--data")
    table, report = import_mlperf_with_report(
        results, systems, round_label=round_label, published=when, aliases=al, pick=pick
    )
    if len(table) == 0:
        raise InputError("no row became a profile record (" + report.summary().splitlines()[0] + ")", file=str(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    table.save(out)
    if not quiet:
        console.print(report.summary(), markup=False, highlight=False)
        console.print("coverage (records per device x model):")
        console.print(coverage_matrix(table), markup=False, highlight=False)
    rebuilt = out.resolve() == pdata.DEFAULT_PROFILES.resolve()
    if rebuilt:
        pdata.default_profiles.cache_clear()
    console.print(
        f"wrote {out} ({len(table)} records, {len(table.devices)} devices, {len(table.models)} models)"
        + (" - the embedded default profiles were rebuilt" if rebuilt else "")
    )


# ---------------------------------------------------------------------------------------- profile-cluster
def profile_cluster(
    cluster: Optional[Path] = typer.Option(None, "--cluster", "-c", help="ClusterSpec YAML/JSON (default: embedded)."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Manifests directory (default profiling-jobs/), or with --collect the profile CSV (default cluster_profiles.csv; merged into if it exists).",
    ),
    apply: bool = typer.Option(
        False, "--apply", help="Create the ServiceAccount/Role/RoleBinding and one Job per pool."
    ),
    collect: bool = typer.Option(False, "--collect", help="Read the pools' profile ConfigMaps back into a CSV."),
    namespace: Optional[str] = typer.Option(
        None, "--namespace", "-n", help="Namespace (default: the kubeconfig's, else default)."
    ),
    kubeconfig: Optional[Path] = typer.Option(
        None, "--kubeconfig", help="Kubeconfig (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)."
    ),
    pool: Optional[list[str]] = typer.Option(None, "--pool", help="Only these pools (repeatable)."),
    image: Optional[str] = typer.Option(
        None,
        "--image",
        help="Profiler image for every pool (default: image map `profiler` entry, else synergai/profiler:<version>).",
    ),
    images: Optional[Path] = typer.Option(None, "--images", help="Image map YAML (default: executor/images.yaml)."),
    engine: str = typer.Option("all", "--engine", help="Engines the Jobs profile (comma list, or all)."),
    replace: bool = typer.Option(
        False, "--replace", help="With --apply: delete and re-create Jobs that already exist."
    ),
):
    """Profile every node pool from the cluster: Job manifests, --apply them, --collect the results."""
    from synergai.executor import profiling_jobs as pj

    if apply and collect:
        raise InputError("choose --apply or --collect, not both", field="--collect")
    cl = (
        ClusterSpec.load(cluster)
        if cluster
        else __import__("synergai.profiling_data", fromlist=["default_cluster"]).default_cluster()
    )
    if collect:
        api = pj.api_client(str(kubeconfig) if kubeconfig else None)
        ns = namespace or _default_ns(kubeconfig)
        try:
            res = pj.collect(api, ns, cl)
        except pj.ProfileJobError as e:
            _fail(str(e))
        for name, n in res.accepted.items():
            console.print(f"{name}: {n} record(s) accepted")
        for line in res.rejected:
            console.print(f"rejected: {line}", markup=False, highlight=False)
        for line in res.missing:
            console.print(f"missing: {line}", markup=False, highlight=False)
        if res.table is None:
            _fail("no valid profile record collected")
        dest = out or Path("cluster_profiles.csv")
        table = res.table
        if dest.exists() and dest.stat().st_size > 0:
            table = ProfileTable.merge([ProfileTable.load(dest, on_duplicate="newest"), res.table])
            for new, old in table.replaced:
                console.print(
                    f"note: {new.model}/{new.device}/{new.config_id}: {new.source} replaces {old.source}",
                    markup=False,
                    highlight=False,
                )
        dest.parent.mkdir(parents=True, exist_ok=True)
        table.save(dest)
        console.print(f"wrote {dest} ({len(table)} records; {len(res.rejected)} rejected)")
        return
    from synergai.profiling_data.profiler.engines import engine_names

    for e in (x.strip().lower() for x in engine.split(",")):
        if e != "all" and e not in engine_names():
            raise InputError(f"unknown engine {e!r}; choose from {', '.join(engine_names())} or all", field="--engine")
    img_map = None
    if images is not None:
        from synergai.executor.images import ImageMap

        img_map = ImageMap.load(images)
    objs = pj.build_objects(
        cl, namespace=None, images=img_map, image=image, engines=engine, pools=list(pool or []) or None
    )
    jobs = [o for o in objs if o["kind"] == "Job"]
    if apply:
        api = pj.api_client(str(kubeconfig) if kubeconfig else None)
        ns = namespace or _default_ns(kubeconfig)
        try:
            lines = pj.apply_objects(api, objs, ns, replace_jobs=replace)
        except pj.ProfileJobError as e:
            _fail(str(e))
        for line in lines:
            console.print(line, markup=False, highlight=False)
        console.print(
            f"{len(jobs)} profiling Job(s) in namespace {ns}; collect with "
            f"`synergai profile-cluster --collect -n {ns}` when they finish"
        )
        return
    dest = out or Path("profiling-jobs")
    checked = _validate(objs)
    paths = pj.write_manifests(objs, dest)
    console.print(
        f"wrote {len(paths)} manifests ({len(jobs)} Jobs, one per pool) to {dest}/"
        + (f"; {checked}" if checked else "")
    )


def _default_ns(kubeconfig: Optional[Path]) -> str:
    try:
        from synergai.executor.kube import default_namespace

        return default_namespace(str(kubeconfig) if kubeconfig else None)
    except Exception:
        return "default"


def _validate(objs: list[dict]) -> str:
    """Offline strict schema check when kubernetes-validate is installed; '' when it is not."""
    try:
        from synergai.executor.validate import ManifestInvalid, schema_version, validate_strict
    except ImportError:
        return ""
    try:
        for o in objs:
            validate_strict(o)
    except ManifestInvalid as e:
        raise InputError(f"generated manifest is invalid: {e}") from None
    except ImportError:
        return ""
    return f"validated (kubernetes-validate strict, schema {schema_version()})"


# --------------------------------------------------------------------------------------------- register
def register(app: typer.Typer) -> None:
    if getattr(app, "_synergai_profiler", False):
        return
    app._synergai_profiler = True  # type: ignore[attr-defined]
    app.command("profile")(profile)
    app.command("import-mlperf")(import_mlperf)
    app.command("profile-cluster")(profile_cluster)
