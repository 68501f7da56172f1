"""``synergai serve | gateway | loadtest``: the request path's commands.

Registered by ``synergai.cli`` through :func:`register` (module ``synergai.executor.serving_cli``).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Optional

import typer

from synergai.models import InputError


def _env(name: str, default=None):
    v = os.environ.get(name)
    return v if v not in (None, "") else default


def _truthy(v) -> bool:
    return str(v or "").strip().lower() in ("1", "true", "yes", "on")


SERVE_MODULES = ("aiohttp", "prometheus_client")  # what serve, gateway and loadtest cannot run without


def need_serve_extra(command: str) -> None:
    """Raise :class:`synergai.extras.MissingExtra` (-> one line naming ``pip install 'synergai[serve]'``,
    exit 2) when a module of the serve extra is missing; before anything else runs."""
    from synergai.extras import require

    for mod in SERVE_MODULES:
        require(mod, "serve", what=f"'synergai {command}'")


def _needs_serve(command: str):
    def deco(fn):
        @functools.wraps(fn)  # typer reads the options from the wrapped signature
        def wrapper(*args, **kwargs):
            need_serve_extra(command)
            return fn(*args, **kwargs)

        return wrapper

    return deco


def _limits(max_body_mb: float, header_timeout: float, body_timeout: float, max_inflight: int):
    from .httpkit import HttpLimits

    return HttpLimits(
        max_body=int(max_body_mb * 1024 * 1024),
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_inflight=max_inflight,
    )


def serve(
    emulate: Optional[list[str]] = typer.Option(
        None, "--emulate", help="[MODEL=]DEVICE/CONFIG_ID: emulate that profile (repeatable)."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", help="Model name for --emulate without MODEL= (default $MODEL)."
    ),
    profiles: Optional[Path] = typer.Option(None, "--profiles", help="Profile CSV for --emulate (default: embedded)."),
    plan: Optional[Path] = typer.Option(
        None, "--plan", help="Plan JSON: emulate every model of --server with the plan's configurations."
    ),
    server: Optional[str] = typer.Option(
        None, "--server", help="Server group of --plan (dedicated groups: MODEL-POOL)."
    ),
    onnx: Optional[list[str]] = typer.Option(
        None, "--onnx", help="NAME[=PATH|zoo:ZOO_NAME]: a real ONNX model (repeatable)."
    ),
    plan_config: Optional[Path] = typer.Option(
        None,
        "--plan-config",
        help="server.json of a server group (default $SYNERGAI_SERVER_CONFIG when nothing else is given): its models from $SYNERGAI_MODEL_STORE/<file> with the group's batching, slots and threads.",
    ),
    emulate_config: bool = typer.Option(
        _truthy(_env("SYNERGAI_SERVE_EMULATE")),
        "--emulate-config/--real-config",
        help="--plan-config: emulate every model from its configuration's profile instead of loading files (default $SYNERGAI_SERVE_EMULATE).",
    ),
    batch_size: int = typer.Option(int(_env("BATCH_SIZE", 1)), "--batch-size", help="ONNX models: max batch (rows)."),
    batch_wait_ms: float = typer.Option(
        float(_env("MAX_BATCH_DELAY_MS", 0.0)), "--batch-wait-ms", help="ONNX models: max batch-formation wait, ms."
    ),
    threads: int = typer.Option(
        int(_env("THREADS", "1")) if str(_env("THREADS", "1")).isdigit() else 1,
        "--threads",
        help="ONNX models: intra-op threads.",
    ),
    slots: int = typer.Option(1, "--slots", help="ONNX models: batches executed at once."),
    shared: Optional[bool] = typer.Option(
        None, "--shared/--dedicated", help="One pool of execution slots for all models (default: shared when several)."
    ),
    host: str = typer.Option(_env("HOST", "127.0.0.1"), "--host", help="Bind address."),
    port: int = typer.Option(int(_env("PORT", 8080)), "--port", help="Port (0: any free port)."),
    port_file: Optional[str] = typer.Option(None, "--port-file", help="Write the bound port here."),
    seed: int = typer.Option(0, "--seed", help="Random seed of emulated service times."),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb"),
    header_timeout: float = typer.Option(10.0, "--header-timeout"),
    body_timeout: float = typer.Option(30.0, "--body-timeout"),
    max_inflight: int = typer.Option(4096, "--max-inflight"),
    log_level: str = typer.Option("info", "--log-level"),
):
    """Serve models over the Open Inference Protocol (V2): a server group's server.json (--plan-config, real or
    --emulate-config), emulated profiles or real ONNX models."""
    from .serve import emulated_from_plan, emulated_from_profile, onnx_runtime, run_server

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runtimes = []
    others = plan is not None or server is not None or bool(emulate) or bool(onnx)
    if plan_config is not None and others:
        raise InputError(
            "--plan-config serves a whole server group: not with --plan/--server, --emulate or --onnx",
            field="--plan-config",
        )
    if plan_config is None and not others and _env("SYNERGAI_SERVER_CONFIG"):
        plan_config = Path(_env("SYNERGAI_SERVER_CONFIG"))
    if plan_config is not None:
        from .serve import runtimes_from_server_config

        runtimes, group_shared = runtimes_from_server_config(plan_config, emulate=emulate_config, seed=seed)
        shared = group_shared if shared is None else shared
    if plan is not None or server is not None:
        if plan is None or server is None:
            raise InputError("--plan and --server go together", field="--server")
        from synergai.models import Plan

        runtimes += emulated_from_plan(Plan.load(plan), server, seed=seed)
    table = None
    for spec in emulate or []:
        name, sep, rest = spec.partition("=")
        m, dc = (name, rest) if sep else (model or _env("MODEL"), spec)
        if not m:
            raise InputError(f"--emulate {spec!r}: give MODEL=DEVICE/CONFIG or --model", field="--emulate")
        if table is None and profiles is not None:
            from synergai.models import ProfileTable

            table = ProfileTable.load(profiles)
        runtimes.append(emulated_from_profile(m, dc, table, seed=seed + len(runtimes)))
    for spec in onnx or []:
        runtimes.append(
            onnx_runtime(spec, batch_size=batch_size, batch_wait_ms=batch_wait_ms, slots=slots, threads=threads)
        )
    if not runtimes and _env("MODEL"):  # in a pod: MODEL from the env, the file from the model store
        store = Path(_env("SYNERGAI_MODEL_STORE", "/models"))
        from .gateway_objects import model_file

        f = store / _env("MODEL") / "1" / model_file(_env("ENGINE", "onnxruntime"), _env("ACCELERATOR", "none"))
        runtimes.append(
            onnx_runtime(
                f"{_env('MODEL')}={f}", batch_size=batch_size, batch_wait_ms=batch_wait_ms, slots=slots, threads=threads
            )
        )
    if not runtimes:
        raise InputError(
            "nothing to serve: give --plan-config, --emulate, --plan/--server or --onnx "
            "(or $SYNERGAI_SERVER_CONFIG / $MODEL in a pod)",
            field="--emulate",
        )
    raise typer.Exit(
        run_server(
            runtimes,
            host,
            port,
            shared=shared,
            port_file=port_file,
            limits=_limits(max_body_mb, header_timeout, body_timeout, max_inflight),
        )
    )


def gateway(
    plan: str = typer.Option(..., "--plan", help="file:PATH | configmap:NS/NAME | PATH (hot-reloaded)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address."),
    port: int = typer.Option(8000, "--port", help="Port (0: any free port)."),
    port_file: Optional[str] = typer.Option(None, "--port-file", help="Write the bound port here."),
    routing: str = typer.Option("synergai", "--routing", help="synergai | lor | rr"),
    overload: str = typer.Option("sacrifice", "--overload", help="sacrifice | least-lateness | shed"),
    endpoints: Optional[Path] = typer.Option(
        None, "--endpoints", help="YAML/JSON: server group -> list of URLs (reloaded on change)."
    ),
    endpoint: Optional[list[str]] = typer.Option(None, "--endpoint", help="GROUP=URL (repeatable)."),
    kube_namespace: Optional[str] = typer.Option(
        None, "--kube-namespace", help="Discover servers from the Endpoints of the plan's Services in this namespace."
    ),
    kubeconfig: Optional[str] = typer.Option(None, "--kubeconfig"),
    kube_discovery: str = typer.Option(
        "auto", "--kube-discovery", help="auto (EndpointSlices, else Endpoints) | endpointslices | endpoints."
    ),
    token_file: Optional[str] = typer.Option(
        _env("SYNERGAI_TOKEN_FILE"),
        "--token-file",
        help="Bearer token for state-changing endpoints (a mounted Secret).",
    ),
    auth_inference: bool = typer.Option(False, "--auth-inference", help="Require the token on inference too."),
    reload_interval: float = typer.Option(1.0, "--reload-interval", help="Plan/endpoint file poll period, s."),
    upstream_timeout: float = typer.Option(30.0, "--upstream-timeout"),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb"),
    header_timeout: float = typer.Option(10.0, "--header-timeout"),
    body_timeout: float = typer.Option(30.0, "--body-timeout"),
    max_inflight: int = typer.Option(4096, "--max-inflight"),
    log_level: str = typer.Option("info", "--log-level"),
):
    """Route V2 inference requests with the online stage (or lor / rr) to the plan's servers."""
    from .gateway import GatewayConfig, run_gateway

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    eps: dict[str, list[str]] = {}
    for e in endpoint or []:
        g, sep, url = e.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise InputError(f"--endpoint {e!r}: expected GROUP=http://host:port", field="--endpoint")
        eps.setdefault(g, []).append(url)
    cfg = GatewayConfig(
        plan=plan,
        host=host,
        port=port,
        routing=routing,
        overload=overload,
        endpoints_file=str(endpoints) if endpoints else None,
        endpoints=eps,
        kube_namespace=kube_namespace,
        kubeconfig=kubeconfig,
        kube_discovery=kube_discovery,
        token_file=token_file,
        auth_inference=auth_inference,
        reload_interval=reload_interval,
        upstream_timeout=upstream_timeout,
        limits=_limits(max_body_mb, header_timeout, body_timeout, max_inflight),
    )
    raise typer.Exit(run_gateway(cfg, port_file=port_file))


def register(app: typer.Typer) -> None:
    app.command("serve")(_needs_serve("serve")(serve))
    app.command("gateway")(_needs_serve("gateway")(gateway))
    try:
        from synergai.experiments.loadtest import loadtest
    except ImportError:  # pragma: no cover
        return
    app.command("loadtest")(_needs_serve("loadtest")(loadtest))


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m synergai.executor.serving_cli serve|gateway|loadtest ...`` (same as ``synergai ...``)."""
    import sys

    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
    register(app)
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except InputError as e:
        print(f"synergai: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        from synergai.extras import missing_extra_message

        msg = missing_extra_message(e, next((a for a in argv or sys.argv[1:] if not a.startswith("-")), None))
        if msg is None:
            raise
        print(f"synergai: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
