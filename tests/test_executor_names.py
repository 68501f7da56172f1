"""Offline: Kubernetes names from hostile model/pool names are valid, stable and distinct."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from synergai.executor.names import (
    Namer,
    dns_name,
    is_dns1035_label,
    is_dns1123_subdomain,
    label_key_error,
    label_value_error,
    slug,
)

HOSTILE = [
    "ResNet50",
    "resnet50",
    "resnet.50",
    "resnet-50",
    "resnet_50",
    "RESNET 50",
    "résnet50",
    "ｒｅｓｎｅｔ５０",
    "模型",
    "🙂",
    "",
    " ",
    "-",
    ".",
    "..",
    "a" * 300,
    "9lives",
    "-leading",
    "trailing-",
    "a/b",
    "a\\b",
    "a\nb",
    "x" * 62,
    "x" * 63,
    "x" * 64,
    "Ω≈ç√",
    "\u0000",
    "a.b.c.d.e.f",
    "UPPER.lower-Mixed_case",
]


def test_hostile_names_are_valid_dns1035_and_distinct():
    names = {}
    for m in HOSTILE:
        for p in HOSTILE[:8]:
            n = dns_name(m, p, kind="deployment")
            assert is_dns1035_label(n), (m, p, n)
            assert len(n) <= 63
            assert label_value_error(n) is None
            assert n not in names, f"{(m, p)} and {names[n]} both map to {n}"
            names[n] = (m, p)


def test_names_are_deterministic_and_readable():
    assert dns_name("ResNet.50", "edge-Orin", kind="deployment") == dns_name(
        "ResNet.50", "edge-Orin", kind="deployment"
    )
    n = dns_name("ResNet.50", "edge-Orin", kind="deployment")
    assert n.startswith("resnet-50-edge-orin-")
    # the kind is part of the identity: a model Service never collides with a Deployment name
    assert dns_name("a-b", kind="model") != dns_name("a", "b", kind="model")
    assert dns_name("a", "b", kind="deployment") != dns_name("a", "b", kind="service")
    # same slug, different raw strings -> different names
    assert dns_name("a.b", kind="x") != dns_name("a-b", kind="x") != dns_name("A-B", kind="x")


def test_long_parts_share_the_budget():
    n = dns_name("m" * 200, "p" * 200, kind="deployment")
    assert len(n) == 63 and "m" in n and "p" in n


def test_namer_never_reuses_a_name():
    nm = Namer()
    a = nm.name("x", kind="k")
    assert nm.name("x", kind="k") == a
    # force a clash: pretend the 8-hex name is taken by another key
    nm2 = Namer()
    taken = dns_name("y", kind="k")
    nm2._by_name[taken] = ("other",)
    b = nm2.name("y", kind="k")
    assert b != taken and is_dns1035_label(b)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=120), st.text(max_size=120)), min_size=1, max_size=30, unique=True))
def test_property_valid_and_distinct(pairs):
    nm = Namer()
    out = {}
    for m, p in pairs:
        n = nm.name(m, p, kind="deployment")
        assert is_dns1035_label(n)
        assert is_dns1123_subdomain(n)
        out[(m, p)] = n
    assert len(set(out.values())) == len(out)


@given(st.text(max_size=200))
def test_slug_is_safe(s):
    x = slug(s)
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in x)
    assert not x.startswith("-") and not x.endswith("-")


def test_label_key_and_value_checks():
    assert label_key_error("synergai.io/device") is None
    assert label_key_error("kubernetes.io/arch") is None
    assert label_key_error("plain") is None
    assert label_key_error("Bad Key") is not None
    assert label_key_error("UPPER.io/x") is not None
    assert label_key_error("/x") is not None
    assert label_value_error("jetson-agx-orin") is None
    assert label_value_error("") is None
    assert label_value_error("has space") is not None
    assert label_value_error("x" * 64) is not None
