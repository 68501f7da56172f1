"""``synergai daemon --token-file PATH``: the bearer token of ``POST /v1/assign`` from a file named on the
command line (``$SYNERGAI_TOKEN_FILE`` is only the default).

A real daemon process; its kubeconfig points at a closed port, so nothing reaches an API server (the
daemon serves HTTP before its first API call and keeps retrying the cluster in the background).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.timeout(120)

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: default}}]
current-context: x
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assign(port: int, token=None) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/assign",
        data=b'{"model": "resnet50"}',
        method="POST",
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture()
def daemon(tmp_path):
    from synergai import default_cluster, default_profiles, default_workload, plan_offline

    plan = tmp_path / "plan.json"
    plan_offline(default_profiles(), default_cluster(), default_workload(), time_limit=20).save(plan)
    kcfg = tmp_path / "kubeconfig"
    kcfg.write_text(KUBECONFIG)
    procs = []

    def start(*extra, env_token=None):
        port = _free_port()
        env = dict(os.environ)
        env.pop("SYNERGAI_TOKEN_FILE", None)
        if env_token:
            env["SYNERGAI_TOKEN_FILE"] = str(env_token)
        log = open(tmp_path / f"daemon-{port}.log", "wb")
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "synergai.cli",
                "daemon",
                "--plan-source",
                f"file:{plan}",
                "--namespace",
                "default",
                "--kubeconfig",
                str(kcfg),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *extra,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append((p, log))
        end = time.monotonic() + 60
        while time.monotonic() < end:
            assert p.poll() is None, (tmp_path / f"daemon-{port}.log").read_text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                return port
            except urllib.error.HTTPError:
                return port  # answering (unhealthy until the cluster is reachable)
            except OSError:
                time.sleep(0.1)
        raise AssertionError("daemon HTTP did not come up")

    yield start
    for p, log in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def test_token_file_flag_protects_assign(daemon, tmp_path):
    tok = tmp_path / "token"
    tok.write_text("flag-token-" + os.urandom(6).hex() + "\n")
    port = daemon("--token-file", str(tok))
    code, body = _assign(port)
    assert code == 401 and "missing or wrong bearer token" in body["error"], body
    code, body = _assign(port, "wrong")
    assert code == 401, body
    code, body = _assign(port, tok.read_text().strip())
    assert code != 401, body  # authorised (the daemon answers from its state: no cluster here)


def test_token_file_flag_wins_over_the_environment(daemon, tmp_path):
    flag, env = tmp_path / "flag-token", tmp_path / "env-token"
    flag.write_text("from-the-flag")
    env.write_text("from-the-env")
    port = daemon("--token-file", str(flag), env_token=env)
    assert _assign(port, "from-the-env")[0] == 401
    assert _assign(port, "from-the-flag")[0] != 401
    # without the flag the environment still names the file
    port = daemon(env_token=env)
    assert _assign(port, "from-the-env")[0] != 401
