"""The lean core works without any extra; a command whose extra is missing says so in one line.

Absence is simulated for real: a ``sitecustomize`` on PYTHONPATH installs a meta-path finder that
makes ``import kubernetes`` (etc.) raise ``ModuleNotFoundError`` in a fresh interpreter, exactly
as if the package were not installed. Nothing under test is mocked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ALL_OPTIONAL = [
    "kubernetes",
    "kubernetes_validate",
    "prometheus_client",
    "onnx",
    "onnxruntime",
    "openvino",
    "matplotlib",
    "ortools",
    "pulp",
    "pyarrow",
]

BLOCKER = """
import os, sys
_BLOCK = set(filter(None, os.environ.get("SYNERGAI_TEST_BLOCK", "").split(",")))
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCK:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
"""


@pytest.fixture(scope="module")
def blocked_python(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(BLOCKER)

    def run(code_or_args, block, cwd, cli=True):
        import os

        env = dict(os.environ, PYTHONPATH=str(site), SYNERGAI_TEST_BLOCK=",".join(block))
        argv = (
            [sys.executable, "-c", "from synergai.cli import main; main()", *code_or_args]
            if cli
            else [sys.executable, "-c", code_or_args]
        )
        return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)

    return run


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    from synergai import default_cluster, default_profiles, default_workload, plan_offline

    d = tmp_path_factory.mktemp("plan")
    plan_offline(default_profiles(), default_cluster(), default_workload(), solver="highs", time_limit=30).save(
        d / "plan.json"
    )
    return d / "plan.json"


def test_the_blocker_really_blocks(blocked_python, tmp_path):
    r = blocked_python("import kubernetes", ["kubernetes"], tmp_path, cli=False)
    assert r.returncode == 1 and "No module named 'kubernetes'" in r.stderr


def test_executor_modules_import_without_the_kube_extra(blocked_python, tmp_path):
    code = (
        "import synergai.executor.manifests, synergai.executor.apply, synergai.executor.validate, "
        "synergai.executor.cli, synergai.executor.daemon, synergai.executor.kube; print('ok')"
    )
    r = blocked_python(code, ALL_OPTIONAL, tmp_path, cli=False)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_the_lean_core_plans_and_explains_without_any_extra(blocked_python, tmp_path):
    r = blocked_python(["plan", "--out", "p.json"], ALL_OPTIONAL, tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.json").exists() and "all demand served" in " ".join(r.stdout.split())
    r = blocked_python(["explain", "p.json", "--model", "bert"], ALL_OPTIONAL, tmp_path)
    assert r.returncode == 0 and "CHOSEN" in r.stdout, r.stderr


@pytest.mark.parametrize(
    "command,args,block,extra",
    [
        ("manifests", ["PLAN", "--out", "m"], ["kubernetes"], "kube"),
        ("apply", ["PLAN", "--namespace", "x"], ["kubernetes"], "kube"),
        ("daemon", ["--plan-source", "file:PLAN"], ["prometheus_client"], "kube"),
        ("daemon", ["--plan-source", "file:PLAN"], ["aiohttp"], "kube"),  # its HTTP server comes with the kube extra
        ("inventory", [], ["kubernetes"], "kube"),
        ("profile", ["--quick", "--out", "x.csv"], ["onnx", "onnxruntime", "openvino"], "profile"),
    ],
)
def test_a_missing_extra_is_one_line_with_the_pip_command_exit_2(
    blocked_python, plan_file, tmp_path, command, args, block, extra
):
    args = [str(plan_file) if a == "PLAN" else a.replace("PLAN", str(plan_file)) for a in args]
    r = blocked_python([command, *args], block, tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == (
        f"synergai: error: 'synergai {command}' needs the {extra} extra: pip install 'synergai[{extra}]'"
    ), r.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "x.csv").exists()


def test_library_code_names_the_extra(blocked_python, tmp_path, plan_file):
    code = (
        "from synergai.models import Plan\nfrom synergai.executor.manifests import build\n"
        f"try:\n    build(Plan.load({str(plan_file)!r}))\n"
        "except ModuleNotFoundError as e:\n    print(type(e).__name__, e.extra, e)\n"
    )
    r = blocked_python(code, ["kubernetes"], tmp_path, cli=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("MissingExtra kube ") and "pip install 'synergai[kube]'" in r.stdout


def test_an_installed_extra_is_not_reported_missing(plan_file, tmp_path):
    """The same command with the extra present works (the message above comes from the absence)."""
    from synergai.cli import main

    assert main(["manifests", str(plan_file), "--out", str(tmp_path / "m")]) == 0
    assert any(Path(tmp_path / "m").glob("deployment-*.yaml"))
