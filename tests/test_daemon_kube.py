"""The executor daemon against a real Kubernetes 1.20 API server.

In-process (``executor.daemon.run`` in a thread with a stop event) for drift, conflicts,
watch expiry, API server restarts, ConfigMap sources and /v1/assign; as a subprocess
(``python -m synergai.cli daemon``) for SIGTERM and SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synergai.executor.apply import apply_objects
from synergai.executor.manifests import LABEL_INSTANCE, build
from synergai.models import Plan
from tests.conftest import daemon_config, free_port, http_request, running_daemon, wait_for
from tests.test_apply_kube import changed_plan, desired_keys, managed
from tests.test_manifests import default_plan, random_plan

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[1]


def converged(kube, ns, ms) -> bool:
    """The namespace holds exactly the plan's managed objects, with the plan's replicas."""
    live = managed(kube, ns)
    if set(live) != desired_keys(ms.dicts()):
        return False
    return all(live[("Deployment", w.name)]["spec"]["replicas"] == w.replicas for w in ms.workloads)


def scale(kube, ns, name, replicas, manager="kubectl"):
    kube.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
        [("fieldManager", manager)],
        body={"spec": {"replicas": replicas}},
        content_type="application/merge-patch+json",
    )


def replicas(kube, ns, name):
    d = kube.get("apps/v1", "Deployment", name, ns)
    return None if d is None or d["metadata"].get("deletionTimestamp") else d["spec"]["replicas"]


# ------------------------------------------------------------------------------------------ in-process


def test_daemon_converges_repairs_drift_follows_the_plan_and_answers(
    kube_cluster, kube_admin, kube_namespace, tmp_path
):
    ns = kube_namespace
    a = default_plan()
    b, what = changed_plan(a)
    ms_a, ms_b = build(a), build(b)
    f = tmp_path / "plan.json"
    a.save(f)
    cfg = daemon_config(f"file:{f}", ns, kube_cluster.kubeconfig_path, interval=30.0)  # watches drive it
    with running_daemon(cfg) as rd:
        wait_for(lambda: rd.get("/readyz")[0] == 200, 20, what="/readyz")
        assert converged(kube_admin, ns, ms_a)
        assert rd.get("/healthz") == (200, b"ok\n")
        w = ms_a.workloads[0]

        # someone scales a Deployment: put back (via the watch, well before the 30 s resync)
        t0 = time.monotonic()
        scale(kube_admin, ns, w.name, w.replicas + 4)
        wait_for(lambda: replicas(kube_admin, ns, w.name) == w.replicas, 10, what="scale reverted")
        assert time.monotonic() - t0 < 10

        # someone deletes a Deployment and a Service: re-created
        kube_admin.delete("apps/v1", "Deployment", w.name, ns)
        kube_admin.delete("v1", "Service", ms_a.model_services[w.model], ns)
        wait_for(lambda: converged(kube_admin, ns, ms_a), 10, what="deleted objects re-created")

        # someone hand-edits the pod template (another field manager): reverted, pods roll back
        image = next(d for d in ms_a.dicts() if d["kind"] == "Deployment" and d["metadata"]["name"] == w.name)["spec"][
            "template"
        ]["spec"]["containers"][0]["image"]
        kube_admin.request(
            "PATCH",
            f"/apis/apps/v1/namespaces/{ns}/deployments/{w.name}",
            [("fieldManager", "kubectl-edit")],
            content_type="application/strategic-merge-patch+json",
            body={"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "evil/image:1"}]}}}},
        )
        wait_for(
            lambda: (
                kube_admin.get("apps/v1", "Deployment", w.name, ns)["spec"]["template"]["spec"]["containers"][0][
                    "image"
                ]
                == image
            ),
            10,
            what="hand edit reverted",
        )
        assert rd.metric("synergai_object_changes_total", action="updated") >= 2
        assert rd.metric("synergai_object_changes_total", action="created") >= len(ms_a.objects) + 2

        # /v1/assign: a replica pool and its Service (which exists), with the decision time
        for model in ms_a.model_services:
            code, body = rd.post("/v1/assign", {"model": model, "deadline_ms": 1000})
            assert code == 200, body
            r = json.loads(body)
            assert r["model"] == model and r["plan_id"] == a.plan_id
            assert r["pool"] in {x.pool for x in ms_a.workloads if x.model == model}
            assert r["decision_time_us"] > 0 and r["meets_deadline"] is True
            svc = kube_admin.get("v1", "Service", r["service"]["name"], ns)
            assert svc["spec"]["selector"][LABEL_INSTANCE] == r["deployment"]
            assert r["service"]["host"] == f"{r['service']['name']}.{ns}.svc"
            assert kube_admin.get("v1", "Service", r["model_service"]["name"], ns)
        code, body = rd.post("/v1/assign", {"model": "no-such-model"})
        assert code == 404 and b"not served" in body
        assert rd.post("/v1/assign", b"{bad json")[0] == 400
        assert rd.post("/v1/assign", {"model": "resnet50", "deadline_ms": -3})[0] == 400
        assert rd.get("/nope")[0] == 404
        # hostile bodies: 400 with a one-line JSON error, never a dropped connection
        model0 = next(iter(ms_a.model_services))
        for hostile in (
            b'{"model": "' + model0.encode() + b'", "deadline_ms": ' + b"9" * 400 + b"}",
            b'{"model": "x", "deadline_ms": 1e400}',
            b"[" * 100_000 + b"]" * 100_000,
            b'{"model": ' + b'{"a": ' * 50 + b"1" + b"}" * 50 + b"}",
            b"\xff\xfe",
        ):
            code, body = rd.post("/v1/assign", hostile)
            assert code in (400, 413), (code, body[:200])
            assert "\n" not in body.decode().strip() and json.loads(body)["error"]
        # /v1/assign changes scheduler state: refused without the token or with a wrong one
        n200 = rd.metric("synergai_assign_requests_total", code="200")
        for tok in (None, "wrong-" + rd.token, rd.token + "x"):
            code, body = rd.post("/v1/assign", {"model": model0}, token=tok)
            assert code == 401 and "token" in json.loads(body)["error"], (tok, code, body)
        assert rd.metric("synergai_assign_requests_total", code="401") == 3
        assert rd.metric("synergai_assign_requests_total", code="200") == n200
        # read-only endpoints need no token
        assert rd.get("/status")[0] == 200 and rd.get("/metrics")[0] == 200

        # metrics
        assert rd.metric("synergai_reconciles_total", result="ok") >= 3
        assert rd.metric("synergai_objects_managed", kind="Deployment") == len(ms_a.servers)  # one per server group
        assert rd.metric("synergai_apply_latency_seconds_count") > 0
        assert rd.metric("synergai_assign_requests_total", code="200") == len(ms_a.model_services)
        assert rd.metric("synergai_plan_info", plan_id=a.plan_id) == 1
        assert rd.metric("synergai_in_sync") == 1
        # status ConfigMap
        cm = kube_admin.get("v1", "ConfigMap", "synergai-status", ns)
        assert cm["data"]["planId"] == a.plan_id and cm["data"]["inSync"] == "true"

    # a new plan in the file: picked up at the next resync, updated in place and pruned
    b.save(f)
    with running_daemon(daemon_config(f"file:{f}", ns, kube_cluster.kubeconfig_path, interval=0.5)) as rd:
        wait_for(lambda: converged(kube_admin, ns, ms_b), 15, what="plan B applied")
        wait_for(lambda: json.loads(rd.get("/status")[1])["planId"] == b.plan_id, 5, what="status")
        code, body = rd.post("/v1/assign", {"model": b.assignments_of(what["scaled"])[0].model})
        assert code == 200 and json.loads(body)["plan_id"] == b.plan_id


def test_daemon_resolves_a_409_conflict(kube_cluster, kube_admin, kube_namespace, tmp_path):
    """Another field manager owns spec.replicas: the daemon's non-forced apply gets a real 409 from the
    server; it records the conflict and forces (the plan is the source of truth)."""
    ns = kube_namespace
    ms = build(default_plan())
    f = tmp_path / "plan.json"
    default_plan().save(f)
    with running_daemon(daemon_config(f"file:{f}", ns, kube_cluster.kubeconfig_path)) as rd:
        wait_for(lambda: rd.get("/readyz")[0] == 200, 20, what="ready")
        w = ms.workloads[-1]
        kube_admin.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": w.name},
                "spec": {"replicas": w.replicas + 3},
            },
            ns,
            force=True,
            field_manager="autoscaler",
        )
        wait_for(lambda: rd.metric("synergai_conflicts_total") >= 1, 10, what="conflict counted")
        wait_for(lambda: replicas(kube_admin, ns, w.name) == w.replicas, 10, what="replicas restored")
        dep = kube_admin.get("apps/v1", "Deployment", w.name, ns)
        # spec.replicas (the deployment controller owns status.replicas once it has updated the status)
        owner = [
            m
            for m in dep["metadata"]["managedFields"]
            if "f:replicas" in json.dumps((m.get("fieldsV1") or {}).get("f:spec", {}))
        ]
        assert [m["manager"] for m in owner] == ["synergai"]

    # with --no-force-conflicts the daemon reports and leaves the field alone
    kube_admin.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": w.name},
            "spec": {"replicas": w.replicas + 3},
        },
        ns,
        force=True,
        field_manager="autoscaler",
    )
    with running_daemon(daemon_config(f"file:{f}", ns, kube_cluster.kubeconfig_path, force_conflicts=False)) as rd:
        wait_for(lambda: "conflict" in json.loads(rd.get("/status")[1])["lastError"], 10, what="conflict reported")
        assert rd.metric("synergai_in_sync") == 0
        assert rd.metric("synergai_errors_total", kind="apply") >= 1
        assert replicas(kube_admin, ns, w.name) == w.replicas + 3


def test_daemon_survives_an_api_server_restart_and_expired_watches(
    kube_cluster, kube_admin, kube_namespace, tmp_path, fake_kubelet
):
    """The API server restarts; the daemon's watches reconnect (resuming from the versions they last
    saw, they usually get 410 Gone and list afresh) and keep reacting to drift (the periodic resync
    is 300 s away, so only the watches can)."""
    ns = kube_namespace
    ms = build(default_plan())
    f = tmp_path / "plan.json"
    default_plan().save(f)
    with running_daemon(daemon_config(f"file:{f}", ns, kube_cluster.kubeconfig_path, interval=300.0)) as rd:
        wait_for(lambda: rd.get("/readyz")[0] == 200, 20, what="ready")
        settle(kube_admin, ns)
        # any write moves the cluster's revision past what the (idle) watches last saw
        kube_admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bump"}}, ns)
        kube_cluster.restart_apiserver(downtime=1.0)
        # while the API server was away the loop kept running and /v1/assign kept answering
        assert rd.get("/healthz")[0] == 200
        assert rd.post("/v1/assign", {"model": ms.workloads[0].model})[0] == 200
        # Usually both resumed watches get 410 Gone; when a watch had already seen a newer version
        # (a bookmark) it just reconnects. Either way both must restart; the 410 decoding itself is
        # unit-tested in test_executor_kube.py, and the drift repair below proves the watches live.
        wait_for(
            lambda: rd.metric("synergai_watch_restarts_total", reason="disconnected") >= 2,
            60,
            what="both watches restarted",
        )
        for w in (ms.workloads[1], ms.workloads[2]):
            scale(kube_admin, ns, w.name, 7)
            wait_for(
                lambda w=w: replicas(kube_admin, ns, w.name) == w.replicas, 10, what="drift repaired after the restart"
            )
        kube_admin.delete("v1", "Service", ms.workloads[0].service, ns)
        wait_for(lambda: converged(kube_admin, ns, ms), 10, what="deleted Service re-created")
        assert rd.metric("synergai_in_sync") == 1


def settle(kube, ns, quiet: float = 1.0, timeout: float = 30.0) -> None:
    """Wait until no managed object in ``ns`` changes for ``quiet`` seconds (controllers done)."""

    def rvs():
        return {k: v["metadata"]["resourceVersion"] for k, v in managed(kube, ns).items()}

    deadline = time.monotonic() + timeout
    last = rvs()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = rvs()
        if now == last:
            return
        last = now
    raise AssertionError(f"objects in {ns} still changing after {timeout}s")


def _try(fn) -> bool:
    try:
        fn()
        return True
    except Exception:
        return False


def test_daemon_configmap_plan_source(kube_cluster, kube_admin, kube_namespace):
    ns = kube_namespace
    a = random_plan(1)
    b, _ = changed_plan(a)
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "the-plan"},
        "data": {"plan.json": a.model_dump_json()},
    }
    kube_admin.create(cm, ns)
    with running_daemon(
        daemon_config(f"configmap:{ns}/the-plan", ns, kube_cluster.kubeconfig_path, interval=300.0)
    ) as rd:
        wait_for(lambda: converged(kube_admin, ns, build(a)), 20, what="plan A from the ConfigMap")
        cm["data"]["plan.json"] = b.model_dump_json()
        kube_admin.apply(cm, ns, field_manager="operator")
        # the ConfigMap watch wakes the daemon (the resync is 300 s away)
        wait_for(lambda: converged(kube_admin, ns, build(b)), 10, what="plan B from the ConfigMap")
        # a broken plan in the ConfigMap: reported, the live plan stays applied and answers
        cm["data"]["plan.json"] = "{ broken"
        kube_admin.apply(cm, ns, field_manager="operator")
        wait_for(lambda: "not valid JSON" in json.loads(rd.get("/status")[1])["lastError"], 10, what="error shown")
        assert rd.metric("synergai_errors_total", kind="input") >= 1
        assert converged(kube_admin, ns, build(b))
        code, text = rd.get("/readyz")
        assert code == 200 and b"out of sync" in text
        assert rd.post("/v1/assign", {"model": build(b).workloads[0].model})[0] == 200


def test_daemon_plans_a_workload_for_the_node_inventory(kube_cluster, kube_admin, kube_namespace, fake_kubelet):
    """The planner on the cluster: a workload in the ConfigMap, the cluster read from Node labels."""
    ns = kube_namespace
    wl = "models:\n  - {model: mobilenet-v2, rate_rps: 60, deadline_ms: 100}\n"
    kube_admin.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "wl"}, "data": {"workload.yaml": wl}}, ns
    )
    with running_daemon(daemon_config("configmap:wl", ns, kube_cluster.kubeconfig_path)) as rd:
        wait_for(lambda: rd.get("/readyz")[0] == 200, 60, what="planned and applied")
        d = rd.daemon
        assert {p.name for p in d.plan.pools} >= {"cloud-x86"}  # the fake node's pool
        deps = [o for (k, _), o in managed(kube_admin, ns).items() if k == "Deployment"]
        assert deps
        for dep in deps:
            sel = dep["spec"]["template"]["spec"]["nodeSelector"]
            assert sel["synergai.io/pool"] == "cloud-x86" and sel["kubernetes.io/arch"] == "amd64"
        assert d.warnings == []  # every plan pool has a matching Ready node
        name = deps[0]["metadata"]["name"]
        wait_for(
            lambda: (
                (kube_admin.get("apps/v1", "Deployment", name, ns).get("status") or {}).get("availableReplicas")
                == deps[0]["spec"]["replicas"]
            ),
            60,
            what="pods running on the node",
        )


# ------------------------------------------------------------------------------------------ subprocess


def _spawn(plan_source, ns, kubeconfig, port, *extra, log=None, token_file=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    env.pop("SYNERGAI_TOKEN_FILE", None)
    if token_file:
        env["SYNERGAI_TOKEN_FILE"] = str(token_file)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "synergai.cli",
            "daemon",
            "--plan-source",
            plan_source,
            "--namespace",
            ns,
            "--kubeconfig",
            kubeconfig,
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            *extra,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log or subprocess.PIPE,
        start_new_session=True,
    )


def _ready(port) -> bool:
    try:
        return http_request(port, "GET", "/readyz", timeout=2)[0] == 200
    except OSError:
        return False


def test_daemon_sigterm_finishes_the_step_and_exits_0(kube_cluster, kube_admin, kube_namespace, tmp_path):
    """SIGTERM in the middle of a reconcile step (writes paced 0.2 s apart): the step completes,
    then the process exits 0."""
    ns = kube_namespace
    ms = build(default_plan())
    f = tmp_path / "plan.json"
    default_plan().save(f)
    port = free_port()
    log = open(tmp_path / "daemon.log", "wb")
    p = _spawn(
        f"file:{f}", ns, kube_cluster.kubeconfig_path, port, "--interval", "1", "--write-interval", "0.2", log=log
    )
    try:
        wait_for(lambda: managed(kube_admin, ns) or p.poll() is not None, 30, interval=0.02, what="first write")
        assert p.poll() is None, (tmp_path / "daemon.log").read_text()
        assert not converged(kube_admin, ns, ms)  # mid-step
        p.send_signal(signal.SIGTERM)
        rc = p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
    text = (tmp_path / "daemon.log").read_text()
    assert rc == 0, text
    assert converged(kube_admin, ns, ms), "the step was not finished"
    assert "finishing the current step" in text and "daemon stopped" in text
    assert "Traceback" not in text


def test_daemon_killed_mid_reconcile_converges_on_restart(
    kube_cluster, kube_admin, kube_namespace, tmp_path, fake_kubelet
):
    """SIGKILL while the daemon is half-way through moving plan A to plan B; a restarted daemon
    converges to B with nothing duplicated and nothing orphaned."""
    ns = kube_namespace
    a = random_plan(5)
    b, what = changed_plan(a)
    d = b.model_dump(mode="json")
    for x in d["assignments"]:  # more changes, so the kill lands in the middle
        x["replicas"] = x["replicas"] % 3 + 1
    b = Plan.model_validate(d)
    b = b.model_copy(update={"plan_id": b.compute_id()})
    ms_a, ms_b = build(a), build(b)
    apply_objects(kube_admin, ms_a.dicts(), ns)
    f = tmp_path / "plan.json"
    b.save(f)
    port = free_port()
    log = open(tmp_path / "daemon1.log", "wb")
    p = _spawn(f"file:{f}", ns, kube_cluster.kubeconfig_path, port, "--write-interval", "0.4", log=log)
    try:
        # kill after the first write, before the last
        def partly():
            live = managed(kube_admin, ns)
            return sum(
                1
                for w in ms_b.workloads
                if ("Deployment", w.name) in live
                and live[("Deployment", w.name)]["spec"]["replicas"] == w.replicas
                and ms_a.workload_for(w.model, w.pool).replicas != w.replicas
            )

        wait_for(lambda: partly() >= 1, 30, interval=0.02, what="first write")
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
    assert p.returncode == -signal.SIGKILL
    assert not converged(kube_admin, ns, ms_b), "killed too late: nothing left half-done"

    log = open(tmp_path / "daemon2.log", "wb")
    token = tmp_path / "token"  # a mounted Secret
    token.write_text("s3cret-" + os.urandom(8).hex() + "\n")
    p = _spawn(f"file:{f}", ns, kube_cluster.kubeconfig_path, port, "--interval", "1", log=log, token_file=token)
    try:
        wait_for(lambda: converged(kube_admin, ns, ms_b), 30, what="converged after restart")
        wait_for(lambda: _ready(port), 10, what="ready")
        # the token comes from the file; without it /v1/assign is refused
        body = {"model": ms_b.workloads[0].model}
        assert http_request(port, "POST", "/v1/assign", body)[0] == 401
        auth = {"Authorization": "Bearer " + token.read_text().strip()}
        assert http_request(port, "POST", "/v1/assign", body, headers=auth)[0] == 200
        token.write_text("rotated-" + os.urandom(8).hex())  # a rotated Secret is re-read
        os.utime(token, (time.time() + 5, time.time() + 5))
        assert http_request(port, "POST", "/v1/assign", body, headers=auth)[0] == 401
        auth = {"Authorization": "Bearer " + token.read_text().strip()}
        assert http_request(port, "POST", "/v1/assign", body, headers=auth)[0] == 200
        # nothing duplicated: one Deployment per (model, pool), one Service per Deployment and per model
        live = managed(kube_admin, ns)
        pairs = [
            (o["metadata"]["annotations"]["synergai.io/model"], o["metadata"]["annotations"]["synergai.io/pool-name"])
            for (k, _), o in live.items()
            if k == "Deployment"
        ]
        assert len(pairs) == len(set(pairs)) == len(ms_b.workloads)
        # nothing orphaned: every ReplicaSet and Pod belongs to a live Deployment of plan B (after GC)
        names = {w.name for w in ms_b.workloads}

        def owned():
            rss, _ = kube_admin.list("apps/v1", "ReplicaSet", ns)
            pods, _ = kube_admin.list("v1", "Pod", ns)
            rs_ok = all(r["metadata"]["ownerReferences"][0]["name"] in names for r in rss)
            rs_names = {r["metadata"]["name"] for r in rss}
            pod_ok = all(pd["metadata"].get("ownerReferences", [{}])[0].get("name") in rs_names for pd in pods)
            want = sum(w.replicas for w in ms_b.workloads)
            return rs_ok and pod_ok and len([pd for pd in pods if not pd["metadata"].get("deletionTimestamp")]) == want

        wait_for(owned, 60, interval=0.5, what="ReplicaSets/Pods owned by plan B's Deployments only")
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
