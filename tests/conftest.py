"""Shared fixtures: one real Kubernetes control plane per session, a namespace per test.

The control plane is ``tests/kube_harness.py`` (etcd + kube-apiserver + kube-controller-manager
v1.20 built by ``bash .ci/build-kube.sh``). Tests that use it are marked ``@pytest.mark.kube``;
when the binaries are missing they FAIL (never skip) with a message saying how to build them.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid

import pytest


def pytest_configure(config):
    # the test API server has a self-signed certificate (kubeconfig: insecure-skip-tls-verify)
    config.addinivalue_line("filterwarnings", "ignore::urllib3.exceptions.InsecureRequestWarning")


# Static-token users of the session cluster (no groups, no permissions until a test binds them).
DAEMON_USER = "synergai-daemon"
READER_USER = "ns-reader"
KUBE_TOKENS = {
    DAEMON_USER: "synergai-daemon-" + secrets.token_hex(12),
    READER_USER: "ns-reader-" + secrets.token_hex(12),
}


@pytest.fixture(scope="session")
def kube_cluster():
    """A real etcd + kube-apiserver + kube-controller-manager (v1.20), shared by the session.

    ``kube_cluster.tokens()`` holds the admin token and the users in :data:`KUBE_TOKENS`.
    """
    # The harness's Service range is a /24 (254 ClusterIPs); the executor tests create a few hundred
    # Services per session (namespaces are deleted asynchronously), so widen it (the last flag wins).
    # + the EndpointSlice controller: it publishes ready pods (loopback pod IPs included, which the
    # Endpoints validation refuses) for the gateway's discovery (tests/test_gateway_kube.py)
    from tests.kube_harness import DEFAULT_CONTROLLERS, KubeBinariesMissing, KubeCluster, KubeHarnessError

    cluster = KubeCluster(extra_tokens=dict(KUBE_TOKENS), controllers=(*DEFAULT_CONTROLLERS, "endpointslice"))
    problem = None
    try:
        cluster.start()
    except KubeBinariesMissing as e:
        problem = f"{e}\n(the kube tests never skip: build the binaries with `bash .ci/build-kube.sh`)"
    except KubeHarnessError as e:
        problem = f"the test Kubernetes control plane did not start: {e}"
    if problem:
        pytest.fail(problem, pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def fake_kubelet(kube_cluster):
    """A Ready amd64 node labelled like the default cluster's cloud-x86 pool; runs every pod."""
    from tests.kube_harness import FakeKubelet

    kubelet = FakeKubelet(
        kube_cluster.kubeconfig_path,
        node_name="fake-node-1",
        labels={
            "kubernetes.io/arch": "amd64",
            "synergai.io/device": "x86-xeon-8275cl",
            "synergai.io/tier": "cloud",
            "synergai.io/pool": "cloud-x86",
            "synergai.test/pool": "cpu",
        },
        capacity={"cpu": "16", "memory": "32Gi"},
    )
    kubelet.start()
    try:
        yield kubelet
    finally:
        kubelet.stop()


@pytest.fixture
def local_pods(kube_cluster, kube_namespace, tmp_path):
    """``local_pods(plan_path)`` -> a FakeKubelet that really runs the pods of this test's namespace:
    each pod is a local ``synergai serve --plan PLAN --server GROUP`` on its own loopback address
    (127.0.x.y, the pod IP), Ready once it answers /v2/health/ready. Every process is stopped at the end
    (and the test fails if one survives)."""
    from tests.kube_harness import FakeKubelet, LocalServeRuntime

    made = []

    def start(plan_path, **kw):
        rt = LocalServeRuntime(plan_path, log_dir=tmp_path / "pods", **kw)
        kl = FakeKubelet(
            kube_cluster.kubeconfig_path,
            node_name=f"serve-{uuid.uuid4().hex[:6]}",
            labels={"synergai.test/pool": "local"},
            runtime=rt,
            namespaces=[kube_namespace],
            poll_interval=0.2,
        )
        made.append(kl)
        return kl.start()

    yield start
    leftovers = []
    for kl in made:
        procs = list(kl.runtime.procs.values())
        kl.stop(delete_node=True)
        leftovers += [p.pid for p in procs if not p.exited()]
    assert not leftovers, f"pod processes still running: {leftovers}"


@pytest.fixture(scope="session")
def kube_admin(kube_cluster):
    """An :class:`executor.kube.KubeClient` with admin rights."""
    from synergai.executor.kube import KubeClient

    client = KubeClient.from_kubeconfig(kube_cluster.kubeconfig_path)
    yield client
    client.close()


def _ns_name(request) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-") or "t"
    return f"{base}-{uuid.uuid4().hex[:5]}"


def create_namespace(kube, name: str) -> str:
    kube.create(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"synergai.test/ns": "1"}}}
    )
    # the namespace's default ServiceAccount is not needed (ServiceAccount admission is off)
    return name


@pytest.fixture
def kube_namespace(request, kube_cluster, kube_admin):
    """A fresh namespace for this test (deleted afterwards, without waiting)."""
    ns = create_namespace(kube_admin, _ns_name(request))
    yield ns
    try:
        kube_admin.delete("v1", "Namespace", ns)
    except Exception:
        pass


@pytest.fixture
def other_namespace(request, kube_cluster, kube_admin):
    """A second fresh namespace (for isolation checks)."""
    ns = create_namespace(kube_admin, "other-" + _ns_name(request)[:40])
    yield ns
    try:
        kube_admin.delete("v1", "Namespace", ns)
    except Exception:
        pass


def wait_for(pred, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``pred()`` until truthy; return its value or fail with ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def to_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


# ------------------------------------------------------------------------------------------ daemon helpers


class RunningDaemon:
    """An in-process daemon (``executor.daemon.run`` in a thread) and its HTTP port."""

    def __init__(self, daemon, thread, stop):
        self.daemon = daemon
        self.thread = thread
        self.stop = stop

    @property
    def port(self) -> int:
        return self.daemon.http_port

    def get(self, path: str):
        return http_request(self.port, "GET", path)

    @property
    def token(self):
        return self.daemon.config.token

    def post(self, path: str, body, token: object = "config"):
        """POST with the daemon's bearer token (``token=None``: none, or a given string)."""
        tok = self.token if token == "config" else token
        return http_request(self.port, "POST", path, body, headers={"Authorization": f"Bearer {tok}"} if tok else None)

    def metric(self, name: str, **labels) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        from prometheus_client.parser import text_string_to_metric_families

        code, text = self.get("/metrics")
        assert code == 200
        total = 0.0
        for fam in text_string_to_metric_families(text.decode()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total


def http_request(port: int, method: str, path: str, body=None, timeout: float = 10.0, headers=None):
    import urllib.error
    import urllib.request

    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class running_daemon:  # noqa: N801 - used as a context manager
    """``with running_daemon(DaemonConfig(...)) as rd:`` runs the daemon until the block ends."""

    def __init__(self, config, **kw):
        self.config = config
        self.kw = kw

    def __enter__(self) -> RunningDaemon:
        import threading

        from synergai.executor.daemon import run

        self.stop = threading.Event()
        box = {}
        started = threading.Event()

        def ready(d):
            box["d"] = d
            started.set()

        self.result = {}

        def target():
            try:
                self.result["rc"] = run(self.config, self.stop, ready=ready, **self.kw)
            except BaseException as e:  # surfaced in __exit__
                self.result["exc"] = e
                started.set()

        self.thread = threading.Thread(target=target, name="test-daemon", daemon=True)
        self.thread.start()
        assert started.wait(20), "daemon did not start"
        if "exc" in self.result:
            raise self.result["exc"]
        self.rd = RunningDaemon(box["d"], self.thread, self.stop)
        return self.rd

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "daemon did not stop within 30 s"
        if "exc" in self.result and exc[0] is None:
            raise self.result["exc"]
        if exc[0] is None:
            assert self.result.get("rc") == 0


def daemon_config(plan_source: str, namespace: str, kubeconfig: str, **kw):
    """A DaemonConfig with test-friendly timings (127.0.0.1, any free port, 1 s resync) and a random
    inline bearer token for /v1/assign (``RunningDaemon.post`` sends it)."""
    from synergai.executor.daemon import DaemonConfig
    from synergai.executor.kube import RetryPolicy

    base = dict(
        plan_source=plan_source,
        namespace=namespace,
        kubeconfig=kubeconfig,
        interval=1.0,
        host="127.0.0.1",
        port=0,
        debounce=0.05,
        watch_timeout=20,
        max_backoff=2.0,
        retry=RetryPolicy(attempts=8, base=0.1, cap=1.0),
        token="daemon-" + secrets.token_hex(8),
        token_file=None,
    )
    base.update(kw)
    return DaemonConfig(**base)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# CI runs the property tests with a fixed seed so a green run is reproducible; locally they explore.
import os as _os  # noqa: E402 -- kept beside the profile it configures

from hypothesis import settings as _hsettings  # noqa: E402

_hsettings.register_profile("ci", derandomize=True, print_blob=True)
if _os.environ.get("CI"):
    _hsettings.load_profile("ci")
