"""The run page (issue 21): charts drawn after the findings, those the findings point at first;
one x axis for every chart; the heatmap at the steps measured; a chart's series as CSV.

Real sample runs and real foreign logs (tests/fixtures), the app run with AppTest.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from trainscope.analyzers.diagnose import diagnose_run
from trainscope.analyzers.reading import read_logdir
from trainscope.analyzers.run import Series
from trainscope.app import catalog as C
from trainscope.app import figures as F
from trainscope.app import xaxis as X
from trainscope.app.csvdata import series_csv, series_frame
from trainscope.app.sections import charts
from trainscope.logformat import tags as T
from trainscope.sample_runs import RUNS_DIR

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "main.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RUN_PAGE, COMPARE_PAGE = "views/run.py", "views/compare.py"
TIMEOUT = 60


def open_run(name: str, logdir: Path | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if logdir is not None:
        at.session_state["logdir"] = str(logdir)
    at.run()
    at.session_state["run"] = name
    at.switch_page(RUN_PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


# -- the order charts are drawn in --------------------------------------------------


def test_the_charts_the_findings_point_at_are_drawn_first():
    run = read_logdir(RUNS_DIR).runs["vanishing_gradients"]
    d = diagnose_run(run)
    available = [chart for chart in C.CHARTS if chart.available(run)]
    order = charts.drawing_order(available, [*d.roots, *d.findings], run)
    assert sorted(order, key=available.index) == available  # every chart, once
    pointed = {chart for f in d.findings for chart in C.charts_of(f.rule, run)}
    assert set(order[: len(pointed)]) == pointed and C.GRADIENTS in pointed
    assert order[0] in C.charts_of(d.roots[0].rule, run)  # the worst root cause's chart leads


def test_every_chart_s_place_is_filled_no_loading_note_is_left():
    at = open_run("lr_far_too_high_nan")
    assert charts.DRAWING not in [c.value for c in at.caption]
    titles = [s.value for s in at.subheader]
    assert titles[:3] == ["Loss", "Accuracy", "Gradient norms"]  # page order, whatever the drawing order


# -- the x axis ----------------------------------------------------------------------


def test_the_axes_a_run_offers():
    runs = read_logdir(FIXTURES).runs
    assert X.choices(runs["lightning/tb/version_0"]) == [X.STEP, X.EPOCH, X.WALL, X.RELATIVE]
    assert X.choices(runs["lightning/csv/version_0"]) == [X.STEP, X.EPOCH]  # a CSV has no clock
    assert X.EPOCH in X.choices(runs["hf_trainer"])  # the Trainer's train/epoch
    sample = read_logdir(RUNS_DIR).runs["healthy_mlp"]
    assert X.choices(sample) == [X.STEP, X.WALL, X.RELATIVE]


def epoch_of(run, steps: np.ndarray) -> np.ndarray:
    """The whole epoch Lightning logged at each of `steps` (all of them logged with the epoch count)."""
    epochs = X.epoch_series(run)
    return epochs.values[np.searchsorted(epochs.steps, steps)]


def test_epoch_places_a_step_by_its_fraction_through_a_whole_epoch():
    """Lightning counts whole epochs (0, 0, 0, 1, ...): a step goes to its epoch plus the part of it
    done, so an epoch's points no longer stack on one vertical line."""
    run = read_logdir(FIXTURES).runs["lightning/tb/version_0"]
    axis = X.Axis.of(run, X.EPOCH)
    loss = run.scalar(T.TRAIN_LOSS)
    placed = axis.along(loss, T.TRAIN_LOSS)
    assert np.array_equal(placed.values, loss.values)
    epoch = epoch_of(run, loss.steps)
    assert np.all(np.diff(placed.steps) > 0)  # one x per point, in step order
    assert np.all((placed.steps > epoch) & (placed.steps <= epoch + 1))  # each inside its own epoch
    # 15 steps an epoch, logged every 5th from step 4: a third of epoch 0 is done at step 4.
    assert np.allclose(placed.steps[:4], [1 / 3, 2 / 3, 1.0, 4 / 3])
    assert axis.at(int(loss.steps[-1])) == epoch[-1] + 1  # the run's last step ends its last epoch


def test_lightning_csv_trains_along_each_epoch_and_validates_at_its_end():
    run = read_logdir(FIXTURES).runs["lightning/csv/version_0"]
    axis = X.Axis.of(run, X.EPOCH)
    train = axis.along(run.scalar(T.TRAIN_LOSS), T.TRAIN_LOSS).steps
    epoch = epoch_of(run, run.scalar(T.TRAIN_LOSS).steps)
    for e in np.unique(epoch):
        within = train[epoch == e]
        assert len(within) > 1 and np.all(np.diff(within) > 0) and within.min() > e
    assert np.all(np.diff(train) > 0)  # and the epochs in order
    val = run.scalar(T.VAL_LOSS)  # logged at the last step of each epoch
    assert np.array_equal(axis.along(val, T.VAL_LOSS).steps, epoch_of(run, val.steps) + 1)


def test_a_run_in_the_middle_of_an_epoch_stays_inside_it():
    """The live case: the last epoch's end is not logged yet; its steps run on at the length of
    the epochs before it and never pass its end, not even a step logged past the epoch count."""
    run = read_logdir(FIXTURES).runs["lightning/csv/version_0"]
    epochs = X.epoch_series(run)
    cut = epochs.steps <= 39  # epoch 2 logged at steps 34 and 39 of its 30..44
    live = dataclasses.replace(
        run, unmapped={**run.unmapped, "epoch": Series(epochs.steps[cut], epochs.values[cut])}
    )
    axis = X.Axis.of(live, X.EPOCH)
    assert np.allclose([axis.at(34), axis.at(39)], [2 + 5 / 15, 2 + 10 / 15])
    assert axis.at(44) == 3.0 and axis.at(1_000) == 3.0


def test_a_fractional_epoch_count_is_placed_as_logged():
    """The HF Trainer logs the fraction of epochs done (0.33, 0.67, ...): interpolated, no re-counting,
    and its epoch ends fall where Lightning's do."""
    runs = read_logdir(FIXTURES).runs
    hf = runs["hf_trainer"]
    epochs = X.epoch_series(hf)
    axis = X.Axis.of(hf, X.EPOCH)
    for tag in (T.TRAIN_LOSS, T.VAL_LOSS):
        s = hf.scalar(tag)
        assert np.array_equal(axis.along(s, tag).steps, np.interp(s.steps, epochs.steps, epochs.values))
    lightning = runs["lightning/csv/version_0"]
    val_hf = axis.along(hf.scalar(T.VAL_LOSS), T.VAL_LOSS).steps
    val_pl = X.Axis.of(lightning, X.EPOCH).along(lightning.scalar(T.VAL_LOSS), T.VAL_LOSS).steps
    assert np.array_equal(val_hf, val_pl[: len(val_hf)])  # 1, 2, 3 in both


def trace_x(spec: dict, name: str) -> np.ndarray:
    """The x positions of trace `name` in a plotly spec (numbers, or plotly's base64 typed array)."""
    x = next(t for t in spec["data"] if t.get("name") == name)["x"]
    return np.frombuffer(base64.b64decode(x["bdata"]), x["dtype"]) if isinstance(x, dict) else np.asarray(x)


def test_the_compare_page_draws_lightning_along_its_epochs():
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["logdir"] = str(FIXTURES)
    at.run()
    at.switch_page(COMPARE_PAGE).run()
    at.multiselect(key="compare").set_value(["lightning/csv/version_0", "hf_trainer"]).run()
    at.button_group(key="x_axis").set_value(X.EPOCH).run()
    assert not at.exception, [e.value for e in at.exception]
    train, val = (json.loads(chart.proto.spec) for chart in at.get("plotly_chart")[:2])
    assert train["layout"]["xaxis"]["title"]["text"] == val["layout"]["xaxis"]["title"]["text"] == X.EPOCH
    assert np.all(np.diff(trace_x(train, "lightning/csv/version_0 (raw)")) > 0)  # no point on another's x
    assert trace_x(val, "lightning/csv/version_0 (raw)").tolist() == [1.0, 2.0, 3.0, 4.0]  # at epoch ends
    assert trace_x(val, "hf_trainer (raw)").tolist() == [1.0, 2.0, 3.0]  # where the Trainer's are


def test_relative_time_starts_at_zero_in_one_unit_and_wall_time_is_milliseconds():
    run = read_logdir(RUNS_DIR).runs["healthy_mlp"]
    loss = run.scalar(T.TRAIN_LOSS)
    rel = X.Axis.of(run, X.RELATIVE)
    placed = rel.along(loss, T.TRAIN_LOSS)
    assert placed.steps[0] >= 0 and np.all(np.diff(placed.steps) >= 0)
    assert rel.title() == f"relative time ({rel.unit})"
    assert placed.steps[-1] * rel.per == np.nanmax(loss.wall_times) - rel.start
    wall = X.Axis.of(run, X.WALL).along(loss, T.TRAIN_LOSS)
    assert wall.steps[0] == loss.wall_times[0] * 1000.0


def test_an_axis_the_run_cannot_offer_falls_back_to_steps():
    run = read_logdir(FIXTURES).runs["lightning/csv/version_0"]
    axis = X.Axis.of(run, X.WALL)
    assert axis.name == X.STEP
    loss = run.scalar(T.TRAIN_LOSS)
    assert axis.along(loss, T.TRAIN_LOSS) is loss


def test_switching_the_x_axis_redraws_every_chart_on_it():
    at = open_run("overfitting")
    steps_titles = {spec["layout"]["xaxis"]["title"]["text"] for spec in specs(at)}
    assert X.RELATIVE not in " ".join(steps_titles)
    at.get("button_group")[0].set_value(X.RELATIVE).run()
    assert not at.exception
    lines = [spec for spec in specs(at) if spec["layout"]["xaxis"].get("title")]
    titles = {spec["layout"]["xaxis"]["title"]["text"] for spec in lines}
    relative = [t for t in titles if t.startswith(X.RELATIVE)]
    ridges = [t for t in titles if t == "weight"]  # the distributions' x axis is the value, not time
    assert relative and len(relative) + len(ridges) == len(titles) and len(set(relative)) == 1
    at.get("button_group")[0].set_value(X.WALL).run()
    assert not at.exception
    assert any(spec["layout"]["xaxis"].get("type") == "date" for spec in specs(at))


def test_a_link_with_an_x_axis_opens_the_page_on_it():
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["run"] = "overfitting"
    at.query_params[charts.KEY_X] = X.RELATIVE  # /run?run=overfitting&x_axis=relative+time
    at.run()
    at.switch_page(RUN_PAGE).run()
    assert not at.exception
    assert at.get("button_group")[0].value == X.RELATIVE
    assert specs(at)[0]["layout"]["xaxis"]["title"]["text"].startswith(X.RELATIVE)


def test_lightning_s_epoch_is_an_axis_not_another_logged_series():
    at = open_run("lightning/tb/version_0", FIXTURES)
    other = at.multiselect(key="other:lightning/tb/version_0")
    assert "epoch" not in other.options and "train_loss_epoch" in other.options
    at.get("button_group")[0].set_value(X.EPOCH).run()
    assert not at.exception
    loss = specs(at)[0]
    assert loss["layout"]["xaxis"]["title"]["text"] == "epoch"


# -- the heatmap -----------------------------------------------------------------------


def test_the_heatmap_draws_at_the_steps_measured_without_stripes():
    """The collector's schedule: every step for 200 steps, then every 50th."""
    steps = np.r_[np.arange(200), np.arange(200, 5_000, 50)]
    layers = [(name, Series(steps, np.full(steps.shape[0], 0.1 * (i + 1)))) for i, name in enumerate("abc")]
    heat = F.layer_heatmap(layers, value_title="gradient norm").data[0]
    z = np.asarray(heat.z, dtype=float)
    assert not np.isnan(z).any()  # no column without data
    edges = np.asarray(heat.x, dtype=float)
    assert len(edges) == z.shape[1] + 1 and set(edges[:-1]) <= set(steps.astype(float))
    # the old equal-width bins would have left most columns past step 200 empty
    equal = np.linspace(0, steps[-1], min(300, steps.shape[0]) + 1)
    assert (np.histogram(steps, equal)[0] == 0).sum() > 100


def test_a_layer_measured_less_often_holds_its_value_until_its_next_measurement():
    every = np.arange(0, 1000)
    sparse = np.arange(0, 1000, 10)
    heat = F.layer_heatmap(
        [("dense", Series(every, np.ones(1000))), ("sparse", Series(sparse, np.full(100, 5.0)))],
        value_title="g",
        bins=500,
    ).data[0]
    raw = np.asarray(heat.customdata, dtype=float)
    last_sparse_bin = np.searchsorted(np.asarray(heat.x, dtype=float), sparse[-1], side="right") - 1
    assert np.all(raw[1, : last_sparse_bin + 1] == 5.0)
    assert np.isnan(raw[1, last_sparse_bin + 1 :]).all()  # after its last measurement: nothing claimed


def test_a_nan_bin_is_not_filled_over():
    steps = np.arange(100)
    values = np.ones(100)
    values[50] = np.nan
    raw = np.asarray(
        F.layer_heatmap([("x", Series(steps, values))], value_title="g").data[0].customdata, float
    )
    assert np.isnan(raw[0, 50]) and np.isfinite(np.delete(raw[0], 50)).all()


# -- CSV --------------------------------------------------------------------------------


def test_a_chart_s_series_as_csv_every_point_on_the_union_of_steps():
    train = Series(np.arange(0, 1000), np.linspace(2, 0.1, 1000), 1.7e9 + np.arange(1000.0))
    val = Series(np.arange(0, 1000, 100), np.r_[np.nan, np.linspace(1, 0.5, 9)])
    frame = series_frame([(T.TRAIN_LOSS, train), (T.VAL_LOSS, val)])
    assert list(frame.columns) == ["step", "wall_time", T.TRAIN_LOSS, T.VAL_LOSS]
    assert len(frame) == 1000 and frame[T.VAL_LOSS].notna().sum() == 9
    back = pd.read_csv(io.StringIO(series_csv([(T.TRAIN_LOSS, train), (T.VAL_LOSS, val)])))
    assert np.allclose(back[T.TRAIN_LOSS], train.values) and back["step"].tolist() == list(range(1000))


def test_each_chart_offers_its_csv():
    at = open_run("overfitting")
    csv = [b for b in at.download_button if b.label == "CSV"]
    assert len(csv) >= 5
    assert any(b.key == "csv:loss" for b in csv)


# -- layer names -------------------------------------------------------------------------


def test_layers_are_named_with_their_type_and_shape():
    from trainscope.analyzers.layer_names import layer_label

    runs = read_logdir(RUNS_DIR).runs
    assert layer_label(runs["healthy_cnn"], "fc") == "fc (Linear 512→64)"
    assert layer_label(runs["healthy_cnn"], "conv2") == "conv2 (Conv2d 16→32, 3×3)"
    assert layer_label(runs["healthy_cnn"], "bn2") == "bn2 (BatchNorm2d)"  # no weight shape checked
    assert layer_label(runs["bad_init_scale"], "9") == "9 (ReLU after 8: Linear 64→64)"
    assert layer_label(runs["saturated_activations"], "1") == "1 (Tanh after 0: Linear 64→128)"
    foreign = read_logdir(FIXTURES).runs["keras"]
    assert layer_label(foreign, "dense") == "dense"  # no model summary: the name as logged


def test_a_finding_names_its_layer_with_type_and_shape():
    at = open_run("bad_init_scale")
    page = "\n".join(m.value for m in [*at.markdown, *at.caption])
    assert "layer `9` (ReLU after 8: Linear 64→64)" in page.replace("\\", "")
    assert "`9` (ReLU after 8: Linear 64→64)" in page.replace("\\", "")  # in the symptom's title too


# -- sources: the Chinese quote and its English gloss ---------------------------------------


def cited_sources() -> dict[str, str]:
    """Every ``*_SOURCE`` the rule modules and the end-of-run advice define."""
    import trainscope.analyzers.summary as summary
    from trainscope.analyzers.rules import RULE_MODULES

    found = {}
    for module in (*RULE_MODULES, summary):
        for name, value in vars(module).items():
            if name.endswith("_SOURCE") and isinstance(value, str):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_cited_document_line_has_an_english_gloss():
    import re

    from trainscope.analyzers.rules.common import quotes

    sources = cited_sources()
    lines = 0
    for name, text in sources.items():
        cited = quotes(text)
        assert len(cited) == len(re.findall(r"\d{3} line \d+: ", text)), name
        for doc, line, _quote, gloss in cited:
            assert gloss and gloss.isascii(), (name, doc, line)  # English beside every quote
        lines += len(cited)
    assert lines >= 35


def test_the_source_shows_each_quote_with_its_gloss_beside_it():
    at = open_run("lr_too_low")
    sources = [c.value for c in at.caption if c.value.startswith("Source:")]
    assert any(
        "如果loss曲线表现出线性" in s and "a loss curve that looks linear, falling slowly" in s
        for s in sources
    )


# -- logged, not shown -------------------------------------------------------------------


def test_what_the_log_holds_and_no_chart_draws_is_listed_once(tmp_path):
    """A real SummaryWriter log with an image, a text and a histogram under a name no chart reads."""
    import pytest

    torch = pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    writer = SummaryWriter(str(tmp_path / "a"))
    for step in range(20):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        writer.add_scalar("train/loss", loss.item(), step)
        if step % 10 == 0:
            writer.add_histogram("fc1_weights", model[0].weight, step)
            writer.add_image("inputs", np.random.rand(3, 8, 8), step)
            writer.add_text("notes", f"step {step}", step)
    writer.close()
    at = open_run("a", tmp_path)
    assert [s.value for s in at.subheader].count("Logged, not shown") == 1
    listed = next(c.value for c in at.caption if "TrainScope does not draw" in c.value)
    assert "`inputs` (image)" in listed and "`notes/text_summary` (text)" in listed
    assert "`fc1_weights` (histogram)" in listed


def test_a_run_that_logs_only_what_is_drawn_lists_nothing():
    at = open_run("healthy_mlp")
    assert "Logged, not shown" not in [s.value for s in at.subheader]


# -- theme ----------------------------------------------------------------------------------


def test_charts_take_streamlit_s_theme_which_follows_the_system():
    """No figure fixes its own template or background: Streamlit's theme, light or dark as the
    system is, colours them (tests/test_app_browser_run_page.py looks at both in Chromium)."""
    at = open_run("bad_init_scale")
    charts = at.get("plotly_chart")
    assert charts and all(chart.proto.theme == "streamlit" for chart in charts)
    for spec in specs(at):
        layout = spec["layout"]
        assert "paper_bgcolor" not in layout and "plot_bgcolor" not in layout  # none fixed by a figure
        assert all(
            a.get("bgcolor", "rgba(128,128,128,0.18)").startswith("rgba")
            for a in layout.get("annotations", [])
        )


# -- thinned once -------------------------------------------------------------------------


def test_a_series_is_smoothed_and_thinned_once_while_its_arrays_live():
    from trainscope.app import series as S

    memo = S.ArrayMemo(most=4)
    calls = []
    x, y = np.arange(10_000), np.random.default_rng(0).normal(size=10_000)
    first = memo.get((x, y), "thin", lambda: calls.append(1) or S.downsample(x, y))
    again = memo.get((x, y), "thin", lambda: calls.append(1) or S.downsample(x, y))
    assert again is first and len(calls) == 1
    copy = y.copy()  # equal values, another array (a run that changed): computed anew
    memo.get((x, copy), "thin", lambda: calls.append(1) or S.downsample(x, copy))
    assert len(calls) == 2
    for i in range(5):  # past `most`, the oldest goes
        memo.get((x,), i, lambda: calls.append(1))
    memo.get((x, y), "thin", lambda: calls.append(1) or S.downsample(x, y))
    assert len(calls) == 8


def test_smoothing_returns_the_same_array_so_its_thinning_is_kept_too():
    from trainscope.app import series as S

    values = np.random.default_rng(1).normal(size=5_000)
    assert S.smoothed(values, 0.6) is S.smoothed(values, 0.6)
    assert np.array_equal(S.smoothed(values, 0.6), S.ema(values, 0.6))
    assert S.smoothed(values, 0.9) is not S.smoothed(values, 0.6)
