"""``synergai gateway``: the request path. Runs the online stage on every real V2 request.

Per ``POST /v2/models/{m}[/versions/{v}]/infer``:

1. deadline: header ``X-Deadline-Ms``, else V2 ``parameters.deadline_ms``, else the plan's deadline
   for the model (the body is parsed only when the header is absent);
2. routing (``--routing``): ``synergai`` = ``OnlineScheduler.assign`` over the live servers (each
   scheduler replica is one concrete server URL of the group), ``lor`` = least outstanding requests,
   ``rr`` = round robin, all over the servers hosting the model;
3. forward the body unchanged with a pooled keep-alive client (to ``/v2/models/<name>/...``, ``<name>``
   being what the chosen group serves the model under: on Triton-served groups
   ``manifests.triton_model_name(model)``, which differs from the model only when that is not a safe
   folder name; the answer's ``model_name`` is then that name); on an answer, ``complete()`` with the
   measured times (finish = answer received, start = finish - the server's reported compute time) so
   queue estimates and drift recalibration follow real completions;
4. a server that fails before answering (refused, reset, died mid-request) is ejected and the request
   is retried once on another server if its deadline has not passed; else 502 (504 on timeout) with a
   JSON error. Every request is answered.
5. ``--overload shed``: a request that the online stage says meets its deadline nowhere gets 503 with
   ``Retry-After`` at once.

Response headers: ``X-Synergai-Pool``, ``X-Synergai-Server`` (group), ``X-Synergai-Endpoint`` (URL),
``X-Synergai-Meets-Deadline``, ``X-Synergai-Estimated-Ms``, ``X-Synergai-Routing``, ``X-Synergai-Retries``,
``X-Synergai-Gateway-Ms`` (time spent in the gateway outside the upstream call), plus the server's own
``X-Synergai-Server-Ms`` etc.

Endpoints (server group -> URLs): ``--endpoints FILE`` (YAML/JSON, reloaded on change), repeated
``--endpoint GROUP=URL``, or ``--kube-namespace NS``: a watch on the EndpointSlices (else Endpoints)
of the plan's Services: ready pods join, pods that stop being ready or go away leave.
The plan (``--plan file:PATH | configmap:NS/NAME``) hot-reloads: a new router is built aside and swapped
in one assignment; requests in flight finish on the router they started with.

Several gateway replicas behind one Service each run their own scheduler; their queue estimates stay
consistent through the servers: every answer carries the server's queue depth
(``X-Synergai-Queue-Depth``, requests in it not yet answered), and a replica whose reported depth
exceeds this gateway's own in-flight requests to it has its free time pushed back by the difference
times its per-request occupancy.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from aiohttp import web

from synergai.models import InputError, Plan

from . import v2
from .httpkit import (
    HttpLimits,
    LabelChildren,
    TokenAuth,
    UpstreamError,
    UpstreamPool,
    add_v2_routes,
    json_error,
    json_response,
    make_app,
    prometheus,
    read_body,
    run_main,
)
from .manifests import runtime_model_name, server_runtime
from .serve import group_assignments

log = logging.getLogger("synergai.gateway")

POLICIES = ("synergai", "lor", "rr")
OVERLOADS = ("sacrifice", "least-lateness", "shed")
FORWARD_HEADERS = ("Content-Type", v2.HEADER_LENGTH, "Content-Encoding", "Accept-Encoding", v2.DEADLINE_HEADER)
PASS_BACK = (
    "Content-Encoding",  # the body is passed back as it came
    "X-Synergai-Server-Ms",
    "X-Synergai-Compute-Ms",
    "X-Synergai-Batch",
    "X-Synergai-Queue-Depth",
    v2.HEADER_LENGTH,
)


# ------------------------------------------------------------------------------------------ discovery

#: what --kube-namespace discovery reads, in order of preference (the first the API server serves)
DISCOVERY_KINDS = (
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("discovery.k8s.io/v1beta1", "EndpointSlice"),
    ("v1", "Endpoints"),
)
SLICE_SERVICE_LABEL = "kubernetes.io/service-name"


def endpoint_urls(kind: str, obj: dict) -> tuple[str, list[str]]:
    """(Service name, ready server URLs) of one Endpoints or EndpointSlice object (port named ``http``,
    else the first; EndpointSlice endpoints whose ``ready`` condition is false or ``terminating`` is
    true are left out)."""
    md = obj.get("metadata") or {}
    out: list[str] = []
    if kind == "Endpoints":
        for ss in obj.get("subsets") or []:
            ports = ss.get("ports") or []
            port = next((p["port"] for p in ports if p.get("name") == "http"), ports[0]["port"] if ports else 80)
            for a in ss.get("addresses") or []:  # notReadyAddresses are not served
                out.append(f"http://{_host(a['ip'])}:{port}")
        return md.get("name", ""), out
    ports = obj.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("name") == "http"), ports[0].get("port") if ports else None)
    if port is None:
        return (md.get("labels") or {}).get(SLICE_SERVICE_LABEL, ""), []
    for ep in obj.get("endpoints") or []:
        cond = ep.get("conditions") or {}
        if cond.get("ready") is False or cond.get("terminating") is True:
            continue
        for ip in ep.get("addresses") or []:
            out.append(f"http://{_host(ip)}:{port}")
    return (md.get("labels") or {}).get(SLICE_SERVICE_LABEL, ""), out


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


@dataclass
class Target:
    url: str
    group: str
    pool: str


@dataclass
class Pick:
    target: Target
    meets: Optional[bool] = None
    estimated_ms: Optional[float] = None
    decision: Any = None  # the OnlineScheduler Decision (synergai routing)
    reason: str = ""


class Router:
    """Routing state for one (plan, live endpoints) pair. Built aside and swapped in atomically.

    The thin adapter over :class:`planner.OnlineScheduler`: the scheduler is built on a copy of the plan
    whose server groups have as many replicas as the group has live URLs (sorted), so the decision's
    server (``sched.servers[d.replica] = (group, index)``) names a concrete URL; a group without a live
    server gets no traffic.
    """

    def __init__(
        self,
        plan: Plan,
        endpoints: dict[str, list[str]],
        *,
        overload: str = "sacrifice",
        previous: Optional[Router] = None,
    ):
        from synergai.planner import OnlineScheduler

        self.plan = plan
        self.groups = group_assignments(plan)
        self.endpoints = {g: sorted(set(endpoints.get(g, []))) for g in self.groups}
        self.pools = {p.name: p for p in plan.pools}
        self.deadline_ms = {d.model: d.deadline_ms for d in plan.demands}
        self.targets: dict[str, list[Target]] = {}  # model -> every live server hosting it (rr / lor)
        # (group, model) -> the name the group's servers serve the model under, where it is not the model's:
        # Triton's directory name (manifests.runtime_model_name: the same rule as server.json's runtime_name)
        self.upstream_names: dict[tuple[str, str], str] = {}
        srv_pool = {s.name: s.pool for s in plan.server_groups()}
        for grp, assigns in self.groups.items():
            if assigns:
                runtime = server_runtime(assigns)
                for a in assigns:
                    up = runtime_model_name(a.model, runtime)
                    if up != a.model:
                        self.upstream_names[(grp, a.model)] = up
            for a in assigns:
                if a.replicas > 0:
                    for u in self.endpoints[grp]:
                        self.targets.setdefault(a.model, []).append(Target(u, grp, srv_pool[grp]))
        n = {g: len(u) for g, u in self.endpoints.items()}
        if plan.servers:
            live = plan.model_copy(
                update={"servers": [s.model_copy(update={"replicas": n.get(s.name, 0)}) for s in plan.servers]}
            )
        else:
            from synergai.models.plan import dedicated_name

            live = plan.model_copy(
                update={
                    "assignments": [
                        a.model_copy(
                            update={
                                "replicas": n.get(dedicated_name(a.model, a.pool, a.config.config_id), 0)
                                if a.replicas > 0
                                else 0
                            }
                        )
                        for a in plan.assignments
                    ]
                }
            )
        self.sched = OnlineScheduler(live, overload=overload)
        self.models = set(self.targets)
        self._rr: dict[str, Any] = {m: itertools.cycle(range(len(t))) for m, t in self.targets.items()}
        if previous is not None:
            self._carry(previous)

    def upstream_path(self, request: web.Request, group: str, suffix: str) -> str:
        """The path (percent-encoded) to ask a server of ``group`` for the request's model (``suffix``:
        ``/infer`` or ``""``): the request's own path unless the group serves the model under another
        name (Triton)."""
        up = self.upstream_names.get((group, request.match_info["model"])) if self.upstream_names else None
        if up is None:
            return request.rel_url.raw_path
        ver = request.match_info.get("version")
        return f"/v2/models/{quote(up, safe='')}" + (f"/versions/{quote(ver, safe='')}" if ver else "") + suffix

    def url_of(self, replica: int) -> Optional[str]:
        grp, i = self.sched.servers[replica]
        urls = self.endpoints.get(grp)
        return urls[i] if urls and i < len(urls) else None

    def _carry(self, old: Router) -> None:
        """Keep the queue estimate of every server that is in both routers."""
        free = {}
        for s, (grp, i) in enumerate(old.sched.servers):
            u = old.url_of(s)
            if u is not None:
                free[(grp, u)] = old.sched.free[s]
        for s, (grp, i) in enumerate(self.sched.servers):
            f = free.get((grp, self.url_of(s)))
            if f is not None and f != self.sched.free[s]:
                self.sched.observe(s, self.sched.free[s], f)

    # ------------------------------------------------------------ policies
    def pick(
        self,
        policy: str,
        model: str,
        deadline_ms: Optional[float],
        now: float,
        origin: Optional[str],
        inflight: dict[str, int],
        exclude: frozenset = frozenset(),
    ) -> Optional[Pick]:
        """A server for one request; None when no live server hosts the model; a Pick with
        ``meets=False`` and no target URL when the online stage sheds it."""
        targets = self.targets.get(model)
        if not targets:
            return None
        if policy == "synergai" and not exclude:
            d = self.sched.assign(model, deadline_ms, now=now, origin=origin)
            if d.shed:
                return Pick(Target("", "", ""), False, None, d, d.reason)
            url = self.url_of(d.replica) if d.replica >= 0 else None
            if url is None:
                return None
            return Pick(Target(url, d.server, d.pool), bool(d.meets), (d.finish_s - now) * 1000.0, d, d.reason)
        cands = [t for t in targets if t.url not in exclude]
        if not cands:
            return None
        if policy == "rr" and not exclude:
            return Pick(targets[next(self._rr[model]) % len(targets)], reason="round robin")
        return Pick(min(cands, key=lambda t: inflight.get(t.url, 0)), reason="least outstanding requests")

    def cancel(self, pick: Pick) -> None:
        """Undo a decision whose request was never served (the server failed)."""
        d = pick.decision
        if d is not None and d.replica >= 0:
            self.sched.complete(d, d.start_s)

    def complete(
        self, pick: Pick, end_s: float, start_s: Optional[float], server_depth: Optional[int], own_inflight: int
    ) -> None:
        d = pick.decision
        if d is None or d.replica < 0:
            return
        self.sched.complete(d, end_s, start_s)
        if server_depth is not None and server_depth > own_inflight:
            # other gateways queued work on this server: push its free time back by that much
            g = self.sched.groups[d.group]
            s = d.replica
            behind = end_s + (server_depth - own_inflight) * g.work_s
            if behind > self.sched.free[s]:
                self.sched.observe(s, self.sched.free[s], behind)


# ------------------------------------------------------------------------------------------ metrics


class GatewayMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "synergai_gateway_requests_total",
            "Inference requests, by model, pool and code.",
            ["model", "pool", "code"],
            registry=r,
        )
        self.violations = Counter(
            "synergai_gateway_deadline_violations_total",
            "Answered after their deadline, by model and pool.",
            ["model", "pool"],
            registry=r,
        )
        self.latency = Histogram(
            "synergai_gateway_latency_seconds",
            "Response time seen by the gateway.",
            ["model", "pool"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5),
        )
        self.decision = Histogram(
            "synergai_gateway_decision_seconds",
            "Routing decision time.",
            registry=r,
            buckets=(5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3),
        )
        self.overhead = Histogram(
            "synergai_gateway_overhead_seconds",
            "Time in the gateway outside the upstream call.",
            registry=r,
            buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2),
        )
        self.retries = Counter(
            "synergai_gateway_retries_total", "Requests retried on another server.", ["model"], registry=r
        )
        self.sheds = Counter(
            "synergai_gateway_shed_total", "Requests shed (503) by the overload rule.", ["model"], registry=r
        )
        self.upstream_errors = Counter(
            "synergai_gateway_upstream_errors_total", "Failed upstream calls, by kind.", ["kind"], registry=r
        )
        self.endpoints = Gauge("synergai_gateway_endpoints", "Live servers, by server group.", ["group"], registry=r)
        self.reloads = Counter(
            "synergai_gateway_plan_reloads_total", "Plan reloads, by result.", ["result"], registry=r
        )
        self.plan_info = Gauge("synergai_gateway_plan_info", "The live plan.", ["plan_id"], registry=r)
        self.http_rejects = Counter(
            "synergai_gateway_http_rejects_total", "Requests refused by HTTP limits.", ["code"], registry=r
        )
        self.child = LabelChildren()  # the hot path's label children, bound once

    def count(self, model: str, pool: str, code: int | str) -> None:
        self.child(self.requests, model, pool, str(code)).inc()


# ------------------------------------------------------------------------------------------ gateway


@dataclass
class GatewayConfig:
    plan: str  # file:PATH | configmap:NS/NAME | PATH
    host: str = "127.0.0.1"
    port: int = 8000
    routing: str = "synergai"
    overload: str = "sacrifice"
    endpoints_file: Optional[str] = None
    endpoints: dict[str, list[str]] = field(default_factory=dict)
    kube_namespace: Optional[str] = None  # discover endpoints from the plan's Services
    kubeconfig: Optional[str] = None
    kube_discovery: str = "auto"  # auto (EndpointSlices, else Endpoints) | endpointslices | endpoints
    token_file: Optional[str] = None
    auth_inference: bool = False
    reload_interval: float = 1.0
    upstream_timeout: float = 30.0
    connect_timeout: float = 1.0
    eject_seconds: float = 5.0
    max_connections_upstream: int = 512
    limits: HttpLimits = field(default_factory=HttpLimits)


class Gateway:
    def __init__(self, config: GatewayConfig):
        if config.routing not in POLICIES:
            raise InputError(f"--routing must be one of {', '.join(POLICIES)}", field="--routing")
        if config.overload not in OVERLOADS:
            raise InputError(f"--overload must be one of {', '.join(OVERLOADS)}", field="--overload")
        if config.kube_discovery not in ("auto", "endpointslices", "endpoints"):
            raise InputError("--kube-discovery must be auto, endpointslices or endpoints", field="--kube-discovery")
        self.config = config
        self.policy = config.routing
        self.metrics = GatewayMetrics()
        self.auth = TokenAuth(config.token_file)
        self.router: Optional[Router] = None
        self.plan: Optional[Plan] = None
        self.plan_digest: Optional[str] = None
        self.plan_error = ""
        self.static_endpoints = {g: list(u) for g, u in config.endpoints.items()}
        self.file_endpoints: dict[str, list[str]] = {}
        self.kube_endpoints: dict[str, list[str]] = {}  # Service name -> URLs
        self.ejected: dict[str, float] = {}
        self.inflight: dict[str, int] = {}
        self.upstream: Optional[UpstreamPool] = None
        self._ep_mtime: Optional[float] = None
        self._tasks: list[asyncio.Task] = []
        self._kube = None
        self._kube_stop = threading.Event()
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.served = 0
        from .source import parse_source

        spec = config.plan if ":" in config.plan.split("/")[0] else f"file:{config.plan}"
        self.source = parse_source(spec, config.kube_namespace)

    # ---------------------------------------------------------------- endpoints / plan
    def live_endpoints(self) -> dict[str, list[str]]:
        now = time.monotonic()
        out: dict[str, list[str]] = {}
        for src in (self.static_endpoints, self.file_endpoints):
            for g, urls in src.items():
                out.setdefault(g, []).extend(urls)
        if self.kube_endpoints and self.plan is not None:
            from .gateway_objects import service_names

            for grp, svc in service_names(self.plan).items():
                out.setdefault(grp, []).extend(self.kube_endpoints.get(svc, []))
        return {
            g: [u.rstrip("/") for u in urls if self.ejected.get(u.rstrip("/"), 0) <= now] for g, urls in out.items()
        }

    def rebuild(self, plan: Optional[Plan] = None) -> None:
        plan = plan or self.plan
        if plan is None:
            return
        eps = self.live_endpoints()
        self.router = Router(plan, eps, overload=self.config.overload, previous=self.router)
        self.plan = plan
        for g in group_assignments(plan):
            self.metrics.endpoints.labels(g).set(len(eps.get(g, [])))

    def _read_plan_sync(self) -> tuple[Optional[Plan], str]:
        from .source import parse_document

        doc = self.source.read(self._kube)
        if doc.digest == self.plan_digest:
            return None, doc.digest
        parsed = parse_document(doc)
        if not isinstance(parsed, Plan):
            raise InputError("the gateway needs a plan, not a workload", file=doc.origin)
        return parsed, doc.digest

    async def reload_plan(self) -> bool:
        try:
            plan, digest = await asyncio.get_running_loop().run_in_executor(None, self._read_plan_sync)
        except Exception as e:  # keep serving the old plan
            msg = str(e)
            if msg != self.plan_error:
                log.error(
                    "plan reload failed (still serving plan %s): %s", self.plan.plan_id if self.plan else None, msg
                )
            self.plan_error = msg
            self.metrics.reloads.labels("error").inc()
            return False
        if plan is None:
            return True
        if not plan.plan_id:
            plan = plan.model_copy(update={"plan_id": plan.compute_id()})
        old = self.plan
        self.rebuild(plan)
        self.plan_digest, self.plan_error = digest, ""
        if old is not None:
            self.metrics.plan_info.remove(old.plan_id) if old.plan_id != plan.plan_id else None
        self.metrics.plan_info.labels(plan.plan_id).set(1)
        self.metrics.reloads.labels("ok").inc()
        log.info("plan %s live (%d server groups)", plan.plan_id, len(group_assignments(plan)))
        return True

    def _read_endpoints_file(self) -> bool:
        p = self.config.endpoints_file
        if not p:
            return False
        try:
            m = Path(p).stat().st_mtime
        except OSError:
            return False
        if m == self._ep_mtime:
            return False
        from synergai.models.cluster import load_structured

        try:
            data = load_structured(Path(p))
            if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
                raise InputError("endpoints file must map server group -> list of URLs", file=p)
            self.file_endpoints = {str(g): [str(u) for u in v] for g, v in data.items()}
        except Exception as e:
            log.error("endpoints file %s: %s (keeping the previous endpoints)", p, e)
            return False
        self._ep_mtime = m
        return True

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval)
            changed = self._read_endpoints_file()
            now = time.monotonic()
            expired = [u for u, t in self.ejected.items() if t <= now]
            for u in expired:
                del self.ejected[u]
            if changed or expired:
                self.rebuild()
            await self.reload_plan()

    def eject(self, url: str) -> None:
        if url not in self.ejected:
            log.warning("server %s failed: ejected for %.0f s", url, self.config.eject_seconds)
        self.ejected[url] = time.monotonic() + self.config.eject_seconds
        self.rebuild()

    # ---------------------------------------------------------------- kubernetes endpoints
    def _kube_watch_thread(self) -> None:
        """List+watch the namespace's EndpointSlices (discovery.k8s.io/v1, else v1beta1 on 1.20), else
        its Endpoints; push Service name -> ready URLs to the event loop on every change.

        EndpointSlices first: they carry per-endpoint readiness and, unlike Endpoints, accept any pod IP
        (Endpoints validation refuses loopback addresses). Watches resume from their resourceVersion;
        410 Gone or an error re-lists; a dropped connection retries with a bounded backoff."""
        from .kube import KubeError, Stopped

        ns = self.config.kube_namespace
        kube = self._kube
        modes = {"auto": DISCOVERY_KINDS, "endpointslices": DISCOVERY_KINDS[:2], "endpoints": DISCOVERY_KINDS[2:]}[
            self.config.kube_discovery
        ]
        mode_i = 0
        state: dict[str, tuple[str, list[str]]] = {}  # object name -> (Service, URLs)

        def push() -> None:
            snap: dict[str, list[str]] = {}
            for svc, urls in state.values():
                snap.setdefault(svc, []).extend(urls)
            snap = {k: sorted(set(v)) for k, v in snap.items()}
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self._set_kube_endpoints, snap)

        rv = ""
        failures = 0
        while not self._kube_stop.is_set():
            api, kind = modes[mode_i]
            sel = SLICE_SERVICE_LABEL if kind == "EndpointSlice" else None
            try:
                if not rv:
                    items, rv = kube.list(api, kind, ns, label_selector=sel)
                    state.clear()
                    for it in items:
                        state[it["metadata"]["name"]] = endpoint_urls(kind, it)
                    push()
                    log.info("discovering servers from %s %s in namespace %s", api, kind, ns)
                for ev in kube.watch(api, kind, ns, rv, label_selector=sel, timeout_seconds=30):
                    failures = 0
                    obj = ev.get("object") or {}
                    md = obj.get("metadata") or {}
                    rv = md.get("resourceVersion") or rv
                    if ev.get("type") == "BOOKMARK":
                        continue
                    if ev.get("type") == "DELETED":
                        state.pop(md.get("name"), None)
                    else:
                        state[md.get("name")] = endpoint_urls(kind, obj)
                    push()
            except Stopped:
                return
            except KubeError as e:
                if self._kube_stop.is_set():
                    return
                if not rv and e.status == 404 and mode_i + 1 < len(modes):
                    mode_i += 1  # this API is not served: try the next
                    continue
                failures += 1
                if e.gone or e.status != 0:
                    rv = ""
                log.info("%s watch interrupted (%s); retrying", kind, e)
                self._kube_stop.wait(min(5.0, 0.2 * 2 ** min(failures, 5)))
            except Exception as e:  # pragma: no cover - defensive
                failures += 1
                log.warning("%s watch failed: %r", kind, e)
                rv = ""
                self._kube_stop.wait(min(5.0, 0.2 * 2 ** min(failures, 5)))

    def _set_kube_endpoints(self, snap: dict[str, list[str]]) -> None:
        if snap != self.kube_endpoints:
            self.kube_endpoints = snap
            self.rebuild()

    # ---------------------------------------------------------------- lifecycle
    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        c = self.config
        self.upstream = UpstreamPool(
            limit=c.max_connections_upstream, timeout=c.upstream_timeout, connect_timeout=c.connect_timeout
        )
        if c.kube_namespace or self.source.kind == "configmap":
            from .kube import KubeClient

            self._kube = KubeClient.from_kubeconfig(c.kubeconfig, stop=self._kube_stop)
        self._read_endpoints_file()
        await self.reload_plan()
        if c.kube_namespace:
            threading.Thread(target=self._kube_watch_thread, name="endpoints-watch", daemon=True).start()
        self._tasks.append(asyncio.create_task(self._watch_loop()))

    async def shutdown(self) -> None:
        self._kube_stop.set()
        for t in self._tasks:
            t.cancel()
        if self.upstream is not None:
            await self.upstream.close()
        if self._kube is not None:
            self._kube.close()

    # ---------------------------------------------------------------- HTTP
    def app(self) -> web.Application:
        app = make_app(self.config.limits, on_error=lambda code: self.metrics.http_rejects.labels(str(code)).inc())
        add_v2_routes(app, self)
        g, p = app.router.add_get, app.router.add_post
        g("/v1/status", self.status)
        p("/v1/routing", self.set_routing)
        p("/v1/reload", self.reload_h)
        return app

    async def live(self, request):
        return web.Response(text="ok\n")

    async def ready(self, request):
        r = self.router
        if r is None:
            return json_error(503, f"no plan loaded{': ' + self.plan_error if self.plan_error else ''}")
        if not r.models:
            return json_error(503, "no live server for any model of the plan")
        return web.Response(text=f"ok: plan {r.plan.plan_id}, {sum(len(u) for u in r.endpoints.values())} servers\n")

    async def metrics_h(self, request):
        return await prometheus(self.metrics.registry)

    async def server_meta(self, request):
        return json_response({"name": "synergai-gateway", "version": _version(), "extensions": ["binary_tensor_data"]})

    async def status(self, request):
        r = self.router
        return json_response(
            {
                "plan_id": r.plan.plan_id if r else None,
                "routing": self.policy,
                "overload": self.config.overload,
                "endpoints": r.endpoints if r else {},
                "ejected": sorted(self.ejected),
                "plan_error": self.plan_error,
                "served": self.served,
            }
        )

    async def set_routing(self, request):
        denied = self.auth.check(request)
        if denied is not None:
            return denied
        try:
            obj = v2.loads(await read_body(request, self.config.limits))
        except v2.V2Error as e:
            return json_error(e.status, e.message)
        pol = obj.get("routing") if isinstance(obj, dict) else None
        if pol not in POLICIES:
            return json_error(400, f'body must be {{"routing": one of {", ".join(POLICIES)}}}')
        self.policy = pol
        return json_response({"routing": pol})

    async def reload_h(self, request):
        denied = self.auth.check(request)
        if denied is not None:
            return denied
        ok = await self.reload_plan()
        return json_response(
            {"reloaded": ok, "plan_id": self.plan.plan_id if self.plan else None, "error": self.plan_error or None},
            status=200 if ok else 400,
        )

    async def _proxy_get(self, request, suffix: str):
        """Metadata/readiness of a model: asked of one live server hosting it."""
        r = self.router
        model = request.match_info["model"]
        if r is None or model not in r.models:
            return json_error(404, f"unknown model {model[:100]!r} (not served by the live plan)")
        t = r.pick("lor", model, None, 0.0, None, self.inflight)
        try:
            path = r.upstream_path(request, t.target.group, suffix)
            resp = await self.upstream.request("GET", t.target.url, path)  # type: ignore[union-attr]
            return web.Response(
                body=resp.body, status=resp.status, content_type=resp.content_type or "application/json"
            )
        except UpstreamError as e:
            return json_error(502, f"server {t.target.url} did not answer: {e.kind}")

    async def model_meta(self, request):
        return await self._proxy_get(request, "")

    async def model_ready(self, request):
        r = self.router
        model = request.match_info["model"]
        if r is None or model not in r.models:
            return json_response({"name": model, "ready": False}, status=404 if r else 503)
        return json_response({"name": model, "ready": True})

    async def infer(self, request: web.Request) -> web.StreamResponse:
        clock = time.monotonic  # the scheduler's clock (uvloop's loop.time() has 1 ms resolution)
        t0 = clock()
        model = request.match_info["model"]
        r = self.router
        m = self.metrics
        if self.config.auth_inference:
            denied = self.auth.check(request)
            if denied is not None:
                return denied
        if r is None:
            return json_error(503, "no plan loaded yet", {"Retry-After": "1"})
        hdrs = request.headers
        try:
            body = await read_body(request, self.config.limits)
            t_body = clock()
            obj = None
            if v2.DEADLINE_HEADER not in hdrs:  # the body is parsed only for parameters.deadline_ms
                obj = v2.header_object(body, hdrs.get(v2.HEADER_LENGTH))
            deadline = v2.deadline_from(hdrs, obj)
        except v2.V2Error as e:
            m.count(model if model in r.models else "unknown", "", e.status)
            return json_error(e.status, e.message)
        if model not in r.models:
            m.count("unknown", "", 404)
            return json_error(
                404,
                f"unknown model {model[:100]!r} (not served by the live plan "
                f"{r.plan.plan_id}; models: {', '.join(sorted(r.models))})",
            )
        if deadline is None:
            deadline = r.deadline_ms.get(model)
        due = t_body + deadline / 1000.0 if deadline else float("inf")
        origin = hdrs.get("X-Synergai-Origin")
        inflight = self.inflight
        td = time.perf_counter()
        pick = r.pick(self.policy, model, deadline, t_body, origin if origin in ("edge", "cloud") else None, inflight)
        m.decision.observe(time.perf_counter() - td)
        if pick is None:
            m.count(model, "", 503)
            return json_error(503, f"no live server for model {model}", {"Retry-After": "1"})
        if pick.decision is not None and pick.decision.shed:
            m.child(m.sheds, model).inc()
            m.count(model, pick.target.pool, 503)
            return json_error(
                503,
                f"overloaded: no server can meet the {deadline:g} ms deadline for {model}",
                {"Retry-After": "1", "X-Synergai-Shed": "1"},
            )
        fwd = [(k, v) for k in FORWARD_HEADERS if (v := hdrs.get(k)) is not None]
        upstream = self.upstream
        assert upstream is not None
        retries = 0
        upstream_s = 0.0
        tried: set[str] = set()
        while True:
            url = pick.target.url
            tried.add(url)
            inflight[url] = inflight.get(url, 0) + 1
            tu = clock()
            err = None
            try:
                resp = await upstream.request(
                    "POST", url, r.upstream_path(request, pick.target.group, "/infer"), fwd, body
                )
            except UpstreamError as e:
                if e.kind == "timeout":
                    err = ("timeout", 504, f"server {url} did not answer within {self.config.upstream_timeout:g} s")
                else:
                    err = ("connection", 502, f"server {url} failed: {e}")
            finally:
                inflight[url] -= 1
            t1 = clock()
            upstream_s += t1 - tu
            if err is None:
                break
            kind, code, msg = err
            m.upstream_errors.labels(kind).inc()
            r.cancel(pick)
            if kind == "connection":
                self.eject(url)
            r2 = self.router or r
            nxt = None
            if retries == 0 and t1 < due:
                nxt = r2.pick(self.policy, model, deadline, t1, None, inflight)
                if nxt is not None and nxt.target.url in tried:
                    nxt = r2.pick("lor", model, deadline, t1, None, inflight, exclude=frozenset(tried))
            if nxt is None:
                why = "deadline passed" if t1 >= due else ("already retried" if retries else "no other server")
                m.count(model, pick.target.pool, code)
                return json_error(code, f"{msg}; not retried: {why}", {"X-Synergai-Retries": str(retries)})
            retries += 1
            m.retries.labels(model).inc()
            r, pick = r2, nxt
        status, rh = resp.status, resp.headers
        # feedback: the server was free again when its answer arrived; it started compute_ms before
        try:
            comp = float(rh.get("X-Synergai-Compute-Ms", "nan")) / 1000.0
        except ValueError:
            comp = float("nan")
        try:
            depth: Optional[int] = int(rh.get("X-Synergai-Queue-Depth", ""))
        except ValueError:
            depth = None
        ok = 200 <= status < 300
        if ok:
            r.complete(pick, t1, t1 - comp if comp == comp else None, depth, inflight.get(pick.target.url, 0))
        else:
            r.cancel(pick)
        pool = pick.target.pool
        m.count(model, pool, status)
        if ok:
            self.served += 1
            m.child(m.latency, model, pool).observe(t1 - t0)
            if t1 > due:
                m.child(m.violations, model, pool).inc()
        over = clock() - t0 - upstream_s
        m.overhead.observe(over)
        headers = {k: v for k in PASS_BACK if (v := rh.get(k)) is not None}
        headers["X-Synergai-Pool"] = pool
        headers["X-Synergai-Server"] = pick.target.group
        headers["X-Synergai-Endpoint"] = url
        headers["X-Synergai-Routing"] = self.policy
        headers["X-Synergai-Retries"] = str(retries)
        headers["X-Synergai-Gateway-Ms"] = f"{over * 1000:.3f}"
        headers["X-Synergai-Plan"] = r.plan.plan_id
        if pick.meets is not None:
            headers["X-Synergai-Meets-Deadline"] = "true" if pick.meets else "false"
            headers["X-Synergai-Estimated-Ms"] = f"{pick.estimated_ms:.3f}"
        if deadline:
            headers["X-Synergai-Deadline-Ms"] = f"{deadline:g}"
        ctype = rh.get("Content-Type", "application/json").split(";")[0]
        return web.Response(body=resp.body, status=status, headers=headers, content_type=ctype)


def _version() -> str:
    from .serve import _version as v

    return v()


def run_gateway(config: GatewayConfig, port_file: Optional[str] = None) -> int:
    gw = Gateway(config)
    return run_main(
        gw.app,
        config.host,
        config.port,
        config.limits,
        label="synergai gateway",
        port_file=port_file,
        before=gw.startup,
        cleanup=gw.shutdown,
    )
