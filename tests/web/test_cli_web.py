"""`renewald web`: the status page without a daemon; loopback unless given a token."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from tests.e2e.conftest import RENEWALD, Renewald
from tests.waiting import wait_for


def test_web_serves_loopback_and_refuses_an_open_bind(tmp_path: Path) -> None:
    r = Renewald(tmp_path, f"sqlite:///{tmp_path / 'artifact.db'}")
    assert r.run("migrate").returncode == 0
    job = r.enqueue("conv-cli", "hello")

    refused = r.run("web", "--listen", "0.0.0.0:0", timeout=30)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "token" in refused.stderr

    err = tmp_path / "web.err"
    with open(err, "w") as fh:
        proc = subprocess.Popen(
            [RENEWALD, "web", "--listen", "127.0.0.1:0"], env=r.env, cwd=tmp_path, stderr=fh
        )
    try:
        line = wait_for(lambda: "status page on" in err.read_text() and err.read_text())
        base = line.split("status page on ", 1)[1].split()[0].rstrip("/")
        with urllib.request.urlopen(f"{base}/jobs/{job}", timeout=10) as resp:
            assert resp.status == 200
            assert job in resp.read().decode()
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_web_with_a_token_on_an_open_bind(tmp_path: Path) -> None:
    r = Renewald(tmp_path, f"sqlite:///{tmp_path / 'artifact.db'}")
    assert r.run("migrate").returncode == 0
    r.extra_env["PAGE_TOKEN"] = ""
    empty = r.run("web", "--listen", "0.0.0.0:0", "--token-env", "PAGE_TOKEN", timeout=30)
    assert empty.returncode == 2 and "PAGE_TOKEN" in empty.stderr
    r.extra_env["RENEWALD_HTTP_TOKEN"] = "s3cret"
    err = tmp_path / "web.err"
    with open(err, "w") as fh:
        proc = subprocess.Popen(
            [RENEWALD, "web", "--listen", "0.0.0.0:0"], env=r.env, cwd=tmp_path, stderr=fh
        )
    try:
        line = wait_for(lambda: "status page on" in err.read_text() and err.read_text())
        port = line.split("status page on ", 1)[1].split()[0].rstrip("/").rsplit(":", 1)[1]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/", headers={"Authorization": "Bearer s3cret"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
            raise AssertionError("served without the token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)
