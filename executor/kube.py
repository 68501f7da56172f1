"""A thin, retrying REST layer over the official ``kubernetes`` client.

Objects travel as plain JSON dicts (no model deserialisation, so a 1.20 server and a newer
client never disagree about required fields). Server-side apply is a ``PATCH`` with
``Content-Type: application/apply-patch+yaml`` (JSON is YAML) and a ``fieldManager``.

Retries: 429 (honouring ``Retry-After``), 5xx (except apply schema errors, which a 1.20
server reports as 500 "failed to create typed patch object"), 408, and connection errors
(API server restarting) are retried with exponential backoff and jitter; the retry loop
gives up early when the ``stop`` event is set. 409 is *not* retried here: callers decide
(field-manager conflicts are resolved by :mod:`executor.apply`, stale deletes re-listed).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from synergai.models import InputError

log = logging.getLogger("synergai.kube")

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"

# (apiVersion, kind) -> (api prefix, plural, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments", True),
    ("apps/v1", "ReplicaSet"): ("/apis/apps/v1", "replicasets", True),
    ("v1", "Service"): ("/api/v1", "services", True),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps", True),
    ("v1", "Pod"): ("/api/v1", "pods", True),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts", True),
    ("v1", "Namespace"): ("/api/v1", "namespaces", False),
    ("v1", "Node"): ("/api/v1", "nodes", False),
    ("rbac.authorization.k8s.io/v1", "Role"): ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1",
        "clusterrolebindings",
        False,
    ),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    # what the gateway discovers servers from (read-only): EndpointSlices (discovery.k8s.io/v1 from
    # Kubernetes 1.21, v1beta1 on 1.20), else Endpoints
    ("v1", "Endpoints"): ("/api/v1", "endpoints", True),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    ("discovery.k8s.io/v1beta1", "EndpointSlice"): ("/apis/discovery.k8s.io/v1beta1", "endpointslices", True),
}
#: kind -> (apiVersion, kind); a kind served under several versions maps to the first listed (the newest)
KINDS: dict[str, tuple[str, str]] = {}
for _api, _kind in RESOURCES:
    KINDS.setdefault(_kind, (_api, _kind))


class KubeError(Exception):
    """An API call failed. ``status`` is the HTTP status (0: no response)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: str = "",
        body: Optional[dict] = None,
        retry_after: Optional[float] = None,
        verb: str = "",
        what: str = "",
    ):
        self.status = status
        self.reason = reason
        self.body = body or {}
        self.retry_after = retry_after
        self.verb = verb
        self.what = what
        self.message = " ".join(str(message).split())
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.verb} {self.what}: " if self.verb or self.what else ""
        code = f"HTTP {self.status}" if self.status else "no response"
        return f"{where}{code}{' ' + self.reason if self.reason else ''}: {self.message}"

    @property
    def retryable(self) -> bool:
        if self.status == 0 or self.status in (408, 429, 502, 503, 504):
            return True
        if self.status >= 500:
            # a 1.20 server reports apply schema errors as 500; retrying cannot help
            return "failed to create typed patch object" not in self.message
        return False

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def forbidden(self) -> bool:
        return self.status in (401, 403)

    def conflict_fields(self) -> list[str]:
        """For an apply conflict: ``'<field> (owned by <manager>)'`` per conflicting field."""
        out = []
        for c in (self.body.get("details") or {}).get("causes") or []:
            if c.get("reason") == "FieldManagerConflict":
                out.append(f"{c.get('field', '?')} ({c.get('message', '')})")
        return out


class Stopped(Exception):
    """The stop event was set while waiting to retry."""


@dataclass
class RetryPolicy:
    attempts: int = 6  # total tries per call
    base: float = 0.2  # first backoff, s
    cap: float = 5.0  # max backoff, s
    jitter: float = 0.3  # +- fraction

    def delay(self, attempt: int, retry_after: Optional[float] = None) -> float:
        d = min(self.cap, self.base * (2**attempt))
        d *= 1 + random.uniform(-self.jitter, self.jitter)
        if retry_after is not None:
            d = max(d, min(retry_after, 30.0))
        return max(0.0, d)


def _configuration(kubeconfig: Optional[str] = None, context: Optional[str] = None):
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig:
        if not Path(kubeconfig).exists():
            raise InputError("file not found", file=str(kubeconfig), field="--kubeconfig")
        try:
            config.load_kube_config(config_file=str(kubeconfig), context=context, client_configuration=cfg)
        except Exception as e:
            raise InputError(f"cannot load kubeconfig: {e}", file=str(kubeconfig), field="--kubeconfig") from None
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except Exception:
            try:
                config.load_kube_config(context=context, client_configuration=cfg)
            except Exception as e:
                raise InputError(
                    f"no in-cluster configuration and no usable kubeconfig ({e}); pass --kubeconfig",
                    field="--kubeconfig",
                ) from None
    cfg.client_side_validation = False
    cfg.retries = False  # our own retry loop, with backoff
    if not cfg.verify_ssl:
        try:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        except Exception:  # pragma: no cover
            pass
    return cfg


def default_namespace(kubeconfig: Optional[str] = None, context: Optional[str] = None) -> str:
    """In-cluster: the pod's namespace; else the kubeconfig context's namespace; else ``default``."""
    sa_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if not kubeconfig and sa_ns.exists():
        return sa_ns.read_text().strip() or "default"
    try:
        from kubernetes import config

        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        if context:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
            active = next((c for c in contexts if c.get("name") == context), active)
        ns = (active or {}).get("context", {}).get("namespace")
        return ns or "default"
    except Exception:
        return "default"


class KubeClient:
    """JSON-in, JSON-out access to the resources in :data:`RESOURCES`.

    Thread-safe: every thread gets its own ``ApiClient`` (connection pool).
    """

    def __init__(
        self,
        configuration,
        *,
        field_manager: str = "synergai",
        retry: Optional[RetryPolicy] = None,
        stop: Optional[threading.Event] = None,
        timeout: float = 30.0,
        on_retry: Optional[Callable[[KubeError], None]] = None,
    ):
        self.configuration = configuration
        self.field_manager = field_manager
        self.retry = retry or RetryPolicy()
        self.stop = stop or threading.Event()
        self.timeout = timeout
        self.on_retry = on_retry
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Optional[str] = None, context: Optional[str] = None, **kw) -> KubeClient:
        return cls(_configuration(kubeconfig, context), **kw)

    def with_stop(self, stop: threading.Event) -> KubeClient:
        return KubeClient(
            self.configuration,
            field_manager=self.field_manager,
            retry=self.retry,
            stop=stop,
            timeout=self.timeout,
            on_retry=self.on_retry,
        )

    @property
    def api(self):
        c = getattr(self._local, "api", None)
        if c is None:
            from kubernetes import client

            c = client.ApiClient(self.configuration)
            self._local.api = c
            with self._lock:
                self._clients.append(c)
        return c

    def close(self) -> None:
        with self._lock:
            for c in self._clients:
                try:
                    c.close()
                except Exception:
                    pass
            self._clients.clear()
        self._local = threading.local()

    # ------------------------------------------------------------------ raw
    def _raw(
        self,
        method: str,
        path: str,
        query: Optional[list] = None,
        body: Any = None,
        content_type: Optional[str] = None,
        timeout: Any = None,
        stream: bool = False,
    ):
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"
        api = self.api
        m, url, h, b, pp = api.param_serialize(
            method,
            path,
            query_params=list(query or []),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        what = path
        try:
            r = api.call_api(m, url, h, b, pp, _request_timeout=timeout or (5, self.timeout))
        except Exception as e:  # urllib3 connection/read errors: API server down or restarting
            raise KubeError(0, f"{type(e).__name__}: {e}", verb=method, what=what) from None
        if stream and 200 <= r.status <= 299:
            return r.response
        try:
            data = r.read()
        except Exception as e:
            raise KubeError(0, f"{type(e).__name__}: {e}", verb=method, what=what) from None
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {"message": data[:300].decode("utf-8", "replace")}
        if not 200 <= r.status <= 299:
            ra = r.headers.get("Retry-After") if r.headers else None
            try:
                ra = float(ra) if ra is not None else None
            except ValueError:
                ra = None
            raise KubeError(
                r.status,
                doc.get("message") or r.reason or "",
                reason=doc.get("reason", ""),
                body=doc,
                retry_after=ra,
                verb=method,
                what=what,
            )
        return doc

    def request(
        self,
        method: str,
        path: str,
        query: Optional[list] = None,
        body: Any = None,
        content_type: Optional[str] = None,
        timeout: Any = None,
    ) -> dict:
        """One API call with retries on transient errors (see module docstring)."""
        attempt = 0
        while True:
            try:
                return self._raw(method, path, query, body, content_type, timeout)
            except KubeError as e:
                if not e.retryable or attempt + 1 >= self.retry.attempts:
                    raise
                if self.on_retry:
                    try:
                        self.on_retry(e)
                    except Exception:  # pragma: no cover
                        pass
                d = self.retry.delay(attempt, e.retry_after)
                log.info("retrying in %.2fs after %s", d, e)
                if self.stop.wait(d):
                    raise Stopped() from e
                attempt += 1

    # ------------------------------------------------------------------ paths
    @staticmethod
    def path(api_version: str, kind: str, namespace: Optional[str] = None, name: Optional[str] = None) -> str:
        try:
            prefix, plural, namespaced = RESOURCES[(api_version, kind)]
        except KeyError:
            raise ValueError(f"unsupported kind {api_version}/{kind}") from None
        p = prefix
        if namespaced:
            if not namespace:
                raise ValueError(f"{kind} needs a namespace")
            p += f"/namespaces/{namespace}"
        p += f"/{plural}"
        if name:
            p += f"/{name}"
        return p

    # ------------------------------------------------------------------ verbs
    def get(self, api_version: str, kind: str, name: str, namespace: Optional[str] = None) -> Optional[dict]:
        try:
            return self.request("GET", self.path(api_version, kind, namespace, name))
        except KubeError as e:
            if e.not_found:
                return None
            raise

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: Optional[str] = None,
        *,
        label_selector: Optional[str] = None,
        field_selector: Optional[str] = None,
    ) -> tuple[list[dict], str]:
        """All items (paged) and the list's resourceVersion."""
        items: list[dict] = []
        cont = None
        while True:
            q = [("limit", 500)]
            if label_selector:
                q.append(("labelSelector", label_selector))
            if field_selector:
                q.append(("fieldSelector", field_selector))
            if cont:
                q.append(("continue", cont))
            doc = self.request("GET", self.path(api_version, kind, namespace), q)
            items.extend(doc.get("items") or [])
            meta = doc.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                return items, meta.get("resourceVersion", "")

    def apply(
        self,
        obj: dict,
        namespace: Optional[str] = None,
        *,
        force: bool = True,
        dry_run: bool = False,
        field_manager: Optional[str] = None,
    ) -> dict:
        """Server-side apply ``obj``; returns the object as the server has (or would have) it."""
        api_version, kind, name = obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
        q = [("fieldManager", field_manager or self.field_manager)]
        if force:
            q.append(("force", "true"))
        if dry_run:
            q.append(("dryRun", "All"))
        return self.request(
            "PATCH", self.path(api_version, kind, namespace, name), q, body=obj, content_type=APPLY_CONTENT_TYPE
        )

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: Optional[str] = None,
        *,
        uid: Optional[str] = None,
        dry_run: bool = False,
        propagation: str = "Background",
    ) -> bool:
        """Delete; False if it was already gone. ``uid`` guards against deleting a re-created object."""
        body: dict = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        if uid:
            body["preconditions"] = {"uid": uid}
        if dry_run:
            # with a body, the API server takes the options from it and ignores the query string
            body["dryRun"] = ["All"]
        try:
            self.request("DELETE", self.path(api_version, kind, namespace, name), [], body=body)
            return True
        except KubeError as e:
            if e.not_found:
                return False
            raise

    def create(self, obj: dict, namespace: Optional[str] = None) -> dict:
        return self.request("POST", self.path(obj["apiVersion"], obj["kind"], namespace), body=obj)

    def watch(
        self,
        api_version: str,
        kind: str,
        namespace: Optional[str],
        resource_version: str,
        *,
        label_selector: Optional[str] = None,
        field_selector: Optional[str] = None,
        timeout_seconds: int = 60,
        on_open: Optional[Callable[[Any], None]] = None,
    ) -> Iterator[dict]:
        """Watch events (``{"type", "object"}``) from ``resource_version``.

        Raises :class:`KubeError` with status 410 when the version is too old (the caller
        re-lists), and status 0 when the connection drops. Ends normally when the server
        closes the watch after ``timeout_seconds``.
        """
        q = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", int(timeout_seconds)),
        ]
        if label_selector:
            q.append(("labelSelector", label_selector))
        if field_selector:
            q.append(("fieldSelector", field_selector))
        resp = self._raw(
            "GET", self.path(api_version, kind, namespace), q, timeout=(5, timeout_seconds + 15), stream=True
        )
        if on_open is not None:
            on_open(resp)  # lets another thread shut the stream down
        buf = b""
        try:
            for chunk in resp.stream(16 * 1024, decode_content=True):
                if self.stop.is_set():
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    if ev.get("type") == "ERROR":
                        st = ev.get("object") or {}
                        raise KubeError(
                            int(st.get("code") or 500),
                            st.get("message", "watch error"),
                            reason=st.get("reason", ""),
                            body=st,
                            verb="WATCH",
                            what=kind,
                        )
                    yield ev
        except KubeError:
            raise
        except Exception as e:
            if self.stop.is_set():
                return
            raise KubeError(0, f"watch stream broke: {type(e).__name__}: {e}", verb="WATCH", what=kind) from None
        finally:
            try:
                resp.release_conn()
            except Exception:
                pass


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
