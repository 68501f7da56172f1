"""The wheel, installed in a clean virtual environment outside the repository, works from another directory.

Builds the wheel (``python -m build --wheel``), creates ``python -m venv`` in a temporary directory,
installs the wheel with the ``kube`` extra from the package index, and runs the README's first
commands (plan, explain, manifests, assign with the shipped sample trace) with the working directory
outside the checkout, so nothing depends on the checkout's layout. Slow (a few minutes, mostly pip);
CI runs it (scripts/test.sh runs every test).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(argv, cwd, timeout=600, env=None):
    r = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, (
        f"{' '.join(map(str, argv))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    )
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT], cwd=dist, timeout=900)
    wheels = list(dist.glob("synergai-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_holds_the_namespaced_packages_and_their_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"synergai"}, tops  # no generic top-level `models`, `planner`, ...
    for f in (
        "synergai/py.typed",
        "synergai/models/plan.py",
        "synergai/planner/__init__.py",
        "synergai/profiling_data/default_profiles.csv",
        "synergai/profiling_data/sample_arrivals.csv",
        "synergai/executor/images.yaml",
        "synergai/executor/schema/k8s-1.20.json",
    ):
        assert f in names, f
    assert not any(n.startswith("tests/") or "/tests/" in n for n in names)


def test_installed_in_a_clean_venv_it_runs_from_another_directory(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    _run(
        [py, "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check", f"{wheel}[kube]"],
        cwd=tmp_path,
        timeout=900,
        env=env,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    exe = venv / "bin" / "synergai"

    r = _run(
        [py, "-c", "import synergai, synergai.models as m; print(synergai.__version__, m.__file__)"], work, env=env
    )
    version, models_file = r.stdout.split()
    assert Path(models_file).is_relative_to(venv) and not Path(models_file).is_relative_to(ROOT)
    assert _run([exe, "--version"], work, env=env).stdout.strip() == f"synergai {version}"
    r = subprocess.run([py, "-c", "import models"], cwd=work, capture_output=True, text=True, env=env)
    assert r.returncode != 0  # the wheel does not claim the generic name

    r = _run([exe, "plan", "--out", "plan.json"], work, env=env)
    assert "solver highs" in r.stdout and (work / "plan.json").exists()
    r = _run([exe, "explain", "plan.json", "--model", "bert"], work, env=env)
    assert "CHOSEN" in r.stdout
    r = _run([exe, "manifests", "plan.json", "--out", "manifests"], work, env=env)
    assert "validated offline for Kubernetes 1.20" in r.stdout
    assert (work / "manifests" / "Kustomization").exists() and any((work / "manifests").glob("deployment-*.yaml"))
    sample = _run(
        [py, "-c", "import synergai.profiling_data as p; print(p.PACKAGE_DIR / 'sample_arrivals.csv')"], work, env=env
    ).stdout.strip()
    r = _run([exe, "assign", "plan.json", "--trace", sample, "--out", "decisions.csv"], work, env=env)
    assert (work / "decisions.csv").exists()
    assert sorted(p.name for p in work.iterdir()) == ["decisions.csv", "manifests", "plan.json"]
