"""Rebuild ``profiling_data/default_profiles.csv`` from the MLPerf Inference v3.0 extract.

    python -m synergai.profiling_data.build_default [--data DIR] [--out DIR]

``--data`` defaults to ``../shared/data/mlperf-inference-v3.0`` next to the repository (see
``profiling_data.mlperf.DEFAULT_DATA_DIR``); ``--out`` defaults to this package's directory. The output is
deterministic (rows sorted by profile key, floats written with ``%.6g`` by ``ProfileTable.save``), so
rebuilding from the same extract reproduces the committed file byte for byte. Prints what was skipped and
why, the device x model coverage matrix and the power modes per device.

The committed table was built with ``pick="lowest-p99"`` (among runs of one profile key, the lowest p99) and
the v3.0 publication date 2023-04-05 (MLCommons, 5 April 2023; the extract's SOURCE.md only says "April
2023"); both are pinned here so the rebuild stays reproducible. ``synergai import-mlperf`` defaults to the
representative run instead (see ``profiling_data.mlperf``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from synergai.models.errors import InputError

from .mlperf import DEFAULT_DATA_DIR, coverage_matrix, import_mlperf_with_report, power_modes

PACKAGE_DIR = Path(__file__).resolve().parent
OUT_NAME = "default_profiles.csv"
#: How the committed default table was built (see the module docstring).
V30_PUBLISHED = datetime(2023, 4, 5)
PICK = "lowest-p99"


def build(data_dir: str | Path = DEFAULT_DATA_DIR, out_dir: str | Path = PACKAGE_DIR, *, quiet: bool = False) -> Path:
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    table, report = import_mlperf_with_report(
        data_dir / "results.csv", data_dir / "systems.csv", published=V30_PUBLISHED, pick=PICK
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / OUT_NAME
    table.save(out)
    if not quiet:
        print(report.summary())
        print()
        print(f"wrote {out} ({len(table)} records, {len(table.devices)} devices, {len(table.models)} models)")
        print()
        print("coverage (records per device x model):")
        print(coverage_matrix(table))
        print()
        print("power modes per device:")
        for dev, modes in power_modes(table).items():
            print(f"  {dev:24s} {', '.join(modes)}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m synergai.profiling_data.build_default", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "--data",
        default=str(DEFAULT_DATA_DIR),
        help="directory holding results.csv and systems.csv (default: %(default)s)",
    )
    ap.add_argument("--out", default=str(PACKAGE_DIR), help="output directory (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        build(args.data, args.out)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
