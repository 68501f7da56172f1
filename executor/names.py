"""Kubernetes names and label values from arbitrary model/pool names.

Every name we generate is a DNS-1035 label (``[a-z]([-a-z0-9]*[a-z0-9])?``, at most
63 characters), which is valid for Deployments, Services, ConfigMaps and as a label value.
It is a readable slug of the inputs followed by a hash of the *raw* inputs, so:

* it never fails, whatever the input (unicode, dots, uppercase, 500 characters, empty);
* two different inputs never give the same name (the hash covers the exact raw strings
  and the kind of object; :class:`Namer` lengthens the hash on the astronomically
  unlikely collision within one plan);
* the same inputs always give the same name (crash-safe re-apply, no generateName).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_LABEL = 63
HASH_LEN = 8

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def slug(text: str, max_len: int = MAX_LABEL) -> str:
    """Lower-case ASCII ``[a-z0-9-]`` rendering of ``text`` (may be empty)."""
    t = unicodedata.normalize("NFKD", str(text))
    t = t.encode("ascii", "ignore").decode("ascii").lower()
    t = re.sub(r"[^a-z0-9]+", "-", t).strip("-")
    return t[:max_len].strip("-")


def short_hash(*parts: str, length: int = HASH_LEN) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = str(p).encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()[:length]


def _fit(slugs: list[str], budget: int) -> str:
    """Join non-empty slugs with '-', shortening the longest first so the result fits ``budget``."""
    parts = [s for s in slugs if s]
    if not parts:
        return ""
    seps = len(parts) - 1
    room = budget - seps
    if room < len(parts):
        parts, seps, room = parts[:1], 0, budget
    lens = [len(p) for p in parts]
    while sum(lens) > room:
        i = max(range(len(lens)), key=lambda j: lens[j])
        lens[i] -= 1
    out = [p[:n].strip("-") for p, n in zip(parts, lens)]
    return "-".join(p for p in out if p)


def dns_name(*parts: str, kind: str = "", max_len: int = MAX_LABEL, hash_len: int = HASH_LEN) -> str:
    """Deterministic DNS-1035 label for the tuple ``parts`` (and object ``kind``).

    ``dns_name("ResNet.50", "edge/Orin", kind="deploy")`` -> ``"resnet-50-edge-orin-1a2b3c4d"``.
    """
    h = short_hash(kind, *parts, length=hash_len)
    budget = max_len - hash_len - 1
    body = _fit([slug(p, budget) for p in parts], budget)
    if not body or not body[0].isalpha():
        body = _fit(["x", body], budget)
    name = f"{body}-{h}"
    assert is_dns1035_label(name), name
    return name


class Namer:
    """Hands out names for keys; never the same name for two different keys."""

    def __init__(self) -> None:
        self._by_key: dict[tuple, str] = {}
        self._by_name: dict[str, tuple] = {}

    def name(self, *parts: str, kind: str) -> str:
        key = (kind, *parts)
        if key in self._by_key:
            return self._by_key[key]
        for hl in (HASH_LEN, 12, 16, 24, 32):
            n = dns_name(*parts, kind=kind, hash_len=hl)
            if n not in self._by_name:
                break
        else:  # pragma: no cover - would need a sha256 collision
            raise RuntimeError(f"cannot find a unique name for {key!r}")
        self._by_key[key] = n
        self._by_name[n] = key
        return n


def is_dns1035_label(s: str) -> bool:
    return len(s) <= MAX_LABEL and bool(_DNS1035.match(s))


def is_dns1123_label(s: str) -> bool:
    return len(s) <= MAX_LABEL and bool(_DNS1123_LABEL.match(s))


def is_dns1123_subdomain(s: str) -> bool:
    return len(s) <= 253 and bool(_DNS1123_SUBDOMAIN.match(s))


def label_key_error(key: str) -> str | None:
    """Why ``key`` is not a valid Kubernetes label/annotation key, or None."""
    if not isinstance(key, str) or not key:
        return "empty key"
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return "empty prefix"
    if prefix and not is_dns1123_subdomain(prefix):
        return f"prefix {prefix!r} is not a DNS-1123 subdomain"
    if len(name) > MAX_LABEL or not _LABEL_NAME.match(name):
        return f"name part {name!r} must be <= 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"
    return None


def label_value_error(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or None."""
    if not isinstance(value, str):
        return "not a string"
    if value == "":
        return None
    if len(value) > MAX_LABEL or not _LABEL_NAME.match(value):
        return "must be <= 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"
    return None
