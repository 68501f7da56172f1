"""Optional dependencies ("extras") and the one-line error a command gives when one is missing.

``pip install synergai`` brings what planning needs; the rest comes with extras
(``pip install 'synergai[kube]'``). Library code imports an optional module through
:func:`require`, which raises :class:`MissingExtra` (a ``ModuleNotFoundError`` naming the
extra and the pip command) instead of a bare ``No module named ...``.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Optional

# top-level module -> the extras that provide it (the first is the usual one)
MODULE_EXTRAS: dict[str, tuple[str, ...]] = {
    "kubernetes": ("kube",),
    "kubernetes_validate": ("kube",),
    "prometheus_client": ("kube", "serve"),
    "aiohttp": ("serve", "kube"),  # the HTTP stack of serve / gateway / loadtest and of the daemon
    "onnx": ("profile",),
    "onnxruntime": ("profile",),
    "openvino": ("profile",),
    "matplotlib": ("experiments",),
    "ortools": ("solvers", "experiments"),
    "pulp": ("solvers",),
    "pyarrow": ("parquet",),
}

# the extra a CLI command needs (used to pick among several extras providing one module)
COMMAND_EXTRAS: dict[str, str] = {
    "manifests": "kube",
    "apply": "kube",
    "daemon": "kube",
    "inventory": "kube",
    "profile-cluster": "kube",
    "profile": "profile",
    "experiment": "experiments",
    "serve": "serve",
    "gateway": "serve",
    "loadtest": "serve",
}


def pip_command(extra: str) -> str:
    return f"pip install 'synergai[{extra}]'"


class MissingExtra(ModuleNotFoundError):
    """An optional dependency is not installed; ``str()`` names the extra and the pip command."""

    def __init__(self, module: str, extra: str, what: Optional[str] = None):
        self.extra = extra
        self.what = what
        need = f"{what} needs" if what else "needs"
        super().__init__(f"{need} the {extra} extra ({module} is not installed): {pip_command(extra)}", name=module)


def extra_for(module: Optional[str], command: Optional[str] = None) -> Optional[str]:
    """The extra that provides ``module`` (a dotted name is reduced to its top level), or None."""
    if not module:
        return None
    extras = MODULE_EXTRAS.get(module.split(".")[0])
    if not extras:
        return None
    preferred = COMMAND_EXTRAS.get(command or "")
    return preferred if preferred in extras else extras[0]


def require(module: str, extra: Optional[str] = None, what: Optional[str] = None) -> ModuleType:
    """``import_module(module)``, or :class:`MissingExtra` when it (or a dependency of it) is absent."""
    try:
        return import_module(module)
    except ModuleNotFoundError as e:
        missing = e.name or module
        ex = extra or extra_for(missing) or extra_for(module)
        if ex is None:
            raise
        raise MissingExtra(missing, ex, what) from e


def missing_extra_message(exc: ModuleNotFoundError, command: Optional[str]) -> Optional[str]:
    """The one-line CLI message for a missing optional module, or None when it is not an extra's."""
    extra = getattr(exc, "extra", None) or extra_for(exc.name, command)
    if extra is None:
        return None
    who = f"'synergai {command}'" if command else "this command"
    return f"{who} needs the {extra} extra: {pip_command(extra)}"
