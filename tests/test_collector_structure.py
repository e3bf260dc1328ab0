"""The collector's structure: one job per module, no import circle inside the package,
no class past ~300 lines, the schedule and run.json's keys spelled once."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
from pathlib import Path

import pytest

from trainscope.collectors import CollectorConfig
from trainscope.collectors.cadence import StatsCadence
from trainscope.collectors.plan import plan_step
from trainscope.logformat import runjson as RJ
from trainscope.logformat.schedule import Schedule

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "collectors"
PACKAGE_NAME = "trainscope.collectors"  # as its modules import each other
# A class this long has more than one job (the collector's was 829 lines).
MAX_CLASS_LINES = 320


def _imports_inside_package(path: Path) -> set[str]:
    """The collectors modules that `path` imports at its top level or in functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE_NAME:
                found.update(alias.name for alias in node.names)
            elif node.module.startswith(f"{PACKAGE_NAME}."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith(f"{PACKAGE_NAME}."))
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_inside_the_package():
    graph = {
        p.stem: _imports_inside_package(p) - {p.stem} for p in PACKAGE.glob("*.py") if p.stem != "__init__"
    }
    assert _cycle(graph) is None, _cycle(graph)
    # and the check finds one where there is one
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_class_in_the_package_is_long():
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                assert lines <= MAX_CLASS_LINES, f"{path.name}: class {node.name} has {lines} lines"


def test_the_schedule_is_spelled_once():
    """No step arithmetic on `every` outside logformat/schedule.py: the collector and the
    readers ask the schedule."""
    raw = re.compile(r"%\s*(self\.)?(config\.|cfg\.|_config\.)?(every|noise_window|histogram_every)\b")
    for path in [*PACKAGE.glob("*.py"), ROOT / "analyzers" / "reading" / "shards.py"]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not raw.search(line), f"{path.name}:{number}: {line.strip()}"


@pytest.mark.parametrize("every, window", [(50, 5), (7, 12), (1, 5), (4, 3)])
def test_the_noise_window_opens_at_a_sampled_step_and_closes_once(every, window):
    schedule = Schedule(every, window, 500)
    for start in range(0, 200, every):
        inside = [s for s in range(start, start + every) if schedule.in_noise_window(s)]
        assert inside == list(range(start, start + min(every, window)))
        assert schedule.is_sampled(inside[0])
        assert [s for s in inside if schedule.closes_noise_window(s)] == [inside[-1]]


def test_the_readers_rebuild_the_schedule_from_run_json():
    config = CollectorConfig(every=7, noise_window=12, histogram_every=21)
    settings = json.loads(json.dumps(config.to_dict()))
    assert Schedule.from_settings(settings) == config.schedule
    setting_keys = {v for k, v in vars(RJ).items() if k.startswith("S_")} - {RJ.S_LAYERS}
    assert setting_keys <= {f.name for f in dataclasses.fields(CollectorConfig)}


def test_a_step_plan_is_a_function_of_step_settings_and_cadence():
    config = CollectorConfig(stats_every=4, stats_budget=None, every=10, noise_window=3, histogram_every=20)
    cadence = StatsCadence(config.stats_every, None)
    plans = {step: plan_step(step, config, cadence, True) for step in range(60)}
    assert plans == {step: plan_step(step, config, cadence, True) for step in range(60)}
    quiet = [s for s, plan in plans.items() if plan.quiet and s < 40]
    assert quiet == [s for s in range(40) if s % 4 and s % 10 >= 3]
    for step in quiet:  # a quiet plan holds until the next step that reads something
        until = plans[step].until
        assert all(plans[s].quiet for s in range(step, until)) and not plans[until].quiet
    assert not any(plan.quiet for plan in (plan_step(s, config, cadence, False) for s in range(40)))


def test_non_finite_numbers_follow_one_policy(tmp_path):
    """run.json is strict JSON: NaN and Inf as the strings the CLI's JSON uses too."""
    RJ.write_run_json(tmp_path, {"a": math.nan, "b": [math.inf, -math.inf], "c": {1: 2.5}})
    text = (tmp_path / RJ.RUN_JSON).read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in run.json"))
    assert data == {"a": "NaN", "b": ["Infinity", "-Infinity"], "c": {"1": 2.5}}
    assert math.isnan(float(data["a"])) and float(data["b"][1]) == -math.inf
