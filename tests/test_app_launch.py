"""The dashboard listens on this machine only and sends no usage statistics, started from any
working directory (issue 22): Streamlit reads ``.streamlit/config.toml`` from the working
directory, so started elsewhere it listened on every interface. Real servers, started from a
directory that is not the checkout; the sockets they listen on are read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainscope.app.serve import APP, free_port, stop, wait_until_healthy
from trainscope.sample_runs import RUNS_DIR

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/net/tcp"), reason="reads listening sockets from /proc"
)

LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1 as /proc/net writes them


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} writes them) of the sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def _serve(command: list[str], cwd: Path, port: int, log: Path, env: dict | None = None):
    """Start `command`, wait for its health check; returns (process, listening addresses, output)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_healthy(f"http://localhost:{port}", proc, log, timeout=60)
        return _listening(port), log.read_text()
    finally:
        stop(proc)


def _env(home: Path) -> dict:
    # A HOME without ~/.streamlit: no global config to lean on.
    return dict(os.environ, HOME=str(home))


def test_the_launcher_binds_localhost_from_another_directory(tmp_path):
    port = free_port()
    command = [sys.executable, str(APP.parent), "--port", str(port), "--headless", "--logdir", str(RUNS_DIR)]
    addresses, output = _serve(command, tmp_path, port, tmp_path / "server.log", _env(tmp_path))
    assert addresses and addresses <= LOOPBACK, addresses
    assert "Network URL" not in output and "External URL" not in output
    assert "Collecting usage statistics" not in output


def test_streamlit_run_of_the_app_from_another_directory_binds_localhost(tmp_path):
    """Without the launcher and without a flag: the config beside the script holds."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--",
        "--logdir",
        str(RUNS_DIR),
    ]
    addresses, output = _serve(command, tmp_path, port, tmp_path / "server.log", _env(tmp_path))
    assert addresses and addresses <= LOOPBACK, addresses
    assert "Collecting usage statistics" not in output


def test_serving_other_machines_is_an_explicit_choice(tmp_path):
    port = free_port()
    command = [
        sys.executable,
        str(APP.parent),
        "--port",
        str(port),
        "--headless",
        "--address",
        "0.0.0.0",
        "--logdir",
        str(RUNS_DIR),
    ]
    addresses, _ = _serve(command, tmp_path, port, tmp_path / "server.log", _env(tmp_path))
    assert "00000000" in addresses  # every IPv4 interface
