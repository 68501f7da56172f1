"""A real, local Kubernetes control plane for integration tests.

Runs Debian's ``etcd`` plus a ``kube-apiserver`` and ``kube-controller-manager``
built from Debian's ``kubernetes`` source package (see ``.ci/build-kube.sh``),
all on 127.0.0.1 with free ports, in a temp dir removed on ``stop()``.
There is no kubelet and no scheduler: :class:`FakeKubelet` registers a Ready
Node, binds pending Pods to it and reports them Running/Ready, so Deployments
become available. With a ``runtime`` (:class:`LocalServeRuntime`) it really runs
each pod: a local ``synergai serve`` process bound to the pod's own loopback
address (127.0.x.y), reported as the pod IP, Ready only once the process answers
``/v2/health/ready``; the process stops when the pod is deleted.

Endpoints vs EndpointSlices: the API server's validation refuses loopback
addresses in Endpoints ("may not be in the loopback range (127.0.0.0/8)"), so
with loopback pod IPs only the EndpointSlice controller (``endpointslice`` in
``controllers``) publishes the pods; the gateway discovers servers from there.

Typical use::

    from tests.kube_harness import KubeCluster, FakeKubelet

    with KubeCluster(extra_tokens={"synergai-daemon": "daemon-token"}) as kc:
        with FakeKubelet(kc.kubeconfig_path):
            ...  # kc.kubeconfig_path, kc.server, kc.admin_token

Nothing here sends traffic anywhere but 127.0.0.1.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

log = logging.getLogger(__name__)

__all__ = [
    "KubeBinariesMissing",
    "KubeHarnessError",
    "KubeCluster",
    "FakeKubelet",
    "LocalServeRuntime",
    "LoopbackIPs",
    "ensure_binaries",
    "default_cache_dir",
    "load_api_client",
]

_REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ".ci/build-kube.sh"

DEFAULT_CONTROLLERS = ("deployment", "replicaset", "garbagecollector", "namespace")
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/16"  # config value only; nothing listens there
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class KubeHarnessError(RuntimeError):
    """A control-plane process failed to start or become ready."""


class KubeBinariesMissing(KubeHarnessError):
    """kube-apiserver / kube-controller-manager / etcd could not be found."""


# --------------------------------------------------------------------------- binaries


def default_cache_dir() -> Path:
    env = os.environ.get("SYNERGAI_KUBE_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "synergai-kube"


def ensure_binaries() -> dict[str, str]:
    """Return absolute paths of the control-plane binaries.

    Keys: ``kube-apiserver``, ``kube-controller-manager``, ``etcd`` and, when
    found, ``kube-scheduler``. Looks in ``$SYNERGAI_KUBE_CACHE/bin``
    (default ``~/.cache/synergai-kube/bin``) first, then ``$PATH``
    (and /usr/bin for etcd). Raises :class:`KubeBinariesMissing` otherwise.
    """
    cache_bin = default_cache_dir() / "bin"
    found: dict[str, str] = {}
    missing: list[str] = []
    for name, required in (
        ("kube-apiserver", True),
        ("kube-controller-manager", True),
        ("etcd", True),
        ("kube-scheduler", False),
    ):
        cand = cache_bin / name
        path: Optional[str] = None
        if cand.is_file() and os.access(cand, os.X_OK):
            path = str(cand)
        else:
            path = shutil.which(name) or ("/usr/bin/" + name if os.access("/usr/bin/" + name, os.X_OK) else None)
        if path:
            found[name] = path
        elif required:
            missing.append(name)
    if missing:
        hint = (
            f"run `bash {BUILD_SCRIPT}` from the repo root ({_REPO_ROOT}) to build "
            f"kube-apiserver/kube-controller-manager from Debian's kubernetes source "
            f"package into {cache_bin} (~10 min cold) and install etcd-server"
        )
        raise KubeBinariesMissing(
            f"missing Kubernetes test binaries: {', '.join(missing)} (looked in {cache_bin} and $PATH); {hint}"
        )
    return found


# --------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Union[str, Path], lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(data.splitlines()[-lines:])


def _yaml_str(s: str) -> str:
    # JSON strings are valid YAML scalars.
    return json.dumps(s)


def write_kubeconfig(
    path: Union[str, Path],
    server: str,
    token: str,
    user: str = "user",
    cluster: str = "synergai-test",
    namespace: Optional[str] = None,
) -> str:
    """Write a token-auth kubeconfig (TLS verification skipped) and return its path."""
    ctx = f"{user}@{cluster}"
    ns = f"\n    namespace: {_yaml_str(namespace)}" if namespace else ""
    text = f"""apiVersion: v1
kind: Config
clusters:
- name: {_yaml_str(cluster)}
  cluster:
    server: {_yaml_str(server)}
    insecure-skip-tls-verify: true
users:
- name: {_yaml_str(user)}
  user:
    token: {_yaml_str(token)}
contexts:
- name: {_yaml_str(ctx)}
  context:
    cluster: {_yaml_str(cluster)}
    user: {_yaml_str(user)}{ns}
current-context: {_yaml_str(ctx)}
preferences: {{}}
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return str(path)


def load_api_client(kubeconfig: Union[str, Path]):
    """ApiClient from a kubeconfig, with client-side model validation off.

    (Newer python-client models may mark fields required that a 1.20 server
    leaves empty; validation off avoids spurious ValueErrors.)
    """
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.client_side_validation = False
    _quiet_insecure_warnings()
    return client.ApiClient(cfg)


def _quiet_insecure_warnings() -> None:
    try:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    except Exception:  # pragma: no cover
        pass


def _gen_rsa_key(path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl:
        subprocess.run(
            [openssl, "genrsa", "-out", str(path), "2048"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    else:
        try:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa
        except ImportError as exc:  # pragma: no cover
            raise KubeHarnessError(
                "need the openssl CLI or the python 'cryptography' package to generate the service-account key"
            ) from exc
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            )
        )
    os.chmod(path, 0o600)


def _terminate(p: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s (at once when ``timeout`` is 0); by PID only."""
    if p.poll() is not None:
        return
    try:
        if timeout <= 0:
            raise subprocess.TimeoutExpired(p.args, 0)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)
    except ProcessLookupError:
        pass


class _Proc:
    """A child process with its log file; stopped by PID."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.popen: Optional[subprocess.Popen] = None

    def start(self) -> None:
        logf = open(self.log_path, "ab")
        try:
            logf.write(f"\n===== {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            logf.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no terminal signals from pytest's Ctrl-C
                close_fds=True,
            )
        finally:
            logf.close()

    @property
    def pid(self) -> Optional[int]:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 15.0, graceful: bool = True) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s (at once if not ``graceful``)."""
        p = self.popen
        if p is None:
            return
        _terminate(p, timeout if graceful else 0.0)
        self.popen = None

    def tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)


# --------------------------------------------------------------------------- cluster

_LIVE_CLUSTERS: weakref.WeakSet[KubeCluster] = weakref.WeakSet()


@atexit.register
def _stop_leftover_clusters() -> None:  # pragma: no cover - safety net
    for kc in list(_LIVE_CLUSTERS):
        try:
            kc.stop()
        except Exception:
            pass


TokenSpec = Union[str, tuple[str, Sequence[str]]]


class KubeCluster:
    """etcd + kube-apiserver (+ kube-controller-manager) on 127.0.0.1.

    :param extra_tokens: ``{username: token}`` or ``{username: (token, [groups])}``
        added to the apiserver's static token file (fixed at start). Such users
        have no permissions until a test binds them with RBAC.
    :param controllers: kube-controller-manager ``--controllers``; ``None``/empty
        skips the controller manager.
    :param apiserver_args / controller_manager_args: extra ``--flag=value`` args.
    :param base_dir: parent dir of the temp dir (default: system temp).
    :param keep_dir: keep the temp dir (logs) after ``stop()``, for debugging;
        also honoured via env ``SYNERGAI_KUBE_KEEP=1``.
    :param apiserver_stop_timeout: seconds to wait after SIGTERM before SIGKILL.
        (kube-apiserver 1.20 stops listening at once on SIGTERM but often lingers
        ~15 s+ draining watch connections; tests don't need to wait for that.)
    """

    ADMIN_USER = "admin"

    def __init__(
        self,
        extra_tokens: Optional[Mapping[str, TokenSpec]] = None,
        *,
        controllers: Optional[Sequence[str]] = DEFAULT_CONTROLLERS,
        apiserver_args: Sequence[str] = (),
        controller_manager_args: Sequence[str] = (),
        ready_timeout: float = 60.0,
        apiserver_stop_timeout: float = 3.0,
        base_dir: Optional[Union[str, Path]] = None,
        keep_dir: Optional[bool] = None,
    ):
        self.extra_tokens: dict[str, tuple[str, list[str]]] = {}
        for user, spec in (extra_tokens or {}).items():
            if isinstance(spec, str):
                self.extra_tokens[user] = (spec, [])
            else:
                tok, groups = spec
                self.extra_tokens[user] = (tok, list(groups))
        self.controllers = list(controllers or [])
        self.apiserver_args = list(apiserver_args)
        self.controller_manager_args = list(controller_manager_args)
        self.ready_timeout = ready_timeout
        self.apiserver_stop_timeout = apiserver_stop_timeout
        self.base_dir = str(base_dir) if base_dir else None
        self.keep_dir = keep_dir if keep_dir is not None else os.environ.get("SYNERGAI_KUBE_KEEP") == "1"

        self.admin_token: str = "admin-" + secrets.token_hex(16)
        self.binaries: dict[str, str] = {}
        self.tmpdir: Optional[Path] = None
        self.etcd_port: Optional[int] = None
        self.etcd_peer_port: Optional[int] = None
        self.apiserver_port: Optional[int] = None
        self.controller_manager_port: Optional[int] = None
        self.kubeconfig_path: Optional[str] = None
        self.startup_seconds: Optional[float] = None
        self._etcd: Optional[_Proc] = None
        self._apiserver: Optional[_Proc] = None
        self._kcm: Optional[_Proc] = None
        self._started = False

    # ------------------------------------------------------------ properties
    @property
    def server(self) -> str:
        if self.apiserver_port is None:
            raise KubeHarnessError("cluster not started")
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def log_dir(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "logs"

    @property
    def apiserver_pid(self) -> Optional[int]:
        return self._apiserver.pid if self._apiserver else None

    def tokens(self) -> dict[str, str]:
        """``{username: token}`` for all static-token users (incl. admin)."""
        d = {self.ADMIN_USER: self.admin_token}
        d.update({u: t for u, (t, _) in self.extra_tokens.items()})
        return d

    def add_token(self, user: str, token: str, groups: Sequence[str] = ()) -> None:
        """Register an extra token user; only allowed before ``start()``."""
        if self._started:
            raise KubeHarnessError("tokens are fixed at apiserver start; add them before start()")
        self.extra_tokens[user] = (token, list(groups))

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> KubeCluster:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> KubeCluster:
        if self._started:
            return self
        t0 = time.monotonic()
        self.binaries = ensure_binaries()
        self.tmpdir = Path(tempfile.mkdtemp(prefix="synergai-kube-", dir=self.base_dir))
        _LIVE_CLUSTERS.add(self)
        self._started = True
        try:
            self.log_dir.mkdir()
            (self.tmpdir / "certs").mkdir()
            self._write_auth_files()
            self.etcd_port, self.etcd_peer_port, self.apiserver_port, self.controller_manager_port = _free_ports(4)
            self.kubeconfig_path = write_kubeconfig(
                self.tmpdir / "admin.kubeconfig", self.server, self.admin_token, user=self.ADMIN_USER
            )
            self._start_etcd()
            self.start_apiserver()
            self._wait_default_namespace()
            if self.controllers:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        log.info("kube cluster up at %s in %.1fs (dir %s)", self.server, self.startup_seconds, self.tmpdir)
        return self

    def stop(self) -> None:
        """Stop all processes (by PID) and remove the temp dir."""
        for proc in (self._kcm, self._apiserver, self._etcd):
            if proc is not None:
                try:
                    proc.stop(self.apiserver_stop_timeout if proc is self._apiserver else 15.0)
                except Exception as exc:  # pragma: no cover
                    log.warning("stopping %s failed: %s", proc.name, exc)
        self._kcm = self._apiserver = self._etcd = None
        if self.tmpdir is not None and not self.keep_dir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        elif self.tmpdir is not None:
            log.warning("kube harness dir kept: %s", self.tmpdir)
        self.tmpdir = None if not self.keep_dir else self.tmpdir
        self._started = False
        _LIVE_CLUSTERS.discard(self)

    # ------------------------------------------------------------ auth files
    def _write_auth_files(self) -> None:
        assert self.tmpdir is not None
        rows = [f'{self.admin_token},{self.ADMIN_USER},uid-admin,"system:masters"']
        for user, (tok, groups) in self.extra_tokens.items():
            if "," in tok or '"' in tok or "," in user:
                raise KubeHarnessError(f"invalid token/user for token file: {user!r}")
            g = ",".join(groups)
            rows.append(f'{tok},{user},uid-{user},"{g}"' if g else f"{tok},{user},uid-{user}")
        tokfile = self.tmpdir / "tokens.csv"
        tokfile.write_text("\n".join(rows) + "\n")
        os.chmod(tokfile, 0o600)
        _gen_rsa_key(self.tmpdir / "sa.key")

    # ------------------------------------------------------------ etcd
    def _start_etcd(self) -> None:
        assert self.tmpdir is not None
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        argv = [
            self.binaries["etcd"],
            "--name=synergai-test",
            f"--data-dir={self.tmpdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=synergai-test={peer}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-level=warn",
        ]
        self._etcd = _Proc("etcd", argv, self.log_dir / "etcd.log")
        self._etcd.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self._etcd.alive():
                raise KubeHarnessError(f"etcd exited during startup; log tail:\n{self._etcd.tail()}")
            try:
                with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as r:
                    if json.loads(r.read()).get("health") in ("true", True):
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise KubeHarnessError(f"etcd not healthy after 30s; log tail:\n{self._etcd.tail()}")

    # ------------------------------------------------------------ apiserver
    def _apiserver_argv(self) -> list[str]:
        assert self.tmpdir is not None
        sa_key = self.tmpdir / "sa.key"
        return [
            self.binaries["kube-apiserver"],
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            "--insecure-port=0",
            f"--cert-dir={self.tmpdir / 'certs'}",
            f"--token-auth-file={self.tmpdir / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            "--disable-admission-plugins=ServiceAccount",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # the 'kubernetes' Endpoints would point at 127.0.0.1, which
            # Endpoints validation rejects; we don't need it.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
            *self.apiserver_args,
        ]

    def start_apiserver(self, timeout: Optional[float] = None) -> None:
        """(Re)start kube-apiserver on the same port and wait for /readyz."""
        if self._apiserver is not None and self._apiserver.alive():
            return
        self._apiserver = _Proc("kube-apiserver", self._apiserver_argv(), self.log_dir / "kube-apiserver.log")
        self._apiserver.start()
        self.wait_ready(timeout)

    def stop_apiserver(self, graceful: bool = True) -> None:
        """Stop only kube-apiserver (etcd and controller-manager keep running).

        ``graceful``: SIGTERM first (SIGKILL after ``apiserver_stop_timeout``);
        otherwise SIGKILL at once, like a crash.
        """
        if self._apiserver is not None:
            self._apiserver.stop(self.apiserver_stop_timeout, graceful=graceful)

    def restart_apiserver(self, downtime: float = 0.0, timeout: Optional[float] = None, graceful: bool = True) -> None:
        """Stop and restart kube-apiserver on the same port, then wait for /readyz.

        ``downtime`` seconds are slept between stop and start; ``timeout``
        bounds the wait for readiness (default ``ready_timeout``).
        """
        self.stop_apiserver(graceful=graceful)
        # the port must be free again before we reuse it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.apiserver_port)) != 0:
                    break
            time.sleep(0.1)
        if downtime:
            time.sleep(downtime)
        self._apiserver = None
        self.start_apiserver(timeout)

    def _get(self, path: str, token: Optional[str] = None, timeout: float = 5.0) -> tuple[int, bytes]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(self.server + path)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_ready(self, timeout: Optional[float] = None) -> None:
        """Block until the apiserver's /readyz is ok (raise with the log tail otherwise)."""
        timeout = self.ready_timeout if timeout is None else timeout
        assert self._apiserver is not None
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self._apiserver.alive():
                raise KubeHarnessError(
                    f"kube-apiserver exited (rc={self._apiserver.popen.returncode if self._apiserver.popen else '?'}) "
                    f"during startup; log tail ({self._apiserver.log_path}):\n{self._apiserver.tail()}"
                )
            try:
                code, body = self._get("/readyz", timeout=3)
                if code == 200:
                    return
                last = f"HTTP {code}: {body[-300:].decode('utf-8', 'replace')}"
            except (OSError, ssl.SSLError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise KubeHarnessError(
            f"kube-apiserver not ready after {timeout:.0f}s at {self.server} (last: {last}); "
            f"log tail ({self._apiserver.log_path}):\n{self._apiserver.tail()}"
        )

    def _wait_default_namespace(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code, _ = self._get("/api/v1/namespaces/default")
            if code == 200:
                return
            time.sleep(0.2)
        raise KubeHarnessError("namespace 'default' was not created by the apiserver")

    # ------------------------------------------------------------ controller manager
    def _start_controller_manager(self) -> None:
        assert self.tmpdir is not None and self.kubeconfig_path is not None
        kcm_certs = self.tmpdir / "kcm-certs"
        kcm_certs.mkdir(exist_ok=True)
        argv = [
            self.binaries["kube-controller-manager"],
            f"--kubeconfig={self.kubeconfig_path}",
            f"--authentication-kubeconfig={self.kubeconfig_path}",
            f"--authorization-kubeconfig={self.kubeconfig_path}",
            f"--controllers={','.join(self.controllers)}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.controller_manager_port}",
            "--port=0",  # 1.20 still opens insecure :10252 by default
            # no client CA configured, so the apiserver never creates the
            # kube-system/extension-apiserver-authentication configmap
            "--authentication-skip-lookup=true",
            f"--cert-dir={kcm_certs}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--v=1",
            *self.controller_manager_args,
        ]
        self._kcm = _Proc("kube-controller-manager", argv, self.log_dir / "kube-controller-manager.log")
        self._kcm.start()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{self.controller_manager_port}/healthz"
        deadline = time.monotonic() + self.ready_timeout
        last = ""
        while time.monotonic() < deadline:
            if not self._kcm.alive():
                raise KubeHarnessError(f"kube-controller-manager exited during startup; log tail:\n{self._kcm.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except (OSError, ssl.SSLError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise KubeHarnessError(
            f"kube-controller-manager not healthy after {self.ready_timeout:.0f}s ({last}); "
            f"log tail:\n{self._kcm.tail()}"
        )

    # ------------------------------------------------------------ client helpers
    def kubeconfig_for_token(
        self,
        token: str,
        path: Optional[Union[str, Path]] = None,
        user: Optional[str] = None,
        namespace: Optional[str] = None,
    ) -> str:
        """Write a kubeconfig for ``token`` (e.g. an ``extra_tokens`` user); returns the path.

        Default path: ``<tmpdir>/<user>.kubeconfig`` (removed on ``stop()``).
        """
        if user is None:
            user = next((u for u, t in self.tokens().items() if t == token), "user")
        if path is None:
            if self.tmpdir is None:
                raise KubeHarnessError("cluster not started; pass an explicit path")
            path = self.tmpdir / f"{user}.kubeconfig"
        return write_kubeconfig(path, self.server, token, user=user, namespace=namespace)

    def api_client(self, token: Optional[str] = None):
        """A ``kubernetes.client.ApiClient`` for the admin (or the given token)."""
        if token is None or token == self.admin_token:
            assert self.kubeconfig_path is not None
            return load_api_client(self.kubeconfig_path)
        assert self.tmpdir is not None
        path = self.tmpdir / f"client-{secrets.token_hex(4)}.kubeconfig"
        return load_api_client(self.kubeconfig_for_token(token, path))

    def log_tail(self, component: str = "kube-apiserver", lines: int = 40) -> str:
        """Tail of ``etcd`` / ``kube-apiserver`` / ``kube-controller-manager`` log."""
        return _tail(self.log_dir / f"{component}.log", lines)


# --------------------------------------------------------------------------- fake kubelet


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubelet:
    """Pretend kubelet + scheduler for one Node, in a background thread.

    * registers Node ``node_name`` (Ready, no taints, given labels/capacity),
      re-registering it if deleted and refreshing the Ready heartbeat;
    * binds every pending Pod without ``spec.nodeName`` (default scheduler or
      ``schedulerName`` in ``scheduler_names``) to the node via a Binding;
    * marks Pods on the node Running/Ready (all containers running);
    * finishes graceful deletion of Pods on the node (deletes them with grace 0),
      as a real kubelet would — otherwise they hang in Terminating forever.

    Polls the API every ``poll_interval`` s, so it rides through apiserver restarts.
    """

    def __init__(
        self,
        kubeconfig: Union[str, Path],
        node_name: str = "fake-node-1",
        labels: Optional[Mapping[str, str]] = None,
        capacity: Optional[Mapping[str, str]] = None,
        poll_interval: float = 0.3,
        scheduler_names: Optional[Iterable[str]] = ("default-scheduler",),
        bind_pods: bool = True,
        runtime: Optional[LocalServeRuntime] = None,
        namespaces: Optional[Iterable[str]] = None,
    ):
        self.kubeconfig = str(kubeconfig)
        self.node_name = node_name
        self.labels = {"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": node_name}
        self.labels.update(labels or {})
        self.capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        self.capacity.update(capacity or {})
        self.poll_interval = poll_interval
        self.scheduler_names = set(scheduler_names) if scheduler_names is not None else None
        self.bind_pods = bind_pods
        # runtime: really run pods (local processes on loopback pod IPs); namespaces: only these
        # (claimed: kubelets without a namespace list leave them alone)
        self.runtime = runtime
        self.namespaces = set(namespaces) if namespaces is not None else None
        if self.namespaces:
            _CLAIMED_NAMESPACES.update(self.namespaces)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._api = None
        self._core = None
        self._node_ok = False
        self._last_heartbeat = 0.0
        self.errors: list[str] = []  # recent errors (bounded), for debugging
        self.bound: list[str] = []  # "ns/name" of pods bound so far

    def __enter__(self) -> FakeKubelet:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> FakeKubelet:
        from kubernetes import client

        if self._thread is not None:
            return self
        self._api = load_api_client(self.kubeconfig)
        self._core = client.CoreV1Api(self._api)
        self._stop.clear()
        self._ensure_node()  # fail fast on a wrong kubeconfig
        self._thread = threading.Thread(target=self._run, name=f"fake-kubelet-{self.node_name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, delete_node: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.runtime is not None:
            self.runtime.stop_all()
        if self.namespaces:
            _CLAIMED_NAMESPACES.difference_update(self.namespaces)
        if delete_node and self._core is not None:
            try:
                self._core.delete_node(self.node_name)
            except Exception:
                pass
        if self._api is not None:
            try:
                self._api.close()
            except Exception:
                pass
            self._api = None

    # ------------------------------------------------------------ loop
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # apiserver down/restarting etc.
                self._record(f"sync: {exc!r}")
                self._node_ok = False
            self._stop.wait(self.poll_interval)

    def _record(self, msg: str) -> None:
        log.debug("fake kubelet %s: %s", self.node_name, msg)
        self.errors.append(msg)
        del self.errors[:-50]

    def sync_once(self) -> None:
        """One reconcile pass (node + pods); exposed for deterministic tests."""
        if not self._node_ok or time.monotonic() - self._last_heartbeat > 10:
            self._ensure_node()
        resp = self._core.list_pod_for_all_namespaces(_preload_content=False, _request_timeout=10)
        pods = json.loads(resp.data)["items"]
        if self.namespaces is not None:
            pods = [p for p in pods if p["metadata"]["namespace"] in self.namespaces]
        else:
            pods = [p for p in pods if p["metadata"]["namespace"] not in _CLAIMED_NAMESPACES]
        if self.runtime is not None:  # processes of pods that are gone
            self.runtime.reap(
                {
                    p["metadata"]["uid"]
                    for p in pods
                    if p.get("spec", {}).get("nodeName") == self.node_name
                    and not p["metadata"].get("deletionTimestamp")
                }
            )
        for pod in pods:
            try:
                self._sync_pod(pod)
            except Exception as exc:
                from kubernetes.client.rest import ApiException

                if isinstance(exc, ApiException) and exc.status in (404, 409):
                    continue  # raced with deletion/another update; next pass fixes it
                raise

    # ------------------------------------------------------------ node
    def _node_status(self) -> dict[str, Any]:
        now = _now()

        def cond(t: str, status: str, reason: str, msg: str) -> dict[str, str]:
            return {
                "type": t,
                "status": status,
                "reason": reason,
                "message": msg,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }

        return {
            "capacity": dict(self.capacity),
            "allocatable": dict(self.capacity),
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "fake"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "fake"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "fake"),
                cond("Ready", "True", "KubeletReady", "fake kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "nodeInfo": {
                "machineID": "fake",
                "systemUUID": "fake",
                "bootID": "fake",
                "kernelVersion": "fake",
                "osImage": "fake",
                "containerRuntimeVersion": "fake://1.0",
                "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2",
                "operatingSystem": self.labels.get("kubernetes.io/os", "linux"),
                "architecture": self.labels.get("kubernetes.io/arch", "amd64"),
            },
        }

    def _ensure_node(self) -> None:
        from kubernetes.client.rest import ApiException

        status = self._node_status()
        try:
            self._core.read_node(self.node_name, _preload_content=False, _request_timeout=10)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": self.node_name, "labels": dict(self.labels)},
                "spec": {},
                "status": status,
            }
            self._core.create_node(body, _preload_content=False, _request_timeout=10)
        # TaintNodesByCondition admission adds node.kubernetes.io/not-ready on
        # create; clear all taints, keep labels in sync.
        self._core.patch_node(
            self.node_name,
            {"metadata": {"labels": dict(self.labels)}, "spec": {"taints": None, "unschedulable": None}},
            _preload_content=False,
            _request_timeout=10,
        )
        self._core.patch_node_status(self.node_name, {"status": status}, _preload_content=False, _request_timeout=10)
        self._node_ok = True
        self._last_heartbeat = time.monotonic()

    # ------------------------------------------------------------ pods
    def _sync_pod(self, pod: dict[str, Any]) -> None:
        meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
        ns, name = meta["namespace"], meta["name"]
        node = spec.get("nodeName")
        if meta.get("deletionTimestamp"):
            if node == self.node_name:
                if self.runtime is not None:  # the containers stop before the pod object goes
                    self.runtime.stop_pod(meta["uid"])
                self._core.delete_namespaced_pod(
                    name, ns, grace_period_seconds=0, _preload_content=False, _request_timeout=10
                )
            return
        if not node:
            if not self.bind_pods:
                return
            sched = spec.get("schedulerName", "default-scheduler")
            if self.scheduler_names is not None and sched not in self.scheduler_names:
                return
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
            }
            # (_preload_content=False: the python client can't deserialize the
            # Status the server returns into V1Binding.)
            self._core.create_namespaced_pod_binding(name, ns, binding, _preload_content=False, _request_timeout=10)
            self.bound.append(f"{ns}/{name}")
            return
        if node != self.node_name:
            return
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        if self.runtime is not None:
            self._sync_running_pod(pod)
            return
        if status.get("phase") == "Running" and any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
        ):
            return
        now = _now()
        cstat = []
        for c in spec.get("containers", []):
            cstat.append(
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "fake://" + c.get("image", ""),
                    "containerID": f"fake://{ns}-{name}-{c['name']}",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
            )
        new_status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "startTime": status.get("startTime") or now,
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": cstat,
        }
        self._core.patch_namespaced_pod_status(
            name, ns, {"status": new_status}, _preload_content=False, _request_timeout=10
        )


# --------------------------------------------------------------------------- local pod runtime

#: namespaces a FakeKubelet with an explicit namespace list owns (other kubelets skip their pods)
_CLAIMED_NAMESPACES: set = set()


def _fake_kubelet_sync_running_pod(self: FakeKubelet, pod: dict[str, Any]) -> None:
    """With a runtime: start the pod's process on its own loopback IP (pod IP), Ready once it answers."""
    meta, status = pod["metadata"], pod.get("status", {})
    ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
    rt = self.runtime
    assert rt is not None
    proc = rt.get(uid)
    if proc is None:
        proc = rt.start_pod(pod)
    ready = proc.ready()
    failed = proc.exited()
    was_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
    if status.get("podIP") == proc.ip and was_ready == ready and not failed:
        return
    now = _now()
    flag = "True" if ready else "False"
    cname = (pod.get("spec", {}).get("containers") or [{"name": "server"}])[0]["name"]
    state = (
        {"terminated": {"exitCode": proc.returncode or 1, "reason": "Error", "finishedAt": now}}
        if failed
        else {"running": {"startedAt": now}}
    )
    new_status = {
        "phase": "Failed" if failed else "Running",
        "hostIP": "127.0.0.1",
        "podIP": proc.ip,
        "podIPs": [{"ip": proc.ip}],
        "startTime": status.get("startTime") or now,
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
        ],
        "containerStatuses": [
            {
                "name": cname,
                "image": "local",
                "imageID": "local://synergai-serve",
                "containerID": f"local://{proc.pid}",
                "ready": ready,
                "started": not failed,
                "restartCount": 0,
                "state": state,
            }
        ],
    }
    self._core.patch_namespaced_pod_status(
        name, ns, {"status": new_status}, _preload_content=False, _request_timeout=10
    )


FakeKubelet._sync_running_pod = _fake_kubelet_sync_running_pod  # type: ignore[attr-defined]


class LoopbackIPs:
    """Hands out distinct loopback addresses 127.0.<a>.<b> (a from ``first_octet``); never reuses one
    while the harness lives, so a stale connection can never reach a new pod."""

    def __init__(self, first_octet: int = 0):
        import random

        self._a = first_octet or random.randint(100, 250)
        self._b = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._b += 1
            if self._b > 254:
                self._a, self._b = (self._a % 250) + 1, 1
            return f"127.0.{self._a}.{self._b}"


class PodProcess:
    """One pod's process (``synergai serve``) on its loopback IP."""

    def __init__(self, uid: str, ip: str, port: int, argv: list[str], log_path: Path, ready_path: str):
        self.uid, self.ip, self.port, self.argv = uid, ip, port, argv
        self.log_path, self.ready_path = log_path, ready_path
        self._logf = open(log_path, "ab")
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
        self._ready = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.popen.poll()

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def ready(self) -> bool:
        """The kubelet's readiness probe: GET /v2/health/ready (0.5 s timeout)."""
        if self.exited():
            return False
        try:
            with urllib.request.urlopen(f"http://{self.ip}:{self.port}{self.ready_path}", timeout=0.5) as r:
                self._ready = r.status == 200
        except (urllib.error.URLError, OSError):
            self._ready = False
        return self._ready

    def stop(self, timeout: float = 5.0) -> None:
        _terminate(self.popen, timeout)
        try:
            self._logf.close()
        except Exception:
            pass

    def tail(self, lines: int = 20) -> str:
        return _tail(self.log_path, lines)


class LocalServeRuntime:
    """A container runtime for :class:`FakeKubelet` that runs every pod as a local
    ``synergai serve --plan PLAN --server GROUP`` (emulated service times from the plan's
    configurations) bound to a fresh loopback address, on the pod's container port ``http``.

    The server group comes from the pod's ``synergai.io/server-group`` annotation (else the dedicated
    group of its model/pool/config annotations). ``argv_for(pod, ip, port)`` overrides the command.
    """

    def __init__(
        self,
        plan_path: Union[str, Path],
        *,
        log_dir: Union[str, Path],
        ips: Optional[LoopbackIPs] = None,
        extra_args: Sequence[str] = (),
        ready_path: str = "/v2/health/ready",
        argv_for: Optional[Any] = None,
    ):
        import sys

        self.plan_path = str(plan_path)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.ips = ips or LoopbackIPs()
        self.extra_args = list(extra_args)
        self.ready_path = ready_path
        self.argv_for = argv_for
        self.python = sys.executable
        self.procs: dict[str, PodProcess] = {}
        self.history: list[tuple[str, str, str]] = []  # (pod name, group, ip) of every process started
        self._lock = threading.Lock()

    @staticmethod
    def group_of(pod: dict[str, Any]) -> str:
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        if ann.get("synergai.io/server-group"):
            return ann["synergai.io/server-group"]
        from synergai.models.plan import dedicated_name

        return dedicated_name(ann["synergai.io/model"], ann["synergai.io/pool-name"], ann["synergai.io/config-id"])

    @staticmethod
    def port_of(pod: dict[str, Any]) -> int:
        for c in (pod.get("spec") or {}).get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("name") == "http" or len(c.get("ports")) == 1:
                    return int(p["containerPort"])
        return 8080

    def get(self, uid: str) -> Optional[PodProcess]:
        return self.procs.get(uid)

    def start_pod(self, pod: dict[str, Any]) -> PodProcess:
        uid, name = pod["metadata"]["uid"], pod["metadata"]["name"]
        ip, port = self.ips.next(), self.port_of(pod)
        group = self.group_of(pod)
        if self.argv_for is not None:
            argv = list(self.argv_for(pod, ip, port))
        else:
            argv = [
                self.python,
                "-m",
                "synergai.executor.serving_cli",
                "serve",
                "--plan",
                self.plan_path,
                "--server",
                group,
                "--host",
                ip,
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--seed",
                str(len(self.history)),
                *self.extra_args,
            ]
        proc = PodProcess(uid, ip, port, argv, self.log_dir / f"{name}.log", self.ready_path)
        with self._lock:
            self.procs[uid] = proc
            self.history.append((name, group, ip))
        log.info("pod %s: started %s on %s:%d (pid %d)", name, group, ip, port, proc.pid)
        return proc

    def stop_pod(self, uid: str) -> None:
        with self._lock:
            proc = self.procs.pop(uid, None)
        if proc is not None:
            proc.stop()

    def reap(self, live_uids: set) -> None:
        """Stop the processes of pods that no longer exist on the node."""
        for uid in [u for u in list(self.procs) if u not in live_uids]:
            self.stop_pod(uid)

    def stop_all(self) -> None:
        for uid in list(self.procs):
            self.stop_pod(uid)

    def alive(self) -> list[PodProcess]:
        return [p for p in self.procs.values() if not p.exited()]
