"""Start the dashboard on a free localhost port and wait until it answers.

For what drives the dashboard from outside (the browser test, the dashboard
benchmark): one way to launch it, with the flags a headless local run needs, and a
failure that carries the server's own last words.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parent / "main.py"
ROOT = APP.parents[1]


class DashboardDidNotStart(RuntimeError):
    """`streamlit run` exited or did not answer its health check in time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_dashboard(logdir: str | os.PathLike[str], log_path: Path, timeout: float = 45.0) -> Iterator[str]:
    """Yield the URL of `streamlit run app/main.py -- --logdir LOGDIR` bound to 127.0.0.1;
    its output goes to `log_path`; the server is always stopped afterwards."""
    port = free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--", "--logdir", os.fspath(logdir),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_healthy(url, proc, timeout, log, log_path)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_until_healthy(url: str, proc: subprocess.Popen, timeout: float, log, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.flush()
            raise DashboardDidNotStart(f"streamlit did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.25)
