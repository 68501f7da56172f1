"""Image map: (engine, architecture) -> container image and serving conventions.

The default map ships as ``executor/images.yaml``; users pass their own with ``--images``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from synergai.models.cluster import load_structured
from synergai.models.errors import InputError, pydantic_error

DEFAULT_IMAGES = Path(__file__).resolve().parent / "images.yaml"

# Loose but safe image reference check (registry/repo[:tag][@digest]): no whitespace or
# control characters; the container runtime has the last word.
_IMAGE = re.compile(r"^[a-z0-9][A-Za-z0-9._\-/:@]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ServeDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    port: int = Field(8080, ge=1, le=65535, description="Container port serving HTTP.")
    liveness_path: str = Field("/healthz", description="HTTP path of the liveness probe.")
    readiness_path: str = Field("/readyz", description="HTTP path of the readiness (and startup) probe.")

    @field_validator("liveness_path", "readiness_path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() for c in v):
            raise ValueError("must be an absolute HTTP path without spaces")
        return v


class ImageEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="Container image reference.")
    port: Optional[int] = Field(None, ge=1, le=65535)
    liveness_path: Optional[str] = None
    readiness_path: Optional[str] = None
    args: list[str] = Field(default_factory=list, description="Container args.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        v = v.strip()
        if not _IMAGE.match(v) or len(v) > 512:
            raise ValueError(f"not a valid image reference: {v!r}")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not _ENV_NAME.match(k):
                raise ValueError(f"invalid environment variable name {k!r}")
        return {k: str(x) for k, x in v.items()}


class ImageMapFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(1, description="Format version (1).")
    defaults: ServeDefaults = Field(default_factory=ServeDefaults)
    images: dict[str, dict[str, Any]] = Field(
        description="engine -> architecture (or `*`) -> image reference or entry mapping."
    )

    @field_validator("images")
    @classmethod
    def _entries(cls, v: dict) -> dict:
        out = {}
        for engine, archs in v.items():
            if not archs:
                raise ValueError(f"engine {engine!r} lists no architecture")
            out[engine] = {}
            for arch, x in archs.items():
                try:
                    out[engine][arch] = ImageEntry(image=x) if isinstance(x, str) else ImageEntry.model_validate(x)
                except ValidationError as e:
                    err = e.errors()[0]
                    loc = ".".join(str(p) for p in err.get("loc", ()))
                    msg = err.get("msg", "invalid").removeprefix("Value error, ")
                    raise ValueError(f"{engine}.{arch}{'.' + loc if loc else ''}: {msg}") from None
        return out

    @field_validator("version")
    @classmethod
    def _v(cls, v: int) -> int:
        if v != 1:
            raise ValueError("unsupported image map version (expected 1)")
        return v


@dataclass(frozen=True)
class ResolvedImage:
    image: str
    port: int
    liveness_path: str
    readiness_path: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default_factory=tuple)


class ImageMap:
    """Resolved view of an image map file."""

    def __init__(self, doc: ImageMapFile, source: str = "<memory>"):
        self.doc = doc
        self.source = source
        self._map = {
            e.strip().lower(): {a.strip().lower(): v for a, v in archs.items()} for e, archs in doc.images.items()
        }

    @classmethod
    def load(cls, path: str | Path | None = None) -> ImageMap:
        path = Path(path) if path is not None else DEFAULT_IMAGES
        data = load_structured(path)
        if not isinstance(data, dict):
            raise InputError("an image map must be a mapping with an `images` key", file=str(path))
        try:
            return cls(ImageMapFile.model_validate(data), source=str(path))
        except ValidationError as e:
            raise pydantic_error(e, file=str(path)) from None

    @classmethod
    def default(cls) -> ImageMap:
        return cls.load(DEFAULT_IMAGES)

    def engines(self) -> list[str]:
        return sorted(self._map)

    def resolve(self, engine: str, architecture: str) -> ResolvedImage:
        e, a = engine.strip().lower(), architecture.strip().lower()
        archs = self._map.get(e)
        if archs is None:
            raise InputError(
                f"no image for engine {engine!r} (known engines: {', '.join(self.engines())}); "
                f"add images.{e}.{a} to the image map",
                file=self.source,
                field=f"images.{e}",
            )
        entry = archs.get(a, archs.get("*"))
        if entry is None:
            raise InputError(
                f"no image for engine {engine!r} on architecture {architecture!r}; add images.{e}.{a} to the image map",
                file=self.source,
                field=f"images.{e}.{a}",
            )
        if isinstance(entry, str):
            entry = ImageEntry(image=entry)
        d = self.doc.defaults
        return ResolvedImage(
            image=entry.image,
            port=entry.port or d.port,
            liveness_path=entry.liveness_path or d.liveness_path,
            readiness_path=entry.readiness_path or d.readiness_path,
            args=tuple(entry.args),
            env=tuple(sorted(entry.env.items())),
        )
