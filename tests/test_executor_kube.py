"""Offline unit tests of the REST layer's own logic: retry/backoff policy, error classes, watch decoding.

(The behaviour against a real API server is in test_apply_kube.py / test_daemon_kube.py.)
"""

from __future__ import annotations

import json
import threading

import pytest

from synergai.executor.kube import KubeClient, KubeError, RetryPolicy, Stopped


class ScriptedClient(KubeClient):
    """KubeClient whose HTTP layer replays a script of errors/results."""

    def __init__(self, script, **kw):
        super().__init__(configuration=None, **kw)
        self.script = list(script)
        self.calls = 0

    def _raw(self, method, path, query=None, body=None, content_type=None, timeout=None, stream=False):
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


class RecordingStop(threading.Event):
    def __init__(self):
        super().__init__()
        self.waits = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return self.is_set()


def test_retries_429_honouring_retry_after_and_5xx_with_backoff():
    stop = RecordingStop()
    seen = []
    c = ScriptedClient(
        [
            KubeError(429, "slow down", retry_after=3),
            KubeError(503, "unavailable"),
            KubeError(0, "connection refused"),
            {"ok": 1},
        ],
        stop=stop,
        retry=RetryPolicy(attempts=5, base=0.1, cap=1.0, jitter=0),
        on_retry=seen.append,
    )
    assert c.request("GET", "/x") == {"ok": 1}
    assert c.calls == 4
    assert [e.status for e in seen] == [429, 503, 0]
    assert stop.waits[0] == 3  # Retry-After wins over the 0.1 s backoff
    assert stop.waits[1:] == [0.2, 0.4]  # exponential


@pytest.mark.parametrize(
    "err",
    [
        KubeError(409, "conflict"),
        KubeError(422, "invalid"),
        KubeError(403, "no"),
        KubeError(404, "gone"),
        KubeError(400, "bad"),
        KubeError(500, "failed to create typed patch object: .spec.x: field not declared"),
    ],
)
def test_no_retry_on_permanent_errors(err):
    c = ScriptedClient([err, {"never": 1}], stop=RecordingStop())
    with pytest.raises(KubeError) as e:
        c.request("GET", "/x")
    assert e.value is err and c.calls == 1


def test_gives_up_after_the_attempts():
    c = ScriptedClient([KubeError(503, "x")] * 3, stop=RecordingStop(), retry=RetryPolicy(attempts=3, base=0.01))
    with pytest.raises(KubeError) as e:
        c.request("GET", "/x")
    assert e.value.status == 503 and c.calls == 3


def test_stop_interrupts_the_backoff():
    stop = RecordingStop()
    stop.set()
    c = ScriptedClient([KubeError(503, "x"), {"ok": 1}], stop=stop)
    with pytest.raises(Stopped):
        c.request("GET", "/x")
    assert c.calls == 1


def test_backoff_is_capped_and_jittered():
    p = RetryPolicy(base=0.2, cap=5.0, jitter=0.3)
    for attempt in range(12):
        d = p.delay(attempt)
        assert 0 <= d <= 5.0 * 1.3
    assert p.delay(0, retry_after=100) == 30.0  # Retry-After bounded


def test_error_classes_and_conflict_fields():
    e = KubeError(
        409,
        "Apply failed with 1 conflict",
        reason="Conflict",
        verb="PATCH",
        what="/apis/x",
        body={
            "details": {
                "causes": [
                    {"reason": "FieldManagerConflict", "message": 'conflict with "hpa"', "field": ".spec.replicas"}
                ]
            }
        },
    )
    assert e.conflict and not e.retryable
    assert e.conflict_fields() == ['.spec.replicas (conflict with "hpa")']
    assert "\n" not in str(e) and "HTTP 409" in str(e)
    assert KubeError(410, "too old").gone
    assert KubeError(0, "refused").retryable and KubeError(504, "x").retryable
    assert KubeError(401, "x").forbidden and KubeError(403, "x").forbidden


class FakeStream:
    def __init__(self, chunks):
        self.chunks = chunks

    def stream(self, n, decode_content=True):
        yield from self.chunks

    def release_conn(self):
        pass


def test_watch_decodes_split_lines_and_raises_410():
    evs = [
        {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "code": 410,
                "reason": "Expired",
                "message": "too old resource version: 1 (5)",
            },
        },
    ]
    data = b"".join(json.dumps(e).encode() + b"\n" for e in evs)
    chunks = [data[i : i + 17] for i in range(0, len(data), 17)]  # events split across chunks
    c = ScriptedClient([FakeStream(chunks)], stop=RecordingStop())
    got = []
    with pytest.raises(KubeError) as e:
        for ev in c.watch("apps/v1", "Deployment", "ns", "1"):
            got.append(ev["type"])
    assert got == ["ADDED", "BOOKMARK"]
    assert e.value.gone and "too old" in e.value.message


def test_paths():
    assert KubeClient.path("apps/v1", "Deployment", "ns", "x") == "/apis/apps/v1/namespaces/ns/deployments/x"
    assert KubeClient.path("v1", "Node") == "/api/v1/nodes"
    with pytest.raises(ValueError):
        KubeClient.path("v1", "Service")
    with pytest.raises(ValueError):
        KubeClient.path("batch/v1", "Job", "ns")


# ------------------------------------------------------------------------------------------ diff


def test_diff_and_normalise():
    from synergai.executor.apply import _plan_id_only, diff, normalise

    live = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "x",
            "resourceVersion": "5",
            "generation": 2,
            "uid": "u",
            "managedFields": [{}],
            "annotations": {"synergai.io/plan-id": "a", "deployment.kubernetes.io/revision": "3"},
        },
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}},
        "status": {"replicas": 2},
    }
    would = json.loads(json.dumps(live))
    would["metadata"]["resourceVersion"] = "6"
    would["metadata"]["generation"] = 3
    would["status"] = {}
    assert diff(normalise(live), normalise(would)) == []
    would["spec"]["replicas"] = 3
    would["spec"]["template"]["spec"]["containers"][0]["image"] = "i:2"
    would["metadata"]["annotations"]["synergai.io/plan-id"] = "b"
    d = diff(normalise(live), normalise(would))
    assert "spec.replicas: 2 -> 3" in d
    assert "spec.template.spec.containers[0].image: 'i:1' -> 'i:2'" in d
    assert "metadata.annotations[synergai.io/plan-id]: 'a' -> 'b'" in d
    assert not _plan_id_only(d)
    assert _plan_id_only(["metadata.annotations[synergai.io/plan-id]: 'a' -> 'b'"])
    assert diff({"a": 1}, {"b": 1}) == ["a: removed", "b: added"]


def test_discovery_kinds_are_supported_without_the_gateway():
    """Endpoints and EndpointSlices (discovery.k8s.io/v1, v1beta1 on 1.20) are kinds of the REST layer
    itself: nobody has to patch them in (the gateway used to, at startup). A fresh interpreter, so no
    earlier import can have added them."""
    import subprocess
    import sys

    code = (
        "from synergai.executor.kube import KINDS, KubeClient as K\n"
        "print(K.path('v1', 'Endpoints', 'ns'))\n"
        "print(K.path('discovery.k8s.io/v1', 'EndpointSlice', 'ns', 'x'))\n"
        "print(K.path('discovery.k8s.io/v1beta1', 'EndpointSlice', 'ns'))\n"
        "print(KINDS['EndpointSlice'][0])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        "/api/v1/namespaces/ns/endpoints",
        "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices/x",
        "/apis/discovery.k8s.io/v1beta1/namespaces/ns/endpointslices",
        "discovery.k8s.io/v1",
    ]  # the newest version first
    with pytest.raises(ValueError):
        KubeClient.path("discovery.k8s.io/v1", "EndpointSlice")  # namespaced
