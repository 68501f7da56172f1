"""What people read: --version, help, the plan table at 100 columns, where outputs go, assign's checks."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest
from rich.console import Console

from synergai.cli import main, plan_summary, print_plan
from synergai.models import Plan
from tests.test_manifests import default_plan


def run(*args, cwd, columns=100):
    env = dict(os.environ, COLUMNS=str(columns))
    r = subprocess.run(
        [sys.executable, "-c", "from synergai.cli import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    return r.returncode, r.stdout, r.stderr


def render(plan: Plan, width: int = 100, wide: bool = False) -> str:
    con = Console(width=width, record=True, file=open(os.devnull, "w"), color_system=None)
    print_plan(plan, out=con, wide=wide)
    return con.export_text()


def test_version_comes_from_the_package_metadata(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"synergai {version('synergai')}"


@pytest.mark.parametrize("args", [["--help"], ["plan", "--help"], ["manifests", "--help"], ["apply", "--help"]])
def test_help_shows_no_type_placeholder_for_flags(args, capsys):
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "--help" in out and "<bool>" not in out
    if args[0] == "plan":
        assert "--what-if" in out and "<float>" in out  # value options keep their type


def test_plan_table_fits_100_columns_and_keeps_batch_and_power_mode(tmp_path):
    code, out, err = run("plan", cwd=tmp_path, columns=100)
    assert code == 0, err
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 100
    assert list(tmp_path.iterdir()) == []  # nothing written without --out
    assert "plan not saved (add --out plan.json to write it)" in out
    plan = default_plan()
    rows = [
        line for line in out.splitlines() if line.split()[:1] and line.split()[0] in {d.model for d in plan.demands}
    ]
    assert len(rows) == len(plan.assignments)
    shared = {g.name for g in plan.servers if g.shared}
    for a in plan.assignments:
        # a model may have a shared and a dedicated row on one pool; the shared one is labelled
        mine = [
            r.split()
            for r in rows
            if r.split()[:2] == [a.model, a.pool] and ("(shared)" in r.split()) == (a.server in shared)
        ]
        assert len(mine) == 1, (a.model, a.pool)
        cells = mine[0]
        assert str(a.config.batch_size) in cells and a.config.power_mode in cells
        assert f"{a.utilisation * 100:.0f}/{a.max_utilisation * 100:.0f}%" in cells  # utilisation beside its cap
        assert ("standby" in cells) == (a.routed_rate_rps <= 0)
    # the summary line: served vs demanded per model, and the verdict
    summary = " ".join(out.split()).split("served/demanded req/s: ")[1]
    for d in plan.demands:
        assert f"{d.model} " in summary
    assert ("all demand served" in summary) == (not plan.unserved)
    assert "W serving power" in " ".join(out.split())  # the objective's unit


def test_plan_wide_has_the_full_configuration(tmp_path):
    code, out, err = run("plan", "--wide", cwd=tmp_path, columns=200)
    assert code == 0, err
    for a in default_plan().assignments:
        assert a.config.config_id in out


def test_plan_writes_only_where_asked_and_what_if_overwrites_nothing(tmp_path):
    code, out, err = run("plan", "--out", "p.json", cwd=tmp_path)
    assert code == 0, err
    assert "wrote plan" in out and "to p.json" in out
    before = (tmp_path / "p.json").read_bytes()
    code, out, err = run("plan", "--load", "1.3", "--what-if", cwd=tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"] and (tmp_path / "p.json").read_bytes() == before
    code, out, err = run("plan", "--out", str(tmp_path), cwd=tmp_path)
    assert code == 2 and err.strip().startswith("synergai: error:") and "--out" in err


def test_imputed_power_is_marked_as_an_estimate_in_the_table_and_in_explain(tmp_path, capsys):
    d = default_plan().model_dump(mode="json")
    for a in d["assignments"]:
        a["config"]["power_estimated"] = False
    for c in d["candidates"]:
        c["power_estimated"] = False
    for g in d["servers"]:
        g["power_estimated"] = False
    assert "*" not in render(Plan.model_validate(d)).split("total power")[0].split("─")[-1]  # nothing flagged
    victim = max(d["assignments"], key=lambda a: a["energy_w"])
    victim["config"]["power_estimated"] = True
    for c in d["candidates"]:
        if c["model"] == victim["model"] and c["pool"] == victim["pool"]:
            c["power_estimated"] = True
    for g in d["servers"]:
        g["power_estimated"] = g["name"] == victim["server"]
    est = Plan.model_validate(d)
    text = render(est)
    row = next(line for line in text.splitlines() if line.split()[:2] == [victim["model"], victim["pool"]])
    assert row.rstrip().endswith("*") and "~" in row.split()[-1]
    assert "* estimated: imputed power" in " ".join(text.split())
    others = [
        line
        for line in text.splitlines()
        if line.split()[:1] == [victim["model"]] and line.split()[1] != victim["pool"]
    ]
    assert all(not line.rstrip().endswith("*") for line in others)
    f = tmp_path / "p.json"
    est.save(f)
    assert main(["explain", str(f), "--model", victim["model"]]) == 0
    out = capsys.readouterr().out
    assert "~" in out and "J/req from imputed power" in " ".join(out.split())


def test_summary_names_what_is_not_served():
    plan = default_plan()
    d = plan.model_dump(mode="json")
    m = d["demands"][0]["model"]
    d["unserved"] = [{"model": m, "rate_rps": 12.5, "reason": "capacity exhausted"}]
    s = plan_summary(Plan.model_validate(d))
    assert "all demand served" not in s and f"NOT served: {m} 12.5 req/s" in s


# ------------------------------------------------------------------------------------------ assign


def sample_trace():
    import synergai.profiling_data as pd_

    return pd_.PACKAGE_DIR / "sample_arrivals.csv"


def test_the_sample_trace_ships_with_the_package_and_assign_replays_it(tmp_path):
    import pandas as pd

    tr = sample_trace()
    assert tr.exists()
    plan = default_plan()
    plan.save(tmp_path / "plan.json")
    code, out, err = run("assign", "plan.json", "--trace", tr, "--out", "d.csv", cwd=tmp_path)
    assert code == 0, err
    d = pd.read_csv(tmp_path / "d.csv")
    assert len(d) == len(pd.read_csv(tr)) and "wrote d.csv" in out
    reps = {(a.model, a.pool): a.replicas for a in plan.assignments}
    # the replica index is per (model, pool): within 0..replicas-1 of that group
    for (model, pool), grp in d.groupby(["model", "pool"]):
        assert grp["replica"].min() >= 0 and grp["replica"].max() < reps[(model, pool)], (model, pool)
    assert d["replica"].max() < max(reps.values())


@pytest.mark.parametrize(
    "rows,field,needle",
    [
        ("0,resnet50,,edge\n0.1,gpt2,,cloud\n", "model", "gpt2"),
        ("0,resnet50,,edge\n0.1,bert,,moon\n", "origin", "moon"),
    ],
)
def test_assign_rejects_unknown_models_and_origins(tmp_path, rows, field, needle):
    default_plan().save(tmp_path / "plan.json")
    (tmp_path / "t.csv").write_text("time_s,model,deadline_ms,origin\n" + rows)
    code, out, err = run("assign", "plan.json", "--trace", "t.csv", "--out", "d.csv", cwd=tmp_path)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"synergai: error: t.csv:3: {field}:") and needle in lines[0]
    assert not (tmp_path / "d.csv").exists()
