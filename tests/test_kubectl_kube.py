"""`synergai manifests` output as kubectl takes it, against the real v1.20 test API server.

Uses the kubectl v1.20 built from Debian's source with the API server (``bash .ci/build-kube.sh``):

* ``kubectl apply -f DIR`` and ``kubectl apply -k DIR`` both accept the directory (the default plan, with its
  shared server group, and the gateway's objects);
* applying again reports every object ``unchanged`` (the manifests are what the server stores);
* ``kubectl apply --server-side`` after ``synergai apply`` reports no conflicts, and a second
  ``synergai apply`` then changes nothing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from synergai.cli import main as cli_main
from synergai.executor.manifests import build
from tests.test_manifests import default_plan

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def kubectl(kube_cluster):
    """``kubectl(*args)`` -> CompletedProcess, against the session's API server (admin)."""
    from tests.kube_harness import default_cache_dir

    exe = Path(default_cache_dir()) / "bin" / "kubectl"
    if not exe.exists():
        pytest.fail(
            f"{exe} is missing: build it with `bash .ci/build-kube.sh` (the kube tests never skip)", pytrace=False
        )

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(exe), "--kubeconfig", kube_cluster.kubeconfig_path, *args], capture_output=True, text=True, timeout=180
        )

    v = run("version", "--client", "--short")
    assert v.returncode == 0 and "v1.20" in v.stdout, v.stdout + v.stderr
    return run


@pytest.fixture
def manifests_dir(tmp_path, capsys, kube_namespace):
    plan = tmp_path / "plan.json"
    assert any(g.shared for g in default_plan().server_groups())
    default_plan().save(plan)
    out = tmp_path / "manifests"
    assert cli_main(["manifests", str(plan), "--out", str(out), "--namespace", kube_namespace]) == 0
    capsys.readouterr()
    return plan, out


def results(stdout: str) -> dict[str, str]:
    """kubectl apply output lines ``kind.group/name verb[ (server dry run)]`` -> {"kind/name": verb}."""
    out = {}
    for line in stdout.splitlines():
        m = re.fullmatch(r"(\w+)(?:\.[\w.]+)?/(\S+) (\S+)(?: \(server dry run\))?", line.strip())
        if m:
            out[f"{m.group(1)}/{m.group(2)}"] = m.group(3)
    return out


def expected_objects() -> set[str]:
    objs = {f"{d['kind'].lower()}/{d['metadata']['name']}" for d in build(default_plan(), gateway=True).dicts()}
    kinds = {o.split("/")[0] for o in objs}
    assert {"configmap", "deployment", "service", "serviceaccount", "role", "rolebinding", "networkpolicy"} <= kinds
    return objs


def test_kubectl_apply_f_then_again_reports_every_object_unchanged(kubectl, kube_namespace, manifests_dir):
    _, out = manifests_dir
    first = kubectl("apply", "-f", str(out), "-n", kube_namespace)
    assert first.returncode == 0, first.stderr
    created = results(first.stdout)
    assert set(created) == expected_objects() and set(created.values()) == {"created"}, first.stdout

    again = kubectl("apply", "-f", str(out), "-n", kube_namespace)
    assert again.returncode == 0, again.stderr
    res = results(again.stdout)
    assert set(res) == expected_objects()
    assert {k: v for k, v in res.items() if v != "unchanged"} == {}, again.stdout

    # the same directory through its Kustomization: the same objects, still unchanged
    kust = kubectl("apply", "-k", str(out), "-n", kube_namespace)
    assert kust.returncode == 0, kust.stderr
    res = results(kust.stdout)
    assert set(res) == expected_objects()
    assert {k: v for k, v in res.items() if v != "unchanged"} == {}, kust.stdout


def test_kubectl_apply_k_accepts_the_directory(kubectl, kube_namespace, manifests_dir):
    _, out = manifests_dir
    r = kubectl("apply", "-k", str(out), "-n", kube_namespace, "--dry-run=server")
    assert r.returncode == 0, r.stderr
    assert set(results(r.stdout)) == expected_objects()


def test_kubectl_server_side_apply_after_synergai_apply_has_no_conflicts(
    kube_cluster, kubectl, kube_namespace, manifests_dir, capsys
):
    plan, out = manifests_dir
    kc = ["--kubeconfig", kube_cluster.kubeconfig_path, "--namespace", kube_namespace]
    n = len(expected_objects())
    assert cli_main(["apply", str(plan), *kc]) == 0
    assert f"{n} created" in capsys.readouterr().out

    # another field manager applying the same manifests: same values, so shared ownership, no conflict
    ssa = kubectl("apply", "--server-side", "-f", str(out), "-n", kube_namespace)
    assert ssa.returncode == 0, ssa.stdout + ssa.stderr
    assert "conflict" not in (ssa.stdout + ssa.stderr).lower()
    assert set(results(ssa.stdout)) == expected_objects()

    # and synergai, applying again, finds nothing to change
    assert cli_main(["apply", str(plan), *kc]) == 0
    o = capsys.readouterr().out
    assert o.count("= unchanged") == n and f"0 created, 0 updated, {n} unchanged, 0 deleted" in o, o
