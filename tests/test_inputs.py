"""Bad input: one line naming file, row and field, exit code 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import synergai.profiling_data as pdata
from synergai.models import ClusterSpec, InputError, Plan, ProfileTable, Trace, WorkloadSpec

GOOD = pdata.DEFAULT_PROFILES


def csv_with(tmp_path: Path, mutate) -> Path:
    lines = Path(GOOD).read_text().splitlines()
    lines = mutate(lines)
    p = tmp_path / "profiles.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def set_cell(lines, row, col, value):
    header = lines[0].split(",")
    i = header.index(col)
    import csv
    import io

    cells = next(csv.reader(io.StringIO(lines[row])))
    cells[i] = value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(cells)
    lines = list(lines)
    lines[row] = buf.getvalue()
    return lines


def run_cli(*args, cwd=None):
    r = subprocess.run(
        [sys.executable, "-c", "from synergai.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
    return r.returncode, r.stdout, r.stderr


CASES = {
    "missing column": (
        lambda ls: (
            [",".join(c for c in ls[0].split(",") if c != "latency_p90_ms")]
            + [
                ",".join(v for j, v in enumerate(_split(l)) if j != ls[0].split(",").index("latency_p90_ms"))
                for l in ls[1:]
            ]
        ),
        "latency_p90_ms",
    ),
    "nan latency": (lambda ls: set_cell(ls, 3, "latency_p50_ms", "nan"), "latency_p50_ms"),
    "negative latency": (lambda ls: set_cell(ls, 3, "latency_p99_ms", "-4"), "latency_p99_ms"),
    "text in number": (lambda ls: set_cell(ls, 5, "throughput_rps", "fast"), "throughput_rps"),
    "ns instead of ms": (
        lambda ls: set_cell(
            set_cell(set_cell(ls, 2, "latency_p50_ms", "4e6"), 2, "latency_p90_ms", "5e6"), 2, "latency_p99_ms", "6e6"
        ),
        "milliseconds",
    ),
    "duplicate key": (lambda ls: ls + [ls[1]], "duplicate"),
    "bad architecture": (lambda ls: set_cell(ls, 4, "architecture", "x86"), "architecture"),
}


def _split(line):
    import csv
    import io

    return next(csv.reader(io.StringIO(line)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_profile_rows(tmp_path, case):
    mutate, needle = CASES[case]
    p = csv_with(tmp_path, mutate)
    with pytest.raises(InputError) as e:
        ProfileTable.load(p)
    msg = str(e.value)
    assert str(p) in msg and needle in msg and "\n" not in msg
    if case not in ("missing column",):
        assert ":" in msg.split(str(p))[1][:8]  # a row number follows the file name


def test_empty_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(InputError, match="empty"):
        ProfileTable.load(p)


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "cluster.yaml"
    p.write_text("name: x\npools:\n  - name: a\n    device: [unclosed\n")
    with pytest.raises(InputError) as e:
        ClusterSpec.load(p)
    assert "YAML syntax error" in str(e.value) and str(p) in str(e.value)


def test_cluster_field_error_names_field(tmp_path):
    p = tmp_path / "cluster.yaml"
    p.write_text(
        "pools:\n  - {name: a, device: rpi4, architecture: arm64, tier: edge, nodes: -1, cpu: 4, memory_mb: 4096}\n"
    )
    with pytest.raises(InputError) as e:
        ClusterSpec.load(p)
    assert "pools.0.nodes" in str(e.value)


def test_unknown_model_in_trace(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("time_s,model\n0.1,resnet50\n0.2,nosuchmodel\n")
    with pytest.raises(InputError) as e:
        Trace.load(p, known_models={"resnet50"})
    assert ":3:" in str(e.value) and "model" in str(e.value)


def test_plan_wrong_schema_version(tmp_path):
    p = tmp_path / "plan.json"
    p.write_text(json.dumps({"schema_version": "synergai.plan/v0"}))
    with pytest.raises(InputError, match="schema version"):
        Plan.load(p)


@pytest.mark.parametrize("kind", ["unknown device", "unknown model", "yaml error", "bad csv", "bad solver"])
def test_cli_bad_input_exit_2_one_line(tmp_path, kind):
    args = ["plan", "--out", str(tmp_path / "plan.json")]
    if kind == "unknown device":
        c = tmp_path / "c.yaml"
        c.write_text(
            "pools:\n  - {name: a, device: quantum-board, architecture: arm64, tier: edge, nodes: 1, cpu: 4, memory_mb: 4096}\n"
        )
        args += ["--cluster", str(c)]
        needle = "quantum-board"
    elif kind == "unknown model":
        w = tmp_path / "w.yaml"
        w.write_text("models:\n  - {model: gpt-17, rate_rps: 1, deadline_ms: 100}\n")
        args += ["--workload", str(w)]
        needle = "gpt-17"
    elif kind == "yaml error":
        w = tmp_path / "w.yaml"
        w.write_text("models: [\n")
        args += ["--workload", str(w)]
        needle = "YAML"
    elif kind == "bad csv":
        p = csv_with(tmp_path, lambda ls: set_cell(ls, 7, "batch_size", "0"))
        args += ["--profiles", str(p)]
        needle = "batch_size"
    else:
        args += ["--solver", "gurobi-please"]
        needle = "gurobi-please"
    code, out, err = run_cli(*args)
    assert code == 2, (out, err)
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("synergai: error:") and needle in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "plan.json").exists()


def test_workload_load_roundtrip():
    w = pdata.default_workload()
    assert isinstance(w, WorkloadSpec) and all(d.deadline_ms > 0 for d in w.models)


def test_parquet_roundtrip_and_merge_newer_wins(tmp_path):
    t = pdata.default_profiles()
    p = tmp_path / "profiles.parquet"
    t.save(p)
    back = ProfileTable.load(p)
    assert len(back) == len(t) and back.records[0] == t.records[0]
    from datetime import datetime, timezone

    newer = t.records[0].model_copy(
        update={
            "latency_p50_ms": t.records[0].latency_p50_ms * 0.5,
            "measured_at": datetime(2030, 1, 1, tzinfo=timezone.utc),
            "source": "measured:test",
        }
    )
    merged = ProfileTable.merge([t, ProfileTable([newer], source="mine.csv")])
    assert len(merged) == len(t)
    rec = next(r for r in merged.records if r.key == newer.key)
    assert rec.source == "measured:test" and merged.replaced
