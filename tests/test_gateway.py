"""End to end on loopback with real processes: a plan, several ``synergai serve`` servers (emulated
profiles and a real ONNX model) on their own 127.0.0.x addresses, the gateway, and ``tritonclient.http``
(a V2 client written independently of this project) sending requests. Faults: a server killed mid-load,
the plan hot-swapped mid-load, the gateway restarted."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import numpy as np
import pytest

from tests.serving_procs import Procs, http_get

tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    from synergai import default_cluster, default_profiles, default_workload, plan_offline

    plan = plan_offline(default_profiles(), default_cluster(), default_workload(), time_limit=20)
    p = tmp_path_factory.mktemp("plan") / "plan.json"
    plan.save(p)
    return p


def layout(plan):
    """Server groups for the test: every group hosting resnet50 (emulated; a shared one hosts its other
    models too), and one dedicated single-model group served by a real ONNX model."""
    from synergai.executor.serve import group_assignments

    groups = {g: a for g, a in group_assignments(plan).items() if any(x.replicas > 0 for x in a)}
    resnet = sorted(g for g, a in groups.items() if any(x.model == "resnet50" for x in a))
    hosted = {x.model for g in resnet for x in groups[g]}
    onnx = next(
        g
        for g, a in sorted(groups.items())
        if len(a) == 1
        and a[0].model not in hosted
        and sum(1 for b in groups.values() if any(x.model == a[0].model for x in b)) == 1
    )
    assert len(resnet) >= 2, groups
    return resnet, onnx, groups[onnx][0].model, {g: groups[g][0].pool for g in groups}


@pytest.fixture(scope="module")
def cluster(plan_path, tmp_path_factory):
    """Two emulated servers for the busiest resnet50 group, one for each other resnet50 group (shared
    groups emulate all their models), and a real ONNX server (mobilenet-tiny) for a single-model group."""
    from synergai.models import Plan

    plan = Plan.load(plan_path)
    resnet, onnx_group, onnx_model, pools = layout(plan)
    d = tmp_path_factory.mktemp("eps")
    busiest = max(resnet, key=lambda g: sum(a.routed_rate_rps for a in plan.assignments_of(g)))
    with Procs() as ps:
        eps, servers, k = {}, [], 2
        for g in resnet:
            for n in range(2 if g == busiest else 1):
                srv = ps.serve(["--plan", str(plan_path), "--server", g, "--seed", str(k)], host=f"127.0.0.{k}")
                eps.setdefault(g, []).append(srv.url)
                servers.append(srv)
                k += 1
        onnx = ps.serve(
            ["--onnx", f"{onnx_model}=zoo:mobilenet-tiny", "--batch-size", "4", "--batch-wait-ms", "2"],
            host=f"127.0.0.{k}",
        )
        eps[onnx_group] = [onnx.url]
        ep_file = d / "endpoints.json"
        ep_file.write_text(json.dumps(eps))
        token = d / "token"
        token.write_text("s3cret-token\n")
        gw = ps.gateway(
            [
                "--plan",
                str(plan_path),
                "--endpoints",
                str(ep_file),
                "--token-file",
                str(token),
                "--reload-interval",
                "0.2",
            ]
        )
        yield {
            "procs": ps,
            "gw": gw,
            "eps": eps,
            "servers": servers,
            "busiest": busiest,
            "resnet": resnet,
            "onnx_model": onnx_model,
            "onnx_group": onnx_group,
            "pools": pools,
            "dir": d,
            "plan": plan_path,
            "token": "s3cret-token",
        }


def client(gw, **kw):
    return tritonclient_http.InferenceServerClient(
        gw.url.removeprefix("http://"), connection_timeout=10, network_timeout=10, **kw
    )


def emu_input(rows=2, binary=True):
    x = np.arange(rows * 16, dtype=np.float32).reshape(rows, 16)
    i = tritonclient_http.InferInput("INPUT0", [rows, 16], "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    return x, i


def raw_infer(url, model, body, headers=None, timeout=10):
    req = urllib.request.Request(
        f"{url}/v2/models/{model}/infer",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def metric(url, name, **labels):
    from prometheus_client.parser import text_string_to_metric_families

    code, text = http_get(url + "/metrics")
    assert code == 200
    total = 0.0
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_tritonclient_end_to_end(cluster):
    gw = cluster["gw"]
    c = client(gw)
    assert c.is_server_live() and c.is_server_ready()
    om = cluster["onnx_model"]
    assert c.is_model_ready("resnet50") and c.is_model_ready(om)
    meta = c.get_model_metadata(om)
    assert meta["inputs"][0]["shape"] == [-1, 3, 32, 32] and meta["platform"] == "onnxruntime_onnx"
    # emulated resnet50: JSON and binary tensors, answers are the row sums
    for binary in (False, True):
        x, i = emu_input(3, binary)
        r = c.infer(
            "resnet50",
            [i],
            outputs=[tritonclient_http.InferRequestedOutput("OUTPUT0", binary_data=binary)],
            headers={"X-Deadline-Ms": "500"},
        )
        np.testing.assert_allclose(r.as_numpy("OUTPUT0").ravel(), x.sum(axis=1))
    # the real ONNX model: its real output shape, and the same answer as onnxruntime locally
    import onnxruntime as ort

    from synergai.profiling_data.profiler import zoo

    sess = ort.InferenceSession(str(zoo.build(zoo.resolve("mobilenet-tiny"))), providers=["CPUExecutionProvider"])
    img = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    i = tritonclient_http.InferInput(sess.get_inputs()[0].name, list(img.shape), "FP32")
    i.set_data_from_numpy(img)
    r = c.infer(om, [i])
    out = r.as_numpy(sess.get_outputs()[0].name)
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out, sess.run(None, {sess.get_inputs()[0].name: img})[0], rtol=1e-4, atol=1e-5)


def test_decisions_follow_plan_groups(cluster):
    gw, eps = cluster["gw"], cluster["eps"]
    x = np.ones((1, 16), dtype=np.float32)
    body = json.dumps(
        {
            "inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": x.ravel().tolist()}],
            "parameters": {"deadline_ms": 200},
        }
    ).encode()
    seen = {}
    for _ in range(60):
        code, h, payload = raw_infer(gw.url, "resnet50", body)
        assert code == 200, payload
        grp = h["X-Synergai-Server"]
        assert grp in cluster["resnet"]
        assert h["X-Synergai-Endpoint"] in eps[grp]
        assert h["X-Synergai-Pool"] == cluster["pools"][grp]
        assert h["X-Synergai-Meets-Deadline"] in ("true", "false")
        assert h["X-Synergai-Deadline-Ms"] == "200"
        assert float(h["X-Synergai-Server-Ms"]) >= 0
        seen[h["X-Synergai-Endpoint"]] = seen.get(h["X-Synergai-Endpoint"], 0) + 1
    # the plan routes most resnet50 traffic to its busiest group: both of its servers are used
    b = cluster["busiest"]
    assert seen.get(eps[b][0], 0) > 0 and seen.get(eps[b][1], 0) > 0, seen
    code, h, _ = raw_infer(
        gw.url,
        cluster["onnx_model"],
        json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]}
        ).encode(),
    )
    assert code == 200 and h["X-Synergai-Server"] == cluster["onnx_group"]


@pytest.mark.parametrize(
    "body,code,model",
    [
        (b'{"inputs": [', 400, "resnet50"),  # malformed JSON
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 15], "datatype": "FP32", "data": '
            + str([0.0] * 15).encode()
            + b"}]}",
            400,
            "resnet50",
        ),  # wrong shape
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": '
            + str([0] * 16).encode()
            + b"}]}",
            400,
            "resnet50",
        ),  # wrong datatype
        (b'{"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [1]}]}', 400, "resnet50"),
        (b'{"inputs": []}', 404, "no-such-model"),  # unknown model
        (b'{"inputs": [], "parameters": {"deadline_ms": 1' + b"0" * 400 + b"}}", 400, "resnet50"),  # absurd deadline
        (b"[" * 5000 + b"]" * 5000, 400, "resnet50"),  # deep nesting
    ],
)
def test_bad_requests_get_one_line_json_4xx(cluster, body, code, model):
    got, h, payload = raw_infer(cluster["gw"].url, model, body)
    assert got == code, payload
    doc = json.loads(payload)
    assert set(doc) == {"error"} and "\n" not in doc["error"] and doc["error"]


def test_tritonclient_sees_errors(cluster):
    c = client(cluster["gw"])
    _, i = emu_input(1)
    with pytest.raises(InferenceServerException, match="unknown model"):
        c.infer("no-such-model", [i])
    bad = tritonclient_http.InferInput("INPUT0", [1, 8], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 8), np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        c.infer("resnet50", [bad], headers={"X-Deadline-Ms": "500"})


def test_unauthenticated_state_changes_refused(cluster):
    gw = cluster["gw"]
    for path, body in (("/v1/routing", b'{"routing": "rr"}'), ("/v1/reload", b"{}")):
        for hdr in ({}, {"Authorization": "Bearer wrong"}):
            req = urllib.request.Request(gw.url + path, data=body, method="POST", headers=hdr)
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=5)
            assert e.value.code == 401 and "error" in json.loads(e.value.read())
    req = urllib.request.Request(
        gw.url + "/v1/routing",
        data=b'{"routing": "synergai"}',
        method="POST",
        headers={"Authorization": f"Bearer {cluster['token']}"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert json.loads(r.read()) == {"routing": "synergai"}


def _load(c, n, deadline_ms=2000, during=None, at=None):
    """n requests, 8 in flight (tritonclient's async API); returns (ok, failures)."""
    x, _ = emu_input(1)
    reqs, fails, ok = [], [], 0
    t_end = time.monotonic() + 60
    for k in range(n):
        if k == at and during is not None:
            during()
        _, i = emu_input(1)
        reqs.append(c.async_infer("resnet50", [i], headers={"X-Deadline-Ms": str(deadline_ms)}))
        if len(reqs) >= 8:
            r = reqs.pop(0)
            try:
                np.testing.assert_allclose(r.get_result(timeout=20).as_numpy("OUTPUT0").ravel(), x.sum(axis=1))
                ok += 1
            except InferenceServerException as e:
                fails.append(str(e))
        assert time.monotonic() < t_end, "load loop took too long"
    for r in reqs:
        try:
            r.get_result(timeout=20)
            ok += 1
        except InferenceServerException as e:
            fails.append(str(e))
    return ok, fails


def test_plan_hot_swap_mid_load_fails_nothing(cluster):
    from synergai.models import Plan

    gw, plan_path = cluster["gw"], cluster["plan"]
    plan = Plan.load(plan_path)
    old_id = plan.plan_id
    swapped = plan.model_copy(
        update={
            "assignments": [
                a.model_copy(update={"routed_rate_rps": a.routed_rate_rps * 0.5})
                if a.server == cluster["busiest"]
                else a
                for a in plan.assignments
            ]
        }
    )
    swapped = swapped.model_copy(update={"plan_id": swapped.compute_id()})
    assert swapped.plan_id != old_id

    def swap():
        tmp = plan_path.with_suffix(".tmp")
        swapped.save(tmp)
        os.replace(tmp, plan_path)

    c = client(gw, concurrency=8)
    try:
        ok, fails = _load(c, 300, during=swap, at=100)
    finally:
        c.close()
    assert fails == [] and ok == 300
    code, h, _ = raw_infer(
        gw.url,
        "resnet50",
        json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [0] * 16}]}).encode(),
    )
    assert code == 200 and h["X-Synergai-Plan"] == swapped.plan_id
    assert metric(gw.url, "synergai_gateway_plan_reloads_total", result="ok") >= 2


def test_server_killed_mid_load_every_request_answered(cluster):
    gw = cluster["gw"]
    before = metric(gw.url, "synergai_gateway_retries_total")
    c = client(gw, concurrency=8)
    try:
        ok, fails = _load(c, 300, during=cluster["servers"][1].kill, at=100)
    finally:
        c.close()
    assert fails == [] and ok == 300
    assert metric(gw.url, "synergai_gateway_retries_total") > before
    assert metric(gw.url, "synergai_gateway_upstream_errors_total", kind="connection") >= 1
    # the dead server is ejected: new requests go elsewhere
    st = json.loads(http_get(gw.url + "/v1/status")[1])
    assert cluster["servers"][1].url in st["ejected"]


def test_gateway_restart_serves_again(cluster, plan_path):
    ps: Procs = cluster["procs"]
    gw = cluster["gw"]
    port = gw.port
    gw.stop()
    assert http_get(gw.url + "/healthz")[0] == 0
    gw2 = ps.gateway(["--plan", str(cluster["plan"]), "--endpoints", str(cluster["dir"] / "endpoints.json")], port=port)
    x, i = emu_input(2)
    r = client(gw2).infer("resnet50", [i], headers={"X-Deadline-Ms": "1000"})
    np.testing.assert_allclose(r.as_numpy("OUTPUT0").ravel(), x.sum(axis=1))
