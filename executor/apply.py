"""Apply a plan's objects with server-side apply, report what changes, prune what the plan dropped.

Three phases, so a bad object never leaves the cluster half-updated:

1. **check** every desired object: read the live object and server-side dry-run the apply
   (non-forced first: a field-manager conflict is recorded, then resolved by forcing, the
   plan being the source of truth; ``force_conflicts=False`` reports it instead). The
   API server validates everything here (names, selectors, requests <= limits); any
   rejection aborts before anything is written. Comparing the live object with the
   dry-run result gives created / updated (with the changed fields) / unchanged.
2. **write** the created/updated objects (real apply, same field manager). Unchanged
   objects are not written, so a second apply of the same plan changes nothing.
3. **prune** (optional): Deployments, Services and ConfigMaps carrying
   ``app.kubernetes.io/managed-by=synergai`` and a plan component
   (``app.kubernetes.io/component`` in ``inference``, ``model-endpoint``, ``server-config``) whose
   name the plan does not produce are deleted (uid precondition, background propagation).
   Nothing else is ever deleted: not the gateway's objects, not a ConfigMap without that component.

A change confined to the ``synergai.io/plan-id`` annotation is written (the objects then
name the live plan) but reported as *unchanged*: the workload itself does not change.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .kube import KubeClient, KubeError, Stopped
from .manifests import ANN_PLAN_ID, PRUNE_SELECTOR

log = logging.getLogger("synergai.apply")

PRUNE_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"))
_VOLATILE_META = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink")
_VOLATILE_ANN = ("deployment.kubernetes.io/revision",)


class ApplyError(Exception):
    """Applying failed; ``str()`` is one line. ``written`` lists objects already written."""

    def __init__(self, message: str, *, kube_error: Optional[KubeError] = None, written: Optional[list] = None):
        self.kube_error = kube_error
        self.written = written or []
        super().__init__(" ".join(str(message).split()))

    @property
    def status(self) -> int:
        return self.kube_error.status if self.kube_error else 0


@dataclass
class Change:
    action: str  # created | updated | unchanged | deleted
    kind: str
    name: str
    details: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    refreshed: bool = False  # only the plan-id annotation differed (written anyway)
    written: bool = False

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class ApplyResult:
    namespace: str
    dry_run: bool
    changes: list[Change] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        c = {"created": 0, "updated": 0, "unchanged": 0, "deleted": 0}
        for ch in self.changes:
            c[ch.action] += 1
        return c

    @property
    def changed(self) -> bool:
        return any(ch.action != "unchanged" for ch in self.changes)

    @property
    def conflicts(self) -> list[Change]:
        return [ch for ch in self.changes if ch.conflicts]

    def by_action(self, action: str) -> list[str]:
        return [ch.ref for ch in self.changes if ch.action == action]

    def summary(self) -> str:
        c = self.counts()
        s = ", ".join(f"{v} {k}" for k, v in c.items())
        return f"{s} in namespace {self.namespace}" + (" (dry run: nothing written)" if self.dry_run else "")

    def lines(self, verbose: bool = True) -> list[str]:
        sym = {"created": "+", "updated": "~", "unchanged": "=", "deleted": "-"}
        out = []
        for ch in self.changes:
            if ch.action == "unchanged" and not verbose:
                continue
            extra = ""
            if ch.action == "updated" and ch.details:
                shown = ch.details[:4]
                extra = (
                    "  (" + "; ".join(shown) + (f"; +{len(ch.details) - 4} more" if len(ch.details) > 4 else "") + ")"
                )
            elif ch.refreshed:
                extra = "  (plan-id annotation refreshed)"
            if ch.conflicts:
                extra += "  [took over: " + ", ".join(ch.conflicts) + "]"
            out.append(f"{sym[ch.action]} {ch.action:<9} {ch.ref}{extra}")
        return out


def normalise(obj: dict) -> dict:
    o = copy.deepcopy(obj)
    o.pop("status", None)
    md = o.setdefault("metadata", {})
    for key in _VOLATILE_META:
        md.pop(key, None)
    ann = md.get("annotations")
    if ann:
        for key in _VOLATILE_ANN:
            ann.pop(key, None)
        if not ann:
            md.pop("annotations")
    return o


def _key(path: str, k: str) -> str:
    return f"{path}[{k}]" if ("." in k or "/" in k) else (f"{path}.{k}" if path else k)


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where ``a`` and ``b`` differ, as ``path: old -> new``."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a:
                out.append(f"{_key(path, k)}: added")
            elif k not in b:
                out.append(f"{_key(path, k)}: removed")
            else:
                out.extend(diff(a[k], b[k], _key(path, k)))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(diff(x, y, f"{path}[{i}]"))
        return out
    return [] if a == b else [f"{path}: {_short(a)} -> {_short(b)}"]


def _plan_id_only(details: list[str]) -> bool:
    prefix = f"metadata.annotations[{ANN_PLAN_ID}]"
    return bool(details) and all(d.startswith(prefix) for d in details)


def _rejected(e: KubeError, ref: str) -> ApplyError:
    if e.forbidden:
        return ApplyError(f"{ref}: forbidden: {e.message}", kube_error=e)
    if e.not_found and "namespaces" in e.message:
        return ApplyError(
            f"{ref}: {e.message} (create the namespace first: synergai apply --create-namespace, "
            f"or kubectl create namespace NAME)",
            kube_error=e,
        )
    if e.status in (400, 422) or (e.status >= 500 and not e.retryable):
        return ApplyError(f"{ref}: rejected by the API server: {e.message}", kube_error=e)
    return ApplyError(f"{ref}: {e}", kube_error=e)


def ensure_namespace(kube: KubeClient, namespace: str, *, dry_run: bool = False) -> Optional[Change]:
    """Create ``namespace`` unless it exists; the :class:`Change` made, or None when it existed."""
    ref = f"Namespace/{namespace}"
    try:
        if kube.get("v1", "Namespace", namespace) is not None:
            return None
        if dry_run:
            raise ApplyError(
                f"{ref} does not exist: a dry run cannot check objects in it; apply without --dry-run "
                f"(with --create-namespace) or create it first: kubectl create namespace {namespace}"
            )
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {"app.kubernetes.io/created-by": "synergai"}},
            }
        )
    except KubeError as e:
        if e.conflict:  # created meanwhile
            return None
        raise _rejected(e, ref) from None
    return Change("created", "Namespace", namespace, written=True)


def apply_objects(
    kube: KubeClient,
    objs: list[dict],
    namespace: str,
    *,
    dry_run: bool = False,
    prune: bool = False,
    force_conflicts: bool = True,
    write_interval: float = 0.0,
    stop: Optional[threading.Event] = None,
    on_write: Optional[Callable[[Change, float], None]] = None,
    create_namespace: bool = False,
) -> ApplyResult:
    """Make the namespace hold ``objs`` (see module docstring). Raises :class:`ApplyError`.

    ``create_namespace``: create the namespace first when it does not exist (reported as a created
    ``Namespace``); a dry run cannot check objects in a namespace that does not exist yet and says so.
    """
    t0 = time.monotonic()
    stop = stop or kube.stop
    res = ApplyResult(namespace=namespace, dry_run=dry_run)
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    if len(set(names)) != len(names):
        raise ApplyError("duplicate object names in the desired state")
    if create_namespace:
        ns_change = ensure_namespace(kube, namespace, dry_run=dry_run)
        if ns_change is not None:
            res.changes.append(ns_change)

    # ---- 1. check (reads and dry runs only)
    plan: list[tuple[dict, Change, bool]] = []
    for obj in objs:
        kind, name = obj["kind"], obj["metadata"]["name"]
        ref = f"{kind}/{name}"
        obj = copy.deepcopy(obj)
        obj["metadata"]["namespace"] = namespace
        try:
            live = kube.get(obj["apiVersion"], kind, name, namespace)
            conflicts: list[str] = []
            try:
                would = kube.apply(obj, namespace, force=False, dry_run=True)
                force = False
            except KubeError as e:
                if not e.conflict:
                    raise
                conflicts = e.conflict_fields() or [e.message]
                if not force_conflicts:
                    raise ApplyError(
                        f"{ref}: conflicts with other field managers: {', '.join(conflicts)} "
                        f"(allow taking over with force)",
                        kube_error=e,
                    ) from None
                would = kube.apply(obj, namespace, force=True, dry_run=True)
                force = True
        except KubeError as e:
            raise _rejected(e, ref) from None
        if live is None:
            ch = Change("created", kind, name, conflicts=conflicts)
        else:
            details = diff(normalise(live), normalise(would))
            if not details:
                ch = Change("unchanged", kind, name, conflicts=conflicts)
            elif _plan_id_only(details):
                ch = Change("unchanged", kind, name, details=details, conflicts=conflicts, refreshed=True)
            else:
                ch = Change("updated", kind, name, details=details, conflicts=conflicts)
        plan.append((obj, ch, force))
        res.changes.append(ch)

    # ---- 2. write
    written: list[str] = []
    if not dry_run:
        for obj, ch, force in plan:
            if ch.action == "unchanged" and not ch.refreshed:
                continue
            if write_interval and written and stop.wait(write_interval):
                raise Stopped()
            t1 = time.monotonic()
            try:
                try:
                    kube.apply(obj, namespace, force=force)
                except KubeError as e:
                    if not (e.conflict and force_conflicts):
                        raise
                    # a manager grabbed a field since the check: take it back
                    ch.conflicts = ch.conflicts or e.conflict_fields() or [e.message]
                    kube.apply(obj, namespace, force=True)
            except KubeError as e:
                err = _rejected(e, ch.ref)
                err.written = written
                raise err from None
            ch.written = True
            written.append(ch.ref)
            if on_write:
                on_write(ch, time.monotonic() - t1)

    # ---- 3. prune
    if prune:
        desired = set(names)
        for api_version, kind in PRUNE_KINDS:
            try:
                items, _ = kube.list(api_version, kind, namespace, label_selector=PRUNE_SELECTOR)
            except KubeError as e:
                err = _rejected(e, f"{kind}s")
                err.written = written
                raise err from None
            for it in sorted(items, key=lambda x: x["metadata"]["name"]):
                md = it["metadata"]
                if (kind, md["name"]) in desired or md.get("deletionTimestamp"):
                    continue
                if (md.get("labels") or {}).get("app.kubernetes.io/managed-by") != "synergai":
                    continue  # belt and braces: the selector already ensures this
                ch = Change("deleted", kind, md["name"])
                if not dry_run and write_interval and written and stop.wait(write_interval):
                    raise Stopped()
                try:
                    gone = kube.delete(api_version, kind, md["name"], namespace, uid=md.get("uid"), dry_run=dry_run)
                except KubeError as e:
                    if e.conflict:  # uid precondition failed: re-created meanwhile; next reconcile decides
                        continue
                    err = _rejected(e, ch.ref)
                    err.written = written
                    raise err from None
                if not gone:
                    continue
                ch.written = not dry_run
                if not dry_run:
                    written.append(ch.ref)
                    if on_write:
                        on_write(ch, 0.0)
                res.changes.append(ch)

    res.seconds = time.monotonic() - t0
    return res
