"""The README's library example runs as written; its Quick start main job works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_library_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "plan.json").exists()


def test_quick_start_plan_command(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", "from synergai.cli import main; main()", "plan", "--out", "plan.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "solver highs: optimal" in r.stdout
    from synergai.models import Plan

    plan = Plan.load(tmp_path / "plan.json")
    assert plan.assignments and plan.plan_id
    r2 = subprocess.run(
        [sys.executable, "-c", "from synergai.cli import main; main()", "explain", "plan.json", "--model", "bert"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r2.returncode == 0 and "CHOSEN" in r2.stdout


def test_schema_command(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", "from synergai.cli import main; main()", "schema", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    import json

    plan = json.loads((tmp_path / "plan.schema.json").read_text())
    assert "assignments" in plan["properties"]
    prof = json.loads((tmp_path / "profile_record.schema.json").read_text())
    assert "millisecond" in prof["properties"]["latency_p99_ms"]["description"]


def test_assign_command(tmp_path):
    subprocess.run(
        [sys.executable, "-c", "from synergai.cli import main; main()", "plan", "--out", "plan.json"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (tmp_path / "t.csv").write_text("time_s,model,deadline_ms\n0.0,resnet50,15\n0.001,bert,\n0.002,resnet50,15\n")
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from synergai.cli import main; main()",
            "assign",
            "plan.json",
            "--trace",
            "t.csv",
            "--out",
            "d.csv",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    import pandas as pd

    d = pd.read_csv(tmp_path / "d.csv")
    assert len(d) == 3 and (d["replica"] >= 0).all()


def test_plan_from_trace(tmp_path):
    (tmp_path / "t.csv").write_text("time_s,model,deadline_ms\n0,resnet50,15\n0.5,resnet50,\n1,bert,100\n2,resnet50,\n")
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from synergai.cli import main; main()",
            "plan",
            "--trace",
            "t.csv",
            "--out",
            "plan.json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    from synergai.models import Plan

    plan = Plan.load(tmp_path / "plan.json")
    dem = {d.model: d for d in plan.demands}
    assert set(dem) == {"resnet50", "bert"}
    assert dem["resnet50"].rate_rps == 1.5 and dem["bert"].deadline_ms == 100
