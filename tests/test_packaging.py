"""The installed package: one `trainscope` namespace in site-packages, a console script,
and the sample runs shipped with it.

A wheel is built from a copy of the checkout and installed into a fresh venv beside a
user's own packages named `collectors` and `analyzers` (the names our folders have in
the repository): both import, the command diagnoses the bundled sample runs, and the
dashboard opens on them from a directory that is not the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+: reads the package map from pyproject.toml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS = PYPROJECT["tool"]["setuptools"]["package-dir"]  # installed name -> folder
SHIPPED = ["pyproject.toml", "README.md", *sorted(set(PACKAGE_DIRS.values()))]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy (the build writes `build/` beside its sources)."""
    src = tmp_path_factory.mktemp("src")
    for name in SHIPPED:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, src],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("trainscope-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel; its dependencies (numpy, torch, streamlit, ...) are
    reached through a path entry to this interpreter's site-packages, which adds no
    trainscope: a path entry's own .pth files (our editable install) are not run."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", home], check=True)
    python = home / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
        check=True,
        capture_output=True,
    )
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    dependencies = [p for p in sys.path if Path(p).name == "site-packages"]
    (Path(purelib) / "dependencies.pth").write_text("\n".join(dependencies) + "\n")
    return home


def _run(venv: Path, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _user_project(tmp_path: Path) -> Path:
    """A user's project with packages that share our folders' names."""
    for name in ("collectors", "analyzers"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"OWNER = 'user {name}'\n")
    return tmp_path


def test_wheel_holds_one_top_level_package_with_every_module_and_the_sample_runs(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"trainscope", wheel.name.split("-py3")[0] + ".dist-info"}
    for installed, folder in PACKAGE_DIRS.items():
        prefix = installed.replace(".", "/")
        for source in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in source.parts:
                assert f"{prefix}/{source.relative_to(ROOT / folder).as_posix()}" in names, source
    assert sum(n.startswith("trainscope/sample_runs/runs/") and n.endswith("run.json") for n in names) >= 20
    entry_points = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py3')[0]}.dist-info/entry_points.txt")
    assert b"trainscope = trainscope.cli:main" in entry_points


def test_installed_package_imports_beside_a_user_package_named_collectors(venv: Path, tmp_path: Path) -> None:
    project = _user_project(tmp_path)
    code = (
        "import collectors, analyzers, trainscope\n"
        "from trainscope import watch\n"
        "from trainscope.analyzers.reading import read_logdir\n"
        "import trainscope.collectors\n"
        "assert collectors.OWNER == 'user collectors' and analyzers.OWNER == 'user analyzers'\n"
        "assert trainscope.collectors.watch is watch\n"
        "print(trainscope.__file__)\n"
    )
    result = _run(venv, project, str(venv / "bin" / "python"), "-c", code)
    assert result.returncode == 0, result.stderr
    assert str(venv) in result.stdout and str(ROOT) not in result.stdout


def test_console_script_diagnoses_the_bundled_sample_runs(venv: Path, tmp_path: Path) -> None:
    python = str(venv / "bin" / "python")
    runs = _run(venv, tmp_path, python, "-c", "from trainscope.sample_runs import RUNS_DIR; print(RUNS_DIR)")
    assert runs.returncode == 0, runs.stderr
    runs_dir = runs.stdout.strip()
    assert runs_dir.startswith(str(venv))
    result = _run(venv, _user_project(tmp_path), str(venv / "bin" / "trainscope"), "diagnose", runs_dir)
    assert result.returncode == 0, result.stderr
    assert "summary:" in result.stdout and "critical" in result.stdout
    usage = _run(venv, tmp_path, str(venv / "bin" / "trainscope"), "diagnose")
    assert usage.returncode == 2 and "trainscope diagnose" in usage.stderr


def test_installed_dashboard_opens_on_the_bundled_sample_runs_outside_the_checkout(
    venv: Path, tmp_path: Path
) -> None:
    """The app as installed (no sys.path edits, no checkout), run headlessly."""
    code = (
        "from pathlib import Path\n"
        "import trainscope.app\n"
        "from streamlit.testing.v1 import AppTest\n"
        "at = AppTest.from_file(str(Path(trainscope.app.__file__).parent / 'main.py'), default_timeout=60).run()\n"
        "assert not at.exception, at.exception\n"
        "cells = [str(v) for d in at.dataframe for v in d.value.to_numpy().ravel()]\n"
        "assert any('overfitting' in c for c in cells) and any('healthy_mlp' in c for c in cells), cells[:50]\n"
    )
    result = _run(venv, _user_project(tmp_path), str(venv / "bin" / "python"), "-c", code, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_installed_command_serves_the_sample_runs_on_localhost(venv: Path, tmp_path: Path) -> None:
    """`trainscope dashboard` with no argument, outside the checkout: it answers, on loopback only."""
    from test_app_launch import LOOPBACK, _serve

    from trainscope.app.serve import free_port

    port = free_port()
    command = [str(venv / "bin" / "trainscope"), "dashboard", "--headless", "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")} | {
        "HOME": str(tmp_path)
    }
    addresses, output = _serve(command, _user_project(tmp_path), port, tmp_path / "server.log", env)
    assert addresses and addresses <= LOOPBACK, (addresses, output)


def test_the_dashboard_without_the_app_extra_says_what_to_install(wheel: Path, tmp_path: Path) -> None:
    """The core installed alone (no Streamlit): one line naming the extra, no traceback."""
    home = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", home], check=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            home / "bin" / "python",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            wheel,
        ],
        check=True,
        capture_output=True,
    )
    result = _run(home, tmp_path, str(home / "bin" / "trainscope"), "dashboard", "--headless")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "trainscope dashboard: plotly is not installed: pip install 'trainscope[app]'"
    ]
