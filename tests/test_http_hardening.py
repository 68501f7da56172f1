"""Hardened HTTP of the request path: fuzzed bodies never get a 5xx or a dropped connection, a slow
client does not stop others, limits answer in JSON. Real processes on loopback."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.serving_procs import Procs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from synergai import default_cluster, default_profiles, default_workload, plan_offline
    from synergai.executor.serve import group_assignments

    plan = plan_offline(default_profiles(), default_cluster(), default_workload(), time_limit=20)
    d = tmp_path_factory.mktemp("hard")
    plan.save(d / "plan.json")
    grp = next(g for g, a in group_assignments(plan).items() if any(x.model == "resnet50" and x.replicas for x in a))
    with Procs() as ps:
        srv = ps.serve(["--plan", str(d / "plan.json"), "--server", grp, "--max-body-mb", "1"], host="127.0.0.9")
        (d / "eps.json").write_text(json.dumps({grp: [srv.url]}))
        gw = ps.gateway(
            [
                "--plan",
                str(d / "plan.json"),
                "--endpoints",
                str(d / "eps.json"),
                "--max-body-mb",
                "1",
                "--header-timeout",
                "2",
                "--body-timeout",
                "2",
            ]
        )
        yield {"gw": gw, "srv": srv}


def post(port, path, body: bytes, headers=None, host="127.0.0.1"):
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=40,
)
tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["INPUT0", "x", ""]),
        "shape": st.lists(st.integers(-2, 40), max_size=3) | json_values,
        "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "FP16", "nope"]),
        "data": st.lists(st.floats(allow_nan=False) | st.integers(-(2**70), 2**70), max_size=40) | json_values,
    }
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "inputs": st.lists(tensor, max_size=3),
            "parameters": st.dictionaries(st.sampled_from(["deadline_ms", "binary_data_output"]), json_values),
        }
    ).map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 500).map(lambda n: b'{"inputs": [], "parameters": {"deadline_ms": 1' + b"0" * n + b"}}"),
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    body=bodies,
    target=st.sampled_from(["gw", "srv"]),
    header=st.sampled_from([None, "5", "-1", "1" + "0" * 400, "abc", "1e400"]),
)
def test_fuzzed_bodies_never_5xx_never_dropped(stack, body, target, header):
    p = stack[target]
    headers = {"X-Deadline-Ms": header} if header is not None else {}
    code, payload = post(p.port, "/v2/models/resnet50/infer", body, headers, host=p.host)  # raises if dropped
    assert code < 500, (code, payload)
    if code >= 400:
        doc = json.loads(payload)
        assert list(doc) == ["error"] and "\n" not in doc["error"]


def test_body_limit_and_unknown_paths_json(stack):
    gw = stack["gw"]
    code, payload = post(gw.port, "/v2/models/resnet50/infer", b"x" * (2 * 1024 * 1024))
    assert code == 413 and "error" in json.loads(payload)
    code, payload = post(gw.port, "/nowhere", b"{}")
    assert code == 404 and "error" in json.loads(payload)


def test_slow_client_does_not_block_others(stack):
    """One client dribbles a request at one byte per second; others are served meanwhile, and the
    dribbling connection is closed by the header timeout (2 s here)."""
    gw = stack["gw"]
    slow = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    req = b"POST /v2/models/resnet50/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]}
    ).encode()
    served = 0
    closed = False
    t_end = time.monotonic() + 8
    for k, byte in enumerate(req):
        if time.monotonic() > t_end:
            break
        try:
            slow.send(bytes([byte]))
        except OSError:
            closed = True
            break
        t0 = time.monotonic()
        code, _ = post(gw.port, "/v2/models/resnet50/infer", body, {"X-Deadline-Ms": "1000"})
        assert code == 200 and time.monotonic() - t0 < 1.0
        served += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    if not closed:
        slow.settimeout(3)
        try:
            closed = slow.recv(1) == b""
        except OSError:
            closed = True
    slow.close()
    assert served >= 2 and closed
