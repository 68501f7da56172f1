"""`synergai import-mlperf`: MLPerf results table -> ProfileRecords, rebuilding the default data."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from synergai.cli import main
from synergai.models import ProfileTable
from synergai.profiling_data import DEFAULT_PROFILES
from synergai.profiling_data.mlperf import DEFAULT_DATA_DIR

HAVE_DATA = (DEFAULT_DATA_DIR / "results.csv").exists() and (DEFAULT_DATA_DIR / "systems.csv").exists()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f"MLPerf extract not present at {DEFAULT_DATA_DIR}")


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    o = capsys.readouterr()
    return code, o.out, o.err


# the committed table was built with these (python -m synergai.profiling_data.build_default pins them)
PINNED = ("--pick", "lowest-p99", "--published", "2023-04-05")


@needs_data
def test_default_import_rebuilds_the_committed_default_profiles(tmp_path, capsys):
    out = tmp_path / "default_profiles.csv"
    code, so, se = run_cli(capsys, "import-mlperf", "--out", out, *PINNED)
    assert code == 0, se
    # byte for byte what is committed: the default profiling data is rebuilt by this command
    assert out.read_bytes() == DEFAULT_PROFILES.read_bytes()
    assert "coverage" in so and f"wrote {out}" in " ".join(so.split())
    code, so, se = run_cli(
        capsys, "import-mlperf", "--data", DEFAULT_DATA_DIR, "--out", tmp_path / "b.csv", "-q", *PINNED
    )
    assert code == 0 and (tmp_path / "b.csv").read_bytes() == out.read_bytes()
    code, so, se = run_cli(
        capsys,
        "import-mlperf",
        "--results",
        DEFAULT_DATA_DIR / "results.csv",
        "--systems",
        DEFAULT_DATA_DIR / "systems.csv",
        "--out",
        tmp_path / "c.csv",
        "-q",
        *PINNED,
    )
    assert code == 0 and (tmp_path / "c.csv").read_bytes() == out.read_bytes()


def _second_round(src: Path, dst: Path, label: str, keep_every: int = 3) -> Path:
    """A synthetic later round in the same format: relabelled rows, a subset of them, columns reordered."""
    dst.mkdir(parents=True, exist_ok=True)
    with open(src / "results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cols = list(rows[0].keys())
    cols = cols[::-1]  # column order must not matter
    with open(dst / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for i, r in enumerate(rows):
            if i % keep_every == 0:
                r = dict(r)
                r["round"] = label
                w.writerow(r)
    shutil.copy(src / "systems.csv", dst / "systems.csv")
    return dst


@needs_data
def test_a_second_round_in_the_same_format_imports_without_code_changes(tmp_path, capsys):
    d = _second_round(DEFAULT_DATA_DIR, tmp_path / "mlperf-inference-v3.1", "v3.1")
    out = tmp_path / "v31.csv"
    # the round's date comes from its own metadata; this synthetic copy has none, so it is given
    code, so, se = run_cli(capsys, "import-mlperf", "--data", d, "--out", out, "-q", "--published", "2023-09-11")
    assert code == 0, se
    t = ProfileTable.load(out)
    assert len(t) > 20
    assert all(r.source.startswith("mlperf-v3.1:") for r in t.records)
    assert {r.measured_at.date().isoformat() for r in t.records} == {"2023-09-11"}
    # merged with v3.0: the later round wins on shared keys, and that is recorded
    merged = ProfileTable.merge([ProfileTable.load(DEFAULT_PROFILES), t])
    assert merged.replaced and all(new.source.startswith("mlperf-v3.1:") for new, _ in merged.replaced)
    # --round relabels a table (e.g. one without a round column)
    code, _, se = run_cli(capsys, "import-mlperf", "--data", d, "--round", "v4.0", "--out", tmp_path / "v40.csv", "-q")
    assert code == 0, se
    assert all(r.source.startswith("mlperf-v4.0:") for r in ProfileTable.load(tmp_path / "v40.csv").records)


@pytest.mark.parametrize("case", ["nodir", "half", "both", "nocol"])
def test_bad_import_input_is_one_line_exit_2(case, tmp_path, capsys):
    if case == "nodir":
        args = ["--data", tmp_path / "absent"]
    elif case == "half":
        args = ["--results", tmp_path / "r.csv"]
    elif case == "both":
        args = ["--data", tmp_path, "--results", tmp_path / "r.csv", "--systems", tmp_path / "s.csv"]
    else:
        (tmp_path / "results.csv").write_text("round,division\nv3.0,closed\n")
        (tmp_path / "systems.csv").write_text("division,submitter\nclosed,x\n")
        args = ["--data", tmp_path]
    code, so, se = run_cli(capsys, "import-mlperf", *args, "--out", tmp_path / "o.csv")
    assert code == 2
    lines = [x for x in se.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("synergai: error:"), se
    assert not (tmp_path / "o.csv").exists()
