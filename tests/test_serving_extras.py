"""``synergai serve | gateway | loadtest`` without the serve extra: one line naming the pip command, exit 2.

Absence is real: a ``sitecustomize`` (the blocker of ``tests/test_extras.py``) makes the import of the
module raise ``ModuleNotFoundError`` in a fresh interpreter, as if the package were not installed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.test_extras import BLOCKER

EXPECTED = "synergai: error: 'synergai {command}' needs the serve extra: pip install 'synergai[serve]'"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("site")
    (d / "sitecustomize.py").write_text(BLOCKER)
    return d


def _run(site, argv, block, cwd):
    import os

    env = dict(os.environ, PYTHONPATH=str(site), SYNERGAI_TEST_BLOCK=",".join(block))
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize(
    "command,args,block",
    [
        (
            "serve",
            ["--emulate", "resnet50=x86-xeon-8275cl/onnxruntime/fp32/b1/tauto/default", "--port", "0"],
            ["aiohttp"],
        ),
        ("gateway", ["--plan", "plan.json", "--port", "0"], ["aiohttp"]),
        ("loadtest", ["--plan", "plan.json"], ["aiohttp"]),
        ("gateway", ["--plan", "plan.json", "--port", "0"], ["prometheus_client"]),
    ],
)
def test_missing_serve_extra_is_one_line_exit_2(site, tmp_path, command, args, block):
    for entry in (["-c", "from synergai.cli import main; main()"], ["-m", "synergai.executor.serving_cli"]):
        r = _run(site, [*entry, command, *args], block, tmp_path)
        assert r.returncode == 2, (entry, r.stdout, r.stderr)
        assert r.stderr.strip() == EXPECTED.format(command=command), (entry, r.stderr)
        assert r.stdout == ""


def test_the_same_command_with_the_extra_gets_past_the_check(site, tmp_path):
    """Nothing blocked: the command runs (and fails on its real input instead), so the message above
    comes from the absence, not from the command."""
    r = _run(
        site,
        ["-c", "from synergai.cli import main; main()", "serve", "--plan", "nope.json", "--server", "x", "--port", "0"],
        [],
        tmp_path,
    )
    assert r.returncode == 2 and "serve extra" not in r.stderr and "nope.json" in r.stderr, r.stderr
