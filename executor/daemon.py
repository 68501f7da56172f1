"""The executor daemon: keeps a namespace equal to the plan, and answers ``/v1/assign``.

Loop (one *step* = one reconcile)::

    read the plan source (file or ConfigMap)  -> plan (or: workload -> plan_offline over
                                                 --cluster or the Node-label inventory)
    build the objects                         -> executor.manifests
    apply + prune                             -> executor.apply (server-side apply, dry-run first)
    report                                    -> metrics, /readyz, status ConfigMap, log line

A step runs every ``interval`` seconds and, sooner, whenever a watch sees a managed
Deployment/Service change (someone scaled, edited or deleted one) or the plan ConfigMap
change. Watches resume from their resourceVersion; on ``410 Gone`` they list afresh.
Transient API errors (429, 5xx, connection refused while the API server restarts) are
retried with backoff inside the step; a failed step is retried with backoff.
Field-manager conflicts (409) are resolved by forcing (the plan is the source of truth)
and counted. SIGTERM (or the ``stop`` event) lets the current step finish, then exits 0.

HTTP (``httpkit``: aiohttp on an event loop in a background thread, so a slow client holds a
connection object, never a thread): ``/healthz``, ``/readyz``, ``/metrics``, ``/status`` and
``POST /v1/assign``. The bind address is ``host``/``port``. ``/v1/assign`` changes scheduler state
(every decision books time on a replica), so it needs ``Authorization: Bearer <token>`` with the
token from ``token_file`` (a mounted Secret, re-read when it changes; default
``$SYNERGAI_TOKEN_FILE``) or ``token``; with neither it answers 401 to everyone. Bodies are
limited (64 KiB), parsed with a nesting limit, and absurd numbers get 400.

Crash safety: object names are deterministic, apply is idempotent and prune is a label
selector minus the desired set, so a daemon killed at any point and restarted converges
to the plan with nothing duplicated and nothing orphaned.

Embedding::

    stop = threading.Event()
    cfg = DaemonConfig(plan_source="file:plan.json", host="127.0.0.1", port=0, token_file="/var/run/token")
    threading.Thread(target=run, args=(cfg, stop)).start()
    ...
    stop.set()
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from synergai.models import ClusterSpec, InputError, Plan, WorkloadSpec

from .apply import ApplyError, ApplyResult, Change, apply_objects
from .images import ImageMap
from .kube import KubeClient, KubeError, RetryPolicy, Stopped, default_namespace
from .manifests import LABEL_COMPONENT, LABEL_NAME, LABEL_PART_OF, MANAGED_SELECTOR, MANAGER, ManifestSet, build
from .source import ConfigMapSource, Source, SourceDoc, parse_document, parse_source

log = logging.getLogger("synergai.daemon")


@dataclass
class DaemonConfig:
    plan_source: str
    namespace: Optional[str] = None
    kubeconfig: Optional[str] = None
    context: Optional[str] = None
    interval: float = 30.0  # full resync period, s
    host: str = "0.0.0.0"
    port: int = 8080  # 0: pick a free port (see Daemon.http_port)
    prune: bool = True
    images: Optional[str] = None  # image map file (default: executor/images.yaml)
    cluster: Optional[str] = None  # ClusterSpec file: workload mode + pool check (default: Node labels)
    profiles: Optional[str] = None  # profile CSV for workload mode (default: embedded)
    force_conflicts: bool = True
    write_interval: float = 0.0  # pause between object writes, s (gentle on small API servers)
    status_configmap: Optional[str] = "synergai-status"
    field_manager: str = MANAGER
    watch: bool = True
    watch_timeout: int = 60
    debounce: float = 0.2
    max_backoff: float = 30.0
    plan_time_limit: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # HTTP hardening (executor.httpkit)
    token_file: Optional[str] = field(default_factory=lambda: os.environ.get("SYNERGAI_TOKEN_FILE") or None)
    token: Optional[str] = None  # inline token (embedding, tests); token_file wins when both are set
    max_body: int = 64 * 1024  # bytes of a /v1/assign body (413 beyond)
    header_timeout: float = 10.0  # s to send request line + headers
    body_timeout: float = 10.0  # s to send a body (408 beyond)
    max_inflight: int = 256  # /v1/assign requests in progress (503 beyond)


# ------------------------------------------------------------------------------- metrics


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.reconciles = Counter("synergai_reconciles_total", "Reconcile steps, by result.", ["result"], registry=r)
        self.errors = Counter("synergai_errors_total", "Errors, by kind.", ["kind"], registry=r)
        self.objects = Gauge(
            "synergai_objects_managed", "Objects the live plan manages, by kind.", ["kind"], registry=r
        )
        self.changes = Counter(
            "synergai_object_changes_total", "Objects created/updated/deleted.", ["action"], registry=r
        )
        self.apply_latency = Histogram(
            "synergai_apply_latency_seconds",
            "Latency of one object write.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "synergai_reconcile_seconds",
            "Duration of a reconcile step.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.conflicts = Counter("synergai_conflicts_total", "Field-manager conflicts resolved by forcing.", registry=r)
        self.retries = Counter(
            "synergai_api_retries_total", "API calls retried, by HTTP status (0: no answer).", ["status"], registry=r
        )
        self.watch_restarts = Counter(
            "synergai_watch_restarts_total",
            "Watch restarts, by resource and reason.",
            ["resource", "reason"],
            registry=r,
        )
        self.in_sync = Gauge("synergai_in_sync", "1 when the last reconcile succeeded.", registry=r)
        self.last_success = Gauge(
            "synergai_last_success_timestamp_seconds", "Time of the last good reconcile.", registry=r
        )
        self.plan_info = Gauge("synergai_plan_info", "The live plan.", ["plan_id"], registry=r)
        self.pools_unmatched = Gauge("synergai_pools_unmatched", "Plan pools no Ready node matches.", registry=r)
        self.assign_requests = Counter(
            "synergai_assign_requests_total", "/v1/assign requests, by HTTP code.", ["code"], registry=r
        )
        self.assign_seconds = Histogram(
            "synergai_assign_decision_seconds",
            "Online-stage decision time.",
            buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2),
            registry=r,
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# ------------------------------------------------------------------------------- watches


class Watcher(threading.Thread):
    """List+watch one resource; calls ``wake(reason)`` on relevant changes."""

    def __init__(
        self,
        daemon: Daemon,
        api_version: str,
        kind: str,
        namespace: str,
        *,
        label_selector: Optional[str] = None,
        field_selector: Optional[str] = None,
    ):
        super().__init__(name=f"watch-{kind.lower()}", daemon=True)
        self.d = daemon
        self.api_version, self.kind, self.namespace = api_version, kind, namespace
        self.label_selector, self.field_selector = label_selector, field_selector
        self.kube = daemon.kube
        self.seen: dict[str, tuple] = {}
        self.rv = ""
        self.started_watches = 0
        self._resp = None

    def close_stream(self) -> None:
        r = self._resp
        if r is not None:
            try:
                r.shutdown()
            except Exception:
                pass

    def _fingerprint(self, obj: dict) -> tuple:
        md = obj.get("metadata") or {}
        if self.kind == "Deployment":  # status updates keep the generation: ignore them
            return (
                md.get("generation"),
                json.dumps(md.get("labels"), sort_keys=True),
                json.dumps(md.get("annotations"), sort_keys=True),
                bool(md.get("deletionTimestamp")),
            )
        return (md.get("resourceVersion"),)

    def relist(self) -> None:
        items, rv = self.kube.list(
            self.api_version,
            self.kind,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        )
        fresh = {i["metadata"]["uid"]: self._fingerprint(i) for i in items}
        if self.seen and fresh != self.seen:
            self.d.wake(f"{self.kind} changed while not watching")
        self.seen, self.rv = fresh, rv

    def run(self) -> None:
        stop = self.d.stop
        failures = 0
        need_list = True
        while not stop.is_set():
            try:
                if need_list:
                    self.relist()
                    need_list = False
                self.started_watches += 1
                for ev in self.kube.watch(
                    self.api_version,
                    self.kind,
                    self.namespace,
                    self.rv,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    timeout_seconds=self.d.config.watch_timeout,
                    on_open=lambda r: setattr(self, "_resp", r),
                ):
                    failures = 0
                    obj = ev.get("object") or {}
                    md = obj.get("metadata") or {}
                    if md.get("resourceVersion"):
                        self.rv = md["resourceVersion"]
                    t = ev.get("type")
                    if t == "BOOKMARK":
                        continue
                    uid = md.get("uid", "")
                    if t == "DELETED":
                        self.seen.pop(uid, None)
                        self.d.wake(f"{self.kind}/{md.get('name')} deleted")
                        continue
                    fp = self._fingerprint(obj)
                    if self.seen.get(uid) != fp:
                        self.seen[uid] = fp
                        self.d.wake(f"{self.kind}/{md.get('name')} {t.lower()}")
                # server closed the watch (timeoutSeconds): resume from self.rv
            except Stopped:
                return
            except KubeError as e:
                if stop.is_set():
                    return
                if e.gone:
                    self.d.metrics.watch_restarts.labels(self.kind, "expired").inc()
                    log.info("watch %s: resourceVersion %s expired (410), listing afresh", self.kind, self.rv)
                    need_list = True
                    continue
                failures += 1
                reason = "forbidden" if e.forbidden else ("disconnected" if e.status == 0 else f"http{e.status}")
                self.d.metrics.watch_restarts.labels(self.kind, reason).inc()
                log.info("watch %s interrupted (%s); retrying", self.kind, e)
                # a dropped connection resumes from the last resourceVersion (a 410 then forces a
                # list); anything else lists afresh
                need_list = need_list or e.status != 0
                if stop.wait(min(self.d.config.max_backoff, 0.2 * 2 ** min(failures, 8))):
                    return
            except Exception as e:  # pragma: no cover - defensive
                failures += 1
                log.warning("watch %s failed: %r", self.kind, e)
                need_list = True
                if stop.wait(min(self.d.config.max_backoff, 0.2 * 2 ** min(failures, 8))):
                    return


# ------------------------------------------------------------------------------- HTTP


def _http_app(daemon: Daemon):
    """The daemon's aiohttp application (handlers run on the HTTP thread's event loop; the daemon's
    methods they call take its locks for microseconds)."""
    from aiohttp import web

    from .httpkit import TokenAuth, json_response, make_app, prometheus, read_body

    limits = daemon.http_limits()
    auth = TokenAuth(daemon.config.token_file, daemon.config.token)
    m = daemon.metrics

    def text(code: int, body: str):
        return web.Response(status=code, text=body, content_type="text/plain")

    async def healthz(request):
        ok, why = daemon.healthy()
        return text(200 if ok else 503, "ok\n" if ok else why + "\n")

    async def readyz(request):
        ok, why = daemon.ready()
        return text(200 if ok else 503, ("ok: " if ok else "") + why + "\n")

    async def metrics(request):
        return await prometheus(m.registry)

    async def status(request):
        return json_response(daemon.status())

    async def assign(request):
        denied = auth.check(request)
        if denied is not None:
            m.assign_requests.labels("401").inc()
            return denied
        try:
            raw = await read_body(request, limits)
        except web.HTTPException as e:
            m.assign_requests.labels(str(e.status)).inc()
            raise
        code, body = daemon.assign_http(raw)
        m.assign_requests.labels(str(code)).inc()
        return json_response(body, status=code)

    def on_error(code: int) -> None:  # refused by the HTTP limits (503 busy) or a bug (500)
        m.errors.labels(f"http{code}").inc()

    app = make_app(limits, on_error=on_error)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_post("/v1/assign", assign)
    return app


# ------------------------------------------------------------------------------- daemon


class Daemon:
    def __init__(
        self, config: DaemonConfig, *, kube: Optional[KubeClient] = None, stop: Optional[threading.Event] = None
    ):
        self.config = config
        self.stop = stop or threading.Event()
        self.metrics = Metrics()
        self.namespace = config.namespace or default_namespace(config.kubeconfig, config.context)
        self.source: Source = parse_source(config.plan_source, self.namespace)
        self.images = ImageMap.load(config.images) if config.images else ImageMap.default()
        self.cluster_spec = ClusterSpec.load(config.cluster) if config.cluster else None
        self._profiles = None
        if kube is None:
            kube = KubeClient.from_kubeconfig(
                config.kubeconfig,
                config.context,
                field_manager=config.field_manager,
                retry=config.retry,
                stop=self.stop,
            )
        else:
            kube = kube.with_stop(self.stop)
        kube.on_retry = lambda e: self.metrics.retries.labels(str(e.status)).inc()
        self.kube = kube
        self._wake = threading.Event()
        self._wake_reason = ""
        self._lock = threading.RLock()
        self._sched_lock = threading.Lock()
        # state
        self.plan: Optional[Plan] = None  # live plan: last one applied successfully
        self.manifests: Optional[ManifestSet] = None
        self.scheduler = None
        self._doc_digest: Optional[str] = None
        self._desired: Optional[tuple[Plan, ManifestSet]] = None
        self._planned_for: Optional[tuple] = None
        self.last_result: Optional[ApplyResult] = None
        self.last_error: str = ""
        self.in_sync = False
        self.steps = 0
        self.warnings: list[str] = []
        self._heartbeat = time.monotonic()
        self._started = False
        self._status_written: Optional[dict] = None
        self._nodes_forbidden = False
        self.http: Optional[Any] = None  # httpkit.ThreadedServer
        self.watchers: list[Watcher] = []
        self.step_listeners: list[Callable[[Daemon], None]] = []

    # ---------------------------------------------------------------- lifecycle
    @property
    def http_port(self) -> Optional[int]:
        return self.http.port if self.http else None

    def http_limits(self):
        from .httpkit import HttpLimits

        c = self.config
        return HttpLimits(
            max_body=c.max_body,
            header_timeout=c.header_timeout,
            body_timeout=c.body_timeout,
            max_inflight=c.max_inflight,
            max_connections=1024,
        )

    def start_http(self) -> None:
        if self.http is not None or self.config.port < 0:
            return
        from synergai.extras import require

        require("aiohttp", "kube", what="the daemon's HTTP server")
        from .httpkit import ThreadedServer

        c = self.config
        self.http = ThreadedServer(lambda: _http_app(self), c.host, c.port, self.http_limits()).start()
        auth = (
            "token file " + c.token_file
            if c.token_file
            else ("inline token" if c.token else "NO token: /v1/assign refuses everyone")
        )
        log.info(
            "serving /healthz /readyz /metrics /status and POST /v1/assign (bearer token: %s) on %s:%d",
            auth,
            c.host,
            self.http_port,
        )

    def start_watches(self) -> None:
        if not self.config.watch:
            return
        ns = self.namespace
        self.watchers = [
            Watcher(self, "apps/v1", "Deployment", ns, label_selector=MANAGED_SELECTOR),
            Watcher(self, "v1", "Service", ns, label_selector=MANAGED_SELECTOR),
            # server-group ConfigMaps (not the daemon's own status ConfigMap)
            Watcher(self, "v1", "ConfigMap", ns, label_selector=f"{MANAGED_SELECTOR},{LABEL_COMPONENT}=server-config"),
        ]
        if isinstance(self.source, ConfigMapSource):
            self.watchers.append(
                Watcher(
                    self, "v1", "ConfigMap", self.source.namespace, field_selector=f"metadata.name={self.source.name}"
                )
            )
        for w in self.watchers:
            w.start()

    def wake(self, reason: str = "") -> None:
        self._wake_reason = reason
        self._wake.set()

    def run(self) -> int:
        """Reconcile until ``self.stop`` is set; returns the exit code (0)."""
        self._started = True
        self.start_http()
        self.start_watches()
        log.info(
            "synergai daemon: source %s, namespace %s, interval %gs, prune %s",
            self.source,
            self.namespace,
            self.config.interval,
            "on" if self.config.prune else "off",
        )
        failures = 0
        try:
            while not self.stop.is_set():
                self._heartbeat = time.monotonic()
                ok = self.step()
                failures = 0 if ok else failures + 1
                wait = (
                    self.config.interval
                    if ok
                    else min(self.config.interval, self.config.max_backoff, 0.5 * 2 ** min(failures, 10))
                )
                if self._wait(wait):
                    break
        finally:
            self.shutdown()
        log.info("synergai daemon stopped")
        return 0

    def _wait(self, seconds: float) -> bool:
        """Sleep until the interval passes, a watch wakes us, or stop; True on stop."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._wake.wait(min(left, 1.0)):
                self._heartbeat = time.monotonic()
                if self.stop.wait(self.config.debounce):
                    return True
                self._wake.clear()
                log.debug("woken: %s", self._wake_reason)
                return False
            self._heartbeat = time.monotonic()
        return True

    def shutdown(self) -> None:
        self.stop.set()
        if self.http is not None:
            self.http.stop()
            self.http = None
        for w in self.watchers:
            w.close_stream()
        for w in self.watchers:
            w.join(timeout=2)
        self.kube.close()

    # ---------------------------------------------------------------- one step
    def step(self) -> bool:
        """One reconcile; True when the namespace now matches the plan."""
        t0 = time.monotonic()
        self.steps += 1
        try:
            plan, ms = self._desired_state()
            # writes are paced by an event that is never set: a stop lets the step finish
            result = apply_objects(
                self.kube,
                ms.dicts(),
                self.namespace,
                prune=self.config.prune,
                force_conflicts=self.config.force_conflicts,
                write_interval=self.config.write_interval,
                stop=threading.Event(),
                on_write=self._on_write,
            )
        except Stopped:
            return False
        except InputError as e:
            return self._failed("input", str(e), t0)
        except ApplyError as e:
            kind = "forbidden" if e.kube_error is not None and e.kube_error.forbidden else "apply"
            return self._failed(kind, str(e), t0)
        except KubeError as e:
            return self._failed("forbidden" if e.forbidden else "api", str(e), t0)
        except Exception as e:  # never let the loop die
            log.exception("reconcile failed")
            return self._failed("internal", f"{type(e).__name__}: {e}", t0)

        n_conf = sum(1 for ch in result.changes if ch.conflicts)
        if n_conf:
            self.metrics.conflicts.inc(n_conf)
            for ch in result.conflicts:
                log.warning("conflict on %s resolved by forcing: %s", ch.ref, ", ".join(ch.conflicts))
        with self._lock:
            plan_changed = self.plan is None or self.plan.plan_id != plan.plan_id or self.manifests is None
            if plan_changed:
                from synergai.planner import OnlineScheduler

                with self._sched_lock:
                    self.scheduler = OnlineScheduler(plan)
                if self.plan is not None:
                    self.metrics.plan_info.remove(self.plan.plan_id)
            self.plan, self.manifests = plan, ms
            self.last_result = result
            self.last_error = ""
            self.in_sync = True
        self.metrics.plan_info.labels(plan.plan_id).set(1)
        self.metrics.reconciles.labels("ok").inc()
        self.metrics.in_sync.set(1)
        self.metrics.last_success.set(time.time())
        kinds: dict[str, int] = {}
        for o in ms.objects:
            kinds[o.kind] = kinds.get(o.kind, 0) + 1
        for kind in ("Deployment", "Service", "ConfigMap"):
            self.metrics.objects.labels(kind).set(kinds.get(kind, 0))
        dt = time.monotonic() - t0
        self.metrics.reconcile_seconds.observe(dt)
        if result.changed or plan_changed:
            log.info("reconciled plan %s: %s (%.2fs)", plan.plan_id, result.summary(), dt)
            for line in result.lines(verbose=False):
                log.info("  %s", line)
        self._check_pools(ms, plan)
        self._write_status()
        self._notify()
        return True

    def _notify(self) -> None:
        for cb in list(self.step_listeners):
            try:
                cb(self)
            except Exception:  # pragma: no cover
                log.exception("step listener failed")

    def _failed(self, kind: str, message: str, t0: float) -> bool:
        self.metrics.errors.labels(kind).inc()
        self.metrics.reconciles.labels("error").inc()
        self.metrics.in_sync.set(0)
        self.metrics.reconcile_seconds.observe(time.monotonic() - t0)
        changed = message != self.last_error
        with self._lock:
            self.last_error = message
            self.in_sync = False
        (log.error if changed else log.debug)("reconcile failed (%s): %s", kind, message)
        self._write_status()
        self._notify()
        return False

    def _on_write(self, ch: Change, seconds: float) -> None:
        self.metrics.changes.labels(ch.action).inc()
        if ch.action != "deleted":
            self.metrics.apply_latency.observe(seconds)

    # ---------------------------------------------------------------- desired state
    def _desired_state(self) -> tuple[Plan, ManifestSet]:
        doc: SourceDoc = self.source.read(self.kube)
        if self._desired is not None and doc.digest == self._doc_digest and self._planned_for is None:
            return self._desired
        parsed = parse_document(doc)
        if isinstance(parsed, WorkloadSpec):
            cluster, inv_key = self._cluster_for_planning()
            key = (doc.digest, inv_key)
            if self._desired is not None and self._planned_for == key:
                return self._desired
            plan = self._plan_workload(parsed, cluster, doc.origin)
            self._planned_for = key
        else:
            plan = parsed
            self._planned_for = None
        if not plan.plan_id:
            plan = plan.model_copy(update={"plan_id": plan.compute_id()})
        ms = build(plan, self.images)
        self._desired, self._doc_digest = (plan, ms), doc.digest
        return plan, ms

    def _cluster_for_planning(self) -> tuple[ClusterSpec, str]:
        if self.cluster_spec is not None:
            return self.cluster_spec, "file"
        from .inventory import read_inventory

        inv = read_inventory(self.kube)
        if inv.cluster is None:
            raise InputError(
                "no ClusterSpec given and no Ready node carries the synergai.io/device label (see executor/README.md)",
                field="--cluster",
            )
        return inv.cluster, inv.cluster.model_dump_json()

    def _plan_workload(self, wl: WorkloadSpec, cluster: ClusterSpec, origin: str) -> Plan:
        from synergai.planner import plan_offline

        if self._profiles is None:
            if self.config.profiles:
                from synergai.models import ProfileTable

                self._profiles = ProfileTable.load(self.config.profiles)
            else:
                from synergai import profiling_data

                self._profiles = profiling_data.default_profiles()
        log.info("planning workload %s for %d pools", origin, len(cluster.pools))
        return plan_offline(self._profiles, cluster, wl, time_limit=self.config.plan_time_limit)

    def _check_pools(self, ms: ManifestSet, plan: Plan) -> None:
        """Warn about plan pools that no Ready node matches (needs read access to Nodes)."""
        if self._nodes_forbidden:
            return
        from .inventory import matching_nodes
        from .manifests import pool_node_selector

        try:
            nodes, _ = self.kube.list("v1", "Node")
        except KubeError as e:
            if e.forbidden:
                self._nodes_forbidden = True
                log.info("cannot list Nodes (%s): pool check disabled", e.message)
            return
        warnings = []
        for pool in sorted({w.pool for w in ms.workloads}):
            sel = pool_node_selector(plan.pool(pool))
            if not matching_nodes(sel, nodes):
                warnings.append(f"pool {pool}: no Ready node matches nodeSelector {sel}")
        if warnings != self.warnings:
            for w in warnings:
                log.warning("%s", w)
        self.warnings = warnings
        self.metrics.pools_unmatched.set(len(warnings))

    # ---------------------------------------------------------------- status
    def status(self) -> dict:
        with self._lock:
            r = self.last_result
            return {
                "planSource": str(self.source),
                "namespace": self.namespace,
                "planId": self.plan.plan_id if self.plan else None,
                "inSync": self.in_sync,
                "lastError": self.last_error,
                "objects": len(self.manifests.objects) if self.manifests else 0,
                "lastResult": r.counts() if r else None,
                "warnings": list(self.warnings),
                "steps": self.steps,
            }

    def _write_status(self) -> None:
        name = self.config.status_configmap
        if not name:
            return
        st = self.status()
        data = {
            "planId": st["planId"] or "",
            "planSource": st["planSource"],
            "inSync": str(st["inSync"]).lower(),
            "lastError": st["lastError"],
            "objects": str(st["objects"]),
            "warnings": "\n".join(st["warnings"]),
        }
        if data == self._status_written:
            return
        data["updated"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {LABEL_PART_OF: MANAGER, LABEL_COMPONENT: "daemon-status", LABEL_NAME: "synergai-daemon"},
            },
            "data": data,
        }
        try:
            self.kube.apply(cm, self.namespace, force=True)
            data.pop("updated")
            self._status_written = data
        except (KubeError, Stopped) as e:
            log.debug("cannot write status ConfigMap %s: %s", name, e)

    def healthy(self) -> tuple[bool, str]:
        if not self._started:
            return False, "not started"
        limit = max(3 * self.config.interval, 60.0) + self.config.plan_time_limit
        age = time.monotonic() - self._heartbeat
        if age > limit:
            return False, f"reconcile loop stuck for {age:.0f}s"
        return True, ""

    def ready(self) -> tuple[bool, str]:
        """Ready = a live plan to answer /v1/assign with (an API outage does not stop that);
        whether the namespace is in sync is in /status and the synergai_in_sync metric."""
        with self._lock:
            if self.plan is None:
                return False, f"no plan applied yet{': ' + self.last_error if self.last_error else ''}"
            return True, "in sync" if self.in_sync else f"out of sync: {self.last_error}"

    # ---------------------------------------------------------------- /v1/assign
    def assign(self, model: str, deadline_ms: Optional[float] = None, origin: Optional[str] = None) -> tuple[int, dict]:
        with self._lock:
            plan, ms, sched = self.plan, self.manifests, self.scheduler
        if plan is None or sched is None or ms is None:
            return 503, {"error": "no live plan yet"}
        model = model.strip().lower()
        with self._sched_lock:
            now = sched.clock()
            t = time.perf_counter()
            d = sched.assign(model, deadline_ms, now=now, origin=origin)
            dt = time.perf_counter() - t
        self.metrics.assign_seconds.observe(dt)
        if d.replica < 0 or d.group < 0:
            return 404, {
                "error": f"model {model!r} is not served by the live plan",
                "plan_id": plan.plan_id,
                "decision_time_us": round(dt * 1e6, 2),
            }
        g = sched.groups[d.group]
        w = ms.workload_for(g.model, g.pool, g.config_id)
        if w is None:  # fallback replica: the plan does not run this model anywhere
            return 404, {
                "error": f"model {model!r} has no Deployment in the live plan ({d.reason})",
                "plan_id": plan.plan_id,
                "decision_time_us": round(dt * 1e6, 2),
            }
        ns = self.namespace

        def svc(name: str) -> dict:
            return {
                "name": name,
                "namespace": ns,
                "port": 80,
                "host": f"{name}.{ns}.svc",
                "url": f"http://{name}.{ns}.svc:80",
            }

        return 200, {
            "model": g.model,
            "pool": g.pool,
            "tier": g.tier,
            "config_id": g.config_id,
            "replica": int(d.replica - g.first_replica),
            "deployment": w.name,
            "service": svc(w.service),
            "model_service": svc(ms.model_services[g.model]) if g.model in ms.model_services else None,
            "meets_deadline": bool(d.meets),
            "deadline_ms": deadline_ms if deadline_ms is not None else sched.deadline_ms.get(model),
            "estimated_latency_ms": round((d.finish_s - now) * 1000.0, 3),
            "lateness_ms": round(d.lateness_ms, 3),
            "reason": d.reason,
            "plan_id": plan.plan_id,
            "decision_time_us": round(dt * 1e6, 2),
        }

    def assign_http(self, raw: bytes) -> tuple[int, dict]:
        """One /v1/assign body -> (HTTP code, JSON body); never raises on client input (deep nesting,
        400-digit numbers, NaN: 400)."""
        from . import v2

        try:
            req = v2.loads(raw or b"{}", max_depth=4)
        except v2.V2Error as e:
            return 400, {
                "error": f'body must be a JSON object like {{"model": "resnet50", "deadline_ms": 50}} ({e.message})'
            }
        if not isinstance(req, dict):
            return 400, {"error": "body must be a JSON object"}
        model = req.get("model")
        if not isinstance(model, str) or not model.strip() or len(model) > 253:
            return 400, {"error": "`model` (string, at most 253 characters) is required"}
        dl = req.get("deadline_ms", req.get("deadline"))
        if dl is not None:
            if isinstance(dl, str):
                return 400, {"error": "`deadline_ms` must be a number > 0 (milliseconds)"}
            try:
                dl = v2.finite_number(dl, "`deadline_ms` (milliseconds)")
            except v2.V2Error as e:
                return 400, {"error": e.message}
        origin = req.get("origin")
        if origin is not None and origin not in ("edge", "cloud"):
            return 400, {"error": "`origin` must be edge or cloud"}
        return self.assign(model, dl, origin)


# ------------------------------------------------------------------------------- entry points


def run(
    config: DaemonConfig,
    stop: Optional[threading.Event] = None,
    *,
    kube: Optional[KubeClient] = None,
    ready: Optional[Callable[[Daemon], None]] = None,
) -> int:
    """Run the daemon until ``stop`` is set (kopf style); returns the exit code.

    ``ready`` is called with the :class:`Daemon` once its HTTP server listens (tests use it
    to learn the port). The HTTP server (aiohttp, its own thread and event loop) stops with the loop.
    """
    d = Daemon(config, kube=kube, stop=stop)
    if ready is not None:
        d.start_http()
        ready(d)
    return d.run()


def main(config: DaemonConfig) -> int:
    """Process entry: SIGTERM/SIGINT finish the current step and exit 0."""
    stop = threading.Event()

    def _stop(signum, frame):  # noqa: ARG001
        log.info("signal %d: finishing the current step, then exiting", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return run(config, stop)
