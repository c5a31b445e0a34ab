"""Start ``mask2former serve`` as a real subprocess on a free loopback port (test helper)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_MODEL = os.path.join(ROOT, "models", "demo-street")
STREET = os.path.join(ROOT, "examples", "street.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log_path: str):
        self.proc, self.url, self.log_path = proc, url, log_path

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextlib.contextmanager
def launch(cmd: list[str], port: int, log_path: str, threads: int = 1, ready_timeout: float = 180) -> Iterator[Server]:
    """Run ``cmd`` (a server on ``port``) until its /readyz answers 200; SIGTERM on exit."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": ROOT}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {ready_timeout} s:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve(*args: str, model: str = DEMO_MODEL, log_dir: str = "",
          threads: int = 1) -> "contextlib.AbstractContextManager[Server]":
    """``mask2former serve --model MODEL ARGS`` on a free port."""
    port = free_port()
    log_path = os.path.join(log_dir or os.environ.get("TMPDIR", "/tmp"), f"serve-{port}.log")
    cmd = [sys.executable, "-m", "mask2former.cli", "serve", "--model", model, "--port", str(port), *args]
    return launch(cmd, port, log_path, threads)
