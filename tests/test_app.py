"""The dashboard, run headless with Streamlit's AppTest: every page renders, for every kind of log dir.

AppTest does not fire `st.fragment(run_every=...)` timers; the live tests call `run()`
again, which is what a timer tick does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from trainscope.app import links
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T
from trainscope.logformat.events import EventFileWriter, summary_record
from trainscope.sample_runs import RUNS_DIR

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "main.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RUN_PAGE, COMPARE_PAGE = "views/run.py", "views/compare.py"
TIMEOUT = 60  # seconds per script run; a page takes about one on a laptop


def start(logdir: str | os.PathLike[str] | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if logdir is not None:
        at.session_state["logdir"] = str(logdir)
    return at.run()


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def text(at: AppTest) -> str:
    """Everything the page says, as one string."""
    parts = []
    for kind in (
        "title",
        "header",
        "subheader",
        "markdown",
        "caption",
        "info",
        "warning",
        "success",
        "error",
    ):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def run_names(table) -> list[str]:
    """The run names of a runs table, whose run column holds the links to the runs' pages."""
    return [links.run_of(url) for url in table["run"]]


def write_run(run_dir: Path, steps: range, *, status: str = RJ.STATUS_RUNNING, every: int = 10) -> None:
    """A small TrainScope-shaped run: loss, accuracy, lr and two layers' gradient norms every step."""
    writer = EventFileWriter(run_dir)
    records = []
    for s in steps:
        scalars = {
            T.TRAIN_LOSS: 2.3 / (1 + s / 50),
            T.TRAIN_ACC: min(1.0, s / 300),
            T.LR: 0.1,
            T.GRAD_GLOBAL_NORM: 1.0,
            T.grad_norm_tag("0"): 0.1,
            T.grad_norm_tag("2"): 1.0,
        }
        if s % every == 0:
            scalars[T.update_ratio_tag("0")] = 1e-3
        records.append(summary_record(s, 1.7e9 + s, scalars))
    writer.write(records)
    writer.close()
    RJ.write_run_json(run_dir, {RJ.K_SCHEMA: RJ.SCHEMA_VERSION, RJ.K_STATUS: status})


# -- the sample runs ----------------------------------------------------------------


def test_opens_on_the_sample_runs_worst_first():
    at = clean(start())
    table = at.dataframe[0].value
    cases = sorted(p.name for p in RUNS_DIR.iterdir() if p.is_dir())
    assert sorted(run_names(table)) == cases
    order = {"critical": 0, "warning": 1, "not enough data yet": 2, "ok": 3}
    assert list(table["health"]) == sorted(table["health"], key=order.get)
    health = dict(zip(run_names(table), table["health"]))
    assert health["healthy_mlp"] == "ok" and health["lr_far_too_high_nan"] == "critical"
    assert at.metric[0].value == str(len(cases))


def test_selecting_a_run_shows_its_findings_advice_and_charts():
    at = start()
    at.switch_page(RUN_PAGE).run()
    at.selectbox(key="run").set_value("overfitting").run()
    clean(at)
    page = text(at)
    assert "Overfitting since step" in page
    assert "What to do" in page and "Source:" in page
    assert "](#loss)" in page  # the link to the chart where it shows
    subheaders = [s.value for s in at.subheader]
    assert subheaders[:3] == ["Loss", "Accuracy", "Gradient norms"]
    assert len(at.get("plotly_chart")) >= 8
    assert [b.label for b in at.download_button][:2] == ["Diagnosis as JSON", "Diagnosis as Markdown"]


def test_a_link_opens_a_run():
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["run"] = "underfitting"  # /run?run=underfitting
    at.run()
    at.switch_page(RUN_PAGE).run()
    assert clean(at).selectbox(key="run").value == "underfitting"


def test_the_inspect_hand_over_from_the_runs_page():
    at = start()
    at.session_state["run"] = "lr_far_too_high_nan"  # what the Runs page's Inspect button sets
    at.switch_page(RUN_PAGE).run()
    clean(at)
    assert at.selectbox(key="run").value == "lr_far_too_high_nan"
    assert "nonfinite" in text(at)


def test_every_sample_run_renders():
    at = start()
    at.switch_page(RUN_PAGE).run()
    for case in sorted(p.name for p in RUNS_DIR.iterdir() if p.is_dir()):
        at.selectbox(key="run").set_value(case).run()
        clean(at)
        assert at.title[0].value.replace("\\", "") == case


def test_compare_overlays_runs():
    at = start()
    at.switch_page(COMPARE_PAGE).run()
    at.multiselect(key="compare").set_value(["healthy_mlp", "overfitting", "lr_too_low"]).run()
    at.multiselect(key="metrics").set_value([T.VAL_LOSS]).run()
    clean(at)
    chart = at.get("plotly_chart")[0]
    assert chart.proto.spec  # a figure was sent
    table = at.dataframe[0].value
    assert run_names(table) == ["healthy_mlp", "overfitting", "lr_too_low"]


# -- bad and foreign log dirs -------------------------------------------------------


def test_a_nonexistent_dir_says_so(tmp_path):
    at = start(tmp_path / "nope")
    assert not at.exception
    assert "does not exist" in at.error[0].value


def test_a_file_is_not_a_log_dir(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("hello")
    at = start(path)
    assert not at.exception
    assert "not a directory" in at.error[0].value


def test_an_empty_dir_says_how_runs_get_there(tmp_path):
    at = clean(start(tmp_path))
    assert "No runs found" in at.info[0].value
    assert len(at.info) == 1 and not at.warning  # one message, not the reader's line beside it
    at.switch_page(RUN_PAGE).run()
    assert "No runs found" in clean(at).info[0].value


def test_a_corrupt_event_file_is_reported_and_the_rest_shown(tmp_path):
    write_run(tmp_path / "good", range(120), status=RJ.STATUS_FINISHED)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "events.out.tfevents.1700000000.host.1.0").write_bytes(os.urandom(4096))
    write_run(tmp_path / "half", range(80))
    event_file = next((tmp_path / "half").glob("events.out.tfevents.*"))
    with open(event_file, "ab") as fh:
        fh.write(os.urandom(2000))  # garbage after the last good record
    at = clean(start(tmp_path))
    assert sorted(run_names(at.dataframe[0].value)) == ["bad", "good", "half"]
    at.switch_page(RUN_PAGE).run()
    for name in ("bad", "half"):
        at.selectbox(key="run").set_value(name).run()
        clean(at)
        assert "reading problem" in text(at)


def test_what_the_collector_could_not_measure_is_shown_on_the_run_page(tmp_path, digits):
    """A run whose collector switched a part off (here: the optimizer given updates none
    of the model's parameters, so nothing per layer) says so on its page."""
    import torch
    from collector_helpers import mlp, train

    from trainscope.collectors import watch

    X, y = digits
    other_optimizer = torch.optim.SGD(mlp(seed=1).parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning):
        train(
            mlp(), X, y, steps=30, collector=lambda model, _: watch(model, other_optimizer, tmp_path / "run")
        )
    at = clean(start(tmp_path))
    at.switch_page(RUN_PAGE).run()
    clean(at)
    warning = next(w.value for w in at.warning if "collector reported" in w.value)
    assert "**The collector reported 1 problem(s)**" in warning
    assert "the optimizer updates none of the model" in warning


def test_a_data_parallel_run_shows_a_rank_s_batch_and_a_step_s_against_the_noise_scale(tmp_path):
    """run.json's batch size is one rank's; B_simple counts a step's examples, every
    rank's batch together: the noise chart's guide stands at the step's batch."""
    run_dir = tmp_path / "ddp"
    write_run(run_dir, range(300), status=RJ.STATUS_FINISHED)
    noise_file = EventFileWriter(run_dir, ".noise")
    noise_file.write([summary_record(s, 1.7e9 + s, {T.GRAD_NOISE_SCALE: 500.0}) for s in range(4, 300, 50)])
    noise_file.close()
    meta = {RJ.K_SCHEMA: RJ.SCHEMA_VERSION, RJ.K_STATUS: RJ.STATUS_FINISHED, RJ.K_BATCH_SIZE: 16}
    RJ.write_run_json(run_dir, meta | {RJ.K_WORLD_SIZE: 4, RJ.K_DATA_PARALLEL: 4})
    at = clean(start(tmp_path))
    at.switch_page(RUN_PAGE).run()
    clean(at)
    assert "batch size: 16 per rank × 4 ranks" in text(at)
    specs = [chart.proto.spec for chart in at.get("plotly_chart")]
    (noise,) = [spec for spec in specs if "B_simple" in spec]
    assert "batch of a step 64 (4 ranks)" in noise and "batch size 16" not in noise


def test_foreign_logs_render_and_say_what_they_lack():
    at = clean(start(FIXTURES))
    names = set(run_names(at.dataframe[0].value))
    assert {"lightning/tb/version_0", "lightning/csv/version_0", "hf_trainer", "keras"} <= names
    at.switch_page(RUN_PAGE).run()
    for name in ("lightning/tb/version_0", "lightning/csv/version_0", "hf_trainer", "keras"):
        at.selectbox(key="run").set_value(name).run()
        clean(at)
        page = text(at)
        assert "Not in this run's log" in page  # e.g. no per-layer gradient norms: said once, at the end
        assert any("could not run on this run" in e.label for e in at.expander)  # skipped rules, with reasons
        subheaders = [h.value for h in at.subheader]
        assert "Loss" in subheaders and "Update / weight ratio" not in subheaders
        assert subheaders[-1] == "Not in this run's log"
        assert ("Gradient norms" in subheaders) == (name == "hf_trainer")  # HF logs the global gradient norm


def test_text_from_logs_is_shown_as_text(tmp_path):
    name = "**bold** [x](javascript:alert(1)) <b>hi</b> :red[x]"
    write_run(tmp_path / name, range(60))
    at = start(tmp_path)
    assert not at.exception
    at.switch_page(RUN_PAGE).run()
    clean(at)
    title = at.title[0].value
    assert "\\*\\*bold\\*\\*" in title and "\\[x\\]\\(javascript" in title and "\\<b\\>" in title
    assert all("](javascript" not in m.value for m in at.markdown)


# -- live -----------------------------------------------------------------------------


def test_live_refresh_reads_what_was_appended(tmp_path):
    run_dir = tmp_path / "growing"
    write_run(run_dir, range(0, 100))
    at = start(tmp_path)
    at.toggle(key="live").set_value(True).run()
    at.switch_page(RUN_PAGE).run()
    clean(at)
    assert at.metric[0].value == "99"
    write_run(run_dir, range(100, 400))  # a second event file, as a resumed run writes
    at.run()  # what the fragment's timer does every few seconds
    clean(at)
    assert at.metric[0].value == "399"
    assert "updated" in " ".join(c.value for c in at.caption)
    assert "live: checking every" in " ".join(c.value for c in at.caption)


def test_live_with_the_collector_curves_grow_and_advice_changes(tmp_path, digits):
    torch = pytest.importorskip("torch")
    from trainscope.collectors import watch

    X, y = digits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, optimizer, log_dir=tmp_path / "digits", every=10, histogram_every=50)

    def train(steps: int) -> None:
        for _ in range(steps):
            idx = torch.randint(0, X.shape[0], (32,))
            optimizer.zero_grad()
            out = model(X[idx])
            loss = torch.nn.functional.cross_entropy(out, y[idx])
            loss.backward()
            optimizer.step()
            collector.step(loss=loss, outputs=out, targets=y[idx], inputs=X[idx])
        collector.flush(wait=True)

    try:
        train(20)
        at = start(tmp_path)
        at.switch_page(RUN_PAGE).run()
        clean(at)
        first = int(at.metric[0].value.replace(",", ""))
        before = text(at)
        assert "wait for more data" in before  # 20 steps: most checks cannot judge yet
        train(220)
        at.run()
        clean(at)
        assert int(at.metric[0].value.replace(",", "")) > first + 200
        assert text(at) != before
    finally:
        collector.close()


# -- the app never imports torch ------------------------------------------------------


def test_the_app_never_imports_torch():
    script = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(APP)!r}, default_timeout={TIMEOUT}).run()\n"
        "at.switch_page('views/run.py').run()\n"
        "assert not at.exception, at.exception\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_diagnoses_are_made_again_only_for_runs_that_changed(tmp_path, monkeypatch):
    from trainscope.analyzers.reading import LogDirReader
    from trainscope.app import data

    write_run(tmp_path / "a", range(100))
    write_run(tmp_path / "b", range(100))
    made = []
    real = data.diagnose_run
    monkeypatch.setattr(data, "diagnose_run", lambda run: made.append(run.name) or real(run))
    logdir = data.LogDir(LogDirReader(tmp_path))
    first = data.diagnoses(logdir, logdir.refresh())
    again = data.diagnoses(logdir, logdir.refresh())
    assert all(first[n] is again[n] for n in first) and sorted(made) == ["a", "b"]
    write_run(tmp_path / "b", range(100, 200))
    third = data.diagnoses(logdir, logdir.refresh())
    assert third["a"] is first["a"] and third["b"] is not first["b"]
    assert sorted(made) == ["a", "b", "b"]


def test_a_run_page_shows_the_root_cause_with_its_symptoms_under_it():
    """bad_init_scale: the initialization is the root; the dead ReLUs it caused are folded under it."""
    at = start()
    at.switch_page(RUN_PAGE).run()
    at.selectbox(key="run").set_value("bad_init_scale").run()
    page = text(clean(at))
    assert "**Root cause** · explains: dead ReLUs in 2 layers" in page
    symptoms = [e for e in at.expander if "symptom(s) of this cause" in e.label]
    assert len(symptoms) == 1 and "2 symptom(s)" in symptoms[0].label
    assert "*explained by* `bad_initialization`" in page
    assert page.index("Initial weight scale too small") < page.index("Dead ReLUs")


def test_the_runs_table_names_each_run_s_top_root_cause():
    at = clean(start())
    table = at.dataframe[0].value
    row = table[[n == "bad_init_scale" for n in run_names(table)]].iloc[0]
    assert row["most severe finding"].startswith("Initial weight scale too small")
    assert row["explains"] == "dead ReLUs in 2 layers"
