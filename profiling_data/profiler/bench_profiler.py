"""Benchmark of the profiler on this machine (not a test; prints tables, takes minutes).

    python -m synergai.profiling_data.profiler.bench_profiler [--skip-quick] [--budgets 0.25,0.33,0.5,0.75] [--json FILE]
        [--save-grid FILE | --load-grid FILE]   # keep a full-grid measurement / replay against it

1. **Quick grid**: ``synergai profile --quick --engine all`` (the real ResNet-50 / MobileNet-V2 / BERT-mini,
   fp32 + int8, batch {1,4}, threads {1, all cores}) from a cold model cache; wall time (target < 2 min on a
   2-core node).
2. **Sparse vs full grid**: the full grid (batch {1,2,4,8,16} x threads {1,2,4..cores} x fp32/int8 x every
   available engine x the three models, quick timing settings) is measured once.  Then the ``--budget``
   search is replayed against those measurements for several budgets (same numbers, so only the *choice*
   differs), compared with random subsets of the same size (mean of 20 draws), and run for real once
   (budget = half the grid) to time it.  Front recovery, per model, against the
   full grid's Pareto front (p99 latency, throughput, threads):

   * *exact*: share of the full front's configurations that were measured;
   * *within 5 %*: share of full-front points matched by a measured configuration with <= 5 % more latency,
     >= 1/1.05 of the throughput and no more threads;
   * *HV*: hypervolume of the measured set / hypervolume of the full grid.

Measurements on a shared machine are noisy: see the spread and repeat-CV columns of the quick grid output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from . import device as dev, engines as eng, runner
from .sparse import Obs, Point, SparseSearch, front_recovery


def quick_grid(tmp: Path) -> dict:
    from synergai.cli import main

    env_before = os.environ.get("SYNERGAI_CACHE")
    os.environ["SYNERGAI_CACHE"] = str(tmp / "cold-cache")  # cold: includes building + quantising models
    try:
        t0 = time.perf_counter()
        code = main(["profile", "--quick", "--engine", "all", "--out", str(tmp / "quick.csv")])
        wall = time.perf_counter() - t0
    finally:
        if env_before is None:
            os.environ.pop("SYNERGAI_CACHE", None)
        else:
            os.environ["SYNERGAI_CACHE"] = env_before
    n = max(0, len((tmp / "quick.csv").read_text().splitlines()) - 1) if (tmp / "quick.csv").exists() else 0
    return {"exit": code, "wall_s": round(wall, 1), "records": n}


def _plan(batches, threads) -> runner.Plan:
    return runner.make_plan(
        engines=["all"],
        model_names=[],
        model_paths=[],
        precisions=["fp32", "int8"],
        batches=batches,
        threads=threads,
        quick=True,
        budget=None,
        device=None,
        min_runs=None,
        min_time=None,
    )


def full_grid(plan: runner.Plan, log=print) -> tuple[dict[Point, Obs], dict[Point, float], float]:
    full, cost = {}, {}
    t0 = time.perf_counter()
    grid = plan.grid()
    for i, c in enumerate(grid):
        t = time.perf_counter()
        o = runner.measure_config(plan, c)
        dt = time.perf_counter() - t
        p = Point(c.group, c.batch, c.threads)
        if o.record is not None:
            full[p] = Obs(o.record.latency_p99_ms, o.record.throughput_rps, c.threads)
        cost[p] = dt
        if (i + 1) % 10 == 0:
            log(f"  full grid: {i + 1}/{len(grid)} configurations, {time.perf_counter() - t0:.0f} s")
    return full, cost, time.perf_counter() - t0


def replay(
    plan: runner.Plan, full: dict[Point, Obs], cost: dict[Point, float], budget: int
) -> tuple[list[Point], float]:
    grids = {}
    for c in plan.grid():
        grids.setdefault(c.group, (set(), set()))
        grids[c.group][0].add(c.batch)
        grids[c.group][1].add(c.threads)
    s = SparseSearch({g: (sorted(b), sorted(t)) for g, (b, t) in grids.items()}, budget)
    chosen = []
    while (p := s.next()) is not None:
        chosen.append(p)
        s.observe(p, full.get(p))
    return chosen, sum(cost.get(p, 0.0) for p in chosen)


def real_sparse(plan: runner.Plan, budget: int, tmp: Path) -> tuple[list[Point], float]:
    plan.budget = budget
    store = runner.Store(tmp / "sparse.csv")
    t0 = time.perf_counter()
    outs = runner.run(plan, store)
    wall = time.perf_counter() - t0
    plan.budget = None
    return [Point(o.config.group, o.config.batch, o.config.threads) for o in outs if not o.skipped], wall


def _random_baseline(full: dict[Point, Obs], cost: dict[Point, float], b: int, reps: int = 20) -> tuple[float, dict]:
    """Uniformly random subsets of the grid of the same size: the reference a search must beat."""
    import random

    rng = random.Random(0)
    pts = sorted(cost)
    acc = {"exact": 0.0, "within": 0.0, "hv": 0.0}
    per: dict = {}
    wall = 0.0
    for _ in range(reps):
        sub = rng.sample(pts, min(b, len(pts)))
        r = front_recovery(full, sub)
        wall += sum(cost[p] for p in sub) / reps
        for k in acc:
            acc[k] += r[k] / reps
        for m, v in r["per_model"].items():
            d = per.setdefault(m, {"front": v["front"], "exact": 0.0, "within": 0.0, "hv": 0.0})
            for k in ("exact", "within", "hv"):
                d[k] += v[k] / reps
    return wall, {**acc, "per_model": per}


def _key(p: Point) -> str:
    return "|".join([*p.group, str(p.batch), str(p.threads)])


def _pt(k: str) -> Point:
    e, m, pr, b, t = k.split("|")
    return Point((e, m, pr), int(b), int(t))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-quick", action="store_true", help="skip the quick-grid timing")
    ap.add_argument("--budgets", default="0.25,0.33,0.5,0.75", help="budgets as fractions of the full grid")
    ap.add_argument("--json", help="also write the results as JSON")
    ap.add_argument("--save-grid", help="write the full grid's measurements to this JSON file")
    ap.add_argument("--load-grid", help="replay against a saved full grid instead of measuring it (no real run)")
    args = ap.parse_args(argv)
    facts = dev.read_facts()
    print(
        f"machine: {facts.device} ({facts.cpu_model}, {facts.cores_usable} usable cores, {facts.architecture}); "
        f"engines: {', '.join(f'{k} {v[1]}' if v[0] else f'{k} (unavailable)' for k, v in eng.availability().items())}"
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    res: dict = {"device": facts.as_dict()}
    with tempfile.TemporaryDirectory(prefix="synergai-bench-") as td:
        tmp = Path(td)
        if not args.skip_quick:
            q = quick_grid(tmp)
            res["quick"] = q
            print(
                f"\nquick grid (cold model cache): {q['records']} configurations in {q['wall_s']} s "
                f"({'OK' if q['wall_s'] < 120 else 'OVER'} the 2-minute target)"
            )
        cores = facts.cores_usable
        threads = runner.default_threads(cores, quick=False)
        plan = _plan(list(runner.DEFAULT_BATCHES), threads)
        n = len(plan.grid())
        print(
            f"\nfull grid: {n} configurations (batch {list(runner.DEFAULT_BATCHES)} x threads {threads} x "
            f"{len(plan.precisions)} precisions x {len(plan.engines)} engines x {len(plan.models)} models), "
            f"settings {plan.settings.compact()}"
        )
        if args.load_grid:
            saved = json.loads(Path(args.load_grid).read_text())
            full = {_pt(k): Obs(*v) for k, v in saved["obs"].items()}
            cost = {_pt(k): v for k, v in saved["cost"].items()}
            wall_full = saved["wall_s"]
        else:
            full, cost, wall_full = full_grid(plan)
        if args.save_grid:
            Path(args.save_grid).write_text(
                json.dumps(
                    {
                        "obs": {_key(p): [o.latency_ms, o.throughput_rps, o.threads] for p, o in full.items()},
                        "cost": {_key(p): c for p, c in cost.items()},
                        "wall_s": wall_full,
                    },
                    indent=1,
                )
            )
        rows = [("full grid", len(full), wall_full, front_recovery(full, list(full)))]
        fracs = [float(x) for x in args.budgets.split(",") if x.strip()]
        for f in fracs:
            b = max(1, round(f * n))
            chosen, est = replay(plan, full, cost, b)
            rows.append((f"budget {b} (replay)", len(chosen), est, front_recovery(full, chosen)))
            rows.append((f"random {b} (mean of 20)", b, *_random_baseline(full, cost, b)))
        if not args.load_grid:
            b = max(1, round(0.5 * n))
            chosen, wall = real_sparse(plan, b, tmp)
            rows.append((f"budget {b} (real run)", len(chosen), wall, front_recovery(full, chosen)))
    print()
    hdr = f"{'run':26s} {'configs':>8s} {'wall s':>8s} {'exact':>7s} {'within 5%':>10s} {'HV':>6s}   per model (front size: exact/within/HV)"
    print(hdr)
    print("-" * len(hdr))
    out_rows = []
    for name, k, w, r in rows:
        per = "; ".join(
            f"{m} ({v['front']}): {v['exact']:.2f}/{v['within']:.2f}/{v['hv']:.2f}" for m, v in r["per_model"].items()
        )
        print(f"{name:26s} {k:8d} {w:8.1f} {r['exact']:7.2f} {r['within']:10.2f} {r['hv']:6.3f}   {per}")
        out_rows.append(
            {
                "run": name,
                "configs": k,
                "wall_s": round(w, 2),
                **{x: round(r[x], 4) for x in ("exact", "within", "hv")},
                "per_model": r["per_model"],
            }
        )
    print(
        "\n(replay rows: the search's choices scored and timed with the full grid's own measurements; "
        "'real run' measured anew, scored against the full grid's numbers)"
    )
    res["rows"] = out_rows
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
