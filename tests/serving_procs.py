"""Real ``synergai serve`` / ``synergai gateway`` processes on loopback addresses for the request-path tests.

Every process is started with a port file, waited for (readiness, bounded), and stopped (SIGTERM, then
SIGKILL) by :func:`stop_all` / the context manager; nothing listens beyond 127.0.0.0/8.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

ENTRY = [sys.executable, "-m", "synergai.executor.serving_cli"]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


class Proc:
    def __init__(
        self,
        kind: str,
        args: list[str],
        host: str = "127.0.0.1",
        ready_path: str = "/readyz",
        env: Optional[dict] = None,
        port: int = 0,
        log_dir: Optional[str] = None,
    ):
        self.kind, self.host = kind, host
        self.dir = Path(log_dir or tempfile.mkdtemp(prefix=f"synergai-{kind}-"))
        self.port_file = self.dir / f"{kind}-{os.getpid()}-{time.monotonic_ns()}.port"
        self.log_path = self.dir / f"{self.port_file.stem}.log"
        self.args = [
            *ENTRY,
            kind,
            *args,
            "--host",
            host,
            "--port",
            str(port),
            "--port-file",
            str(self.port_file),
            "--log-level",
            "warning",
        ]
        self.ready_path = ready_path
        self.env = {**os.environ, **(env or {})}
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0, wait_ready: bool = True) -> Proc:
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: {self.tail()}")
            if self.port is None and self.port_file.exists():
                txt = self.port_file.read_text().strip()
                if txt:
                    self.port = int(txt)
            if self.port is not None and (not wait_ready or http_get(self.url + self.ready_path)[0] == 200):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.kind} not ready within {timeout:.0f}s: {self.tail()}")

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL (a server dying), no cleanup."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        try:
            self.log.close()
        except Exception:
            pass


class Procs:
    """A set of processes stopped together (context manager)."""

    def __init__(self):
        self.items: list[Proc] = []

    def serve(self, args: list[str], host: str = "127.0.0.1", **kw) -> Proc:
        p = Proc("serve", args, host=host, **kw)
        self.items.append(p)
        return p.start()

    def gateway(self, args: list[str], host: str = "127.0.0.1", **kw) -> Proc:
        p = Proc("gateway", args, host=host, **kw)
        self.items.append(p)
        return p.start()

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc) -> None:
        for p in reversed(self.items):
            p.stop()
