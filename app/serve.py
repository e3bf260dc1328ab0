"""How the dashboard is launched: on localhost, with Streamlit's usage statistics off.

Streamlit reads ``.streamlit/config.toml`` from the working directory (and, in the
pinned release, from beside the script: ``app/.streamlit/config.toml``), so started
from anywhere else with ``streamlit run``, it listened on every interface and sent
usage statistics. The launcher here passes both settings as flags, which outrank every
config file and environment variable, whatever the working directory::

    python -m app [--logdir DIR] [--port 8501] [--address localhost]

Serving other machines is an explicit choice: ``--address 0.0.0.0`` (``make dashboard
ADDRESS=0.0.0.0``). `local_dashboard` starts it on a free localhost port and waits
until it answers, for what drives the dashboard from outside (the browser test, the
dashboard benchmark), with a failure that carries the server's own last words.
"""

from __future__ import annotations

import argparse
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
# Where the dashboard listens unless told otherwise: this machine only.
DEFAULT_ADDRESS = "localhost"
DEFAULT_PORT = 8501


def streamlit_flags(address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT) -> list[str]:
    """The ``streamlit run`` flags of every launch: the address and port, usage statistics off."""
    return [
        "--server.address", address,
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m app``: the dashboard on `DEFAULT_ADDRESS` unless ``--address`` says otherwise."""
    parser = argparse.ArgumentParser(prog="python -m app", description="TrainScope's dashboard.")
    parser.add_argument("--logdir", help="log dir to open (default: the bundled sample runs)")
    parser.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help="address to listen on (default: localhost; 0.0.0.0 serves other machines)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: 8501)")
    parser.add_argument("--headless", action="store_true", help="do not open a browser")
    args = parser.parse_args(argv)
    from streamlit.web import cli as streamlit_cli

    command = ["run", str(APP), *streamlit_flags(args.address, args.port)]
    if args.headless:
        command += ["--server.headless", "true"]
    if args.logdir is not None:
        command += ["--", "--logdir", os.path.abspath(args.logdir)]
    return streamlit_cli.main(args=command, prog_name="streamlit", standalone_mode=False) or 0


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
        sys.executable, "-m", "streamlit", "run", str(APP), *streamlit_flags("127.0.0.1", port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--", "--logdir", os.fspath(logdir),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(url, proc, log_path, timeout)
            yield url
        finally:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """Stop a dashboard server: asked first, killed if it has not exited in 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_until_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 45.0) -> None:
    """Return once the server at `url` answers its health check; raise `DashboardDidNotStart`,
    with the last of its output (`log_path`), if `proc` exits or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DashboardDidNotStart(f"streamlit did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.25)
