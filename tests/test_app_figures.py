"""The dashboard's pure parts: smoothing, thinning, binning, figure builders, summaries, exports, escaping."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trainscope.analyzers.cli import render_json
from trainscope.analyzers.diagnose import Diagnosis, diagnose_run
from trainscope.analyzers.findings import Finding, Skipped
from trainscope.analyzers.reading import read_logdir
from trainscope.analyzers.run import HistogramSeries, Run, Series
from trainscope.app import figures as F
from trainscope.app import series as S
from trainscope.app import summaries
from trainscope.app.escape import code, md, prose
from trainscope.app.export import diagnosis_json, diagnosis_markdown
from trainscope.logformat import tags as T
from trainscope.sample_runs import RUNS_DIR


def tensorboard_smoothing(values: list[float], weight: float) -> list[float]:
    """TensorBoard's scalar smoothing, transcribed from its TypeScript (the oracle)."""
    last, num_accum, out = 0.0, 0, []
    is_constant = all(v == values[0] for v in values)
    for v in values:
        if is_constant or not math.isfinite(v):
            out.append(v)
        else:
            last = last * weight + (1 - weight) * v
            num_accum += 1
            out.append(last / (1 - weight**num_accum))
    return out


# -- app.series ---------------------------------------------------------------------


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.6, 0.95, 0.99])
def test_ema_matches_tensorboard(weight):
    rng = np.random.default_rng(0)
    values = list(np.exp(-np.arange(500) / 100) + rng.normal(0, 0.1, 500))
    values[17], values[250] = float("nan"), float("inf")
    np.testing.assert_allclose(
        S.ema(np.array(values), weight), tensorboard_smoothing(values, weight), rtol=1e-12
    )


def test_ema_leaves_a_constant_series_alone():
    assert list(S.ema(np.full(10, 3.0), 0.6)) == [3.0] * 10


def test_downsample_keeps_a_one_step_spike_in_100k_steps():
    steps = np.arange(100_000)
    values = 1.0 + 0.01 * np.sin(steps / 50.0)
    values[73_219] = 40.0  # one step
    keep = S.downsample(steps, values, n_out=2000)
    assert keep.shape[0] <= 2000
    assert 73_219 in keep
    assert keep[0] == 0 and keep[-1] == 99_999  # the ends are kept
    assert np.all(np.diff(keep) > 0)


def test_downsample_keeps_a_downward_spike_and_skips_nan():
    steps = np.arange(50_000)
    values = np.ones(50_000)
    values[12_345] = -5.0
    values[20_000:20_010] = np.nan
    keep = S.downsample(steps, values, n_out=1000)
    assert 12_345 in keep
    assert np.all(np.isfinite(values[keep]))


def test_downsample_returns_short_series_whole():
    values = np.array([1.0, np.nan, 3.0])
    assert list(S.downsample(np.arange(3), values)) == [0, 2]


def test_nonfinite_indices_first_always_kept():
    values = np.ones(10_000)
    values[5000:] = np.nan
    bad = S.nonfinite_indices(values, n_out=100)
    assert bad[0] == 5000 and len(bad) <= 100


def test_bin_max_keeps_each_bins_largest_and_marks_empty_bins():
    steps = np.array([0, 1, 2, 10, 11])
    values = np.array([1.0, 5.0, np.nan, 2.0, 3.0])
    out = S.bin_max(steps, values, S.bin_edges(0, 12, 4))  # bins [0,3) [3,6) [6,9) [9,12]
    assert out[0] == 5.0 and math.isnan(out[1]) and math.isnan(out[2]) and out[3] == 3.0


# -- figure builders ----------------------------------------------------------------


def series(n: int, f=lambda s: np.exp(-s / 300.0), every: int = 1) -> Series:
    steps = np.arange(0, n * every, every)
    return Series(steps, f(steps).astype(float))


def test_train_val_figure_thins_smooths_and_marks():
    train = series(1_000_000, lambda s: 2.0 * np.exp(-s / 1e5) + 0.01 * np.sin(s))
    train.values[500_000] = 50.0
    train.values[900_000] = np.nan
    fig = F.train_val_figure(
        train,
        series(100, every=10_000),
        series(1_000_000, lambda s: 0.1 + 0 * s),
        smoothing=0.6,
        markers=[F.Marker(500_000, "lr_too_high", "critical")],
    )
    names = [t.name for t in fig.data]
    assert names == ["train (raw)", "train", "NaN/Inf", "val", "learning rate"]
    raw, smoothed = fig.data[0], fig.data[1]
    assert len(raw.x) <= S.DISPLAY_POINTS and len(smoothed.x) <= S.DISPLAY_POINTS
    assert 500_000 in raw.x and max(raw.y) == 50.0  # the spike survives thinning
    assert raw.opacity < 1 and smoothed.opacity in (None, 1.0)
    assert fig.data[2].x[0] == 900_000
    assert fig.data[4].yaxis == "y2"
    assert any(shape.x0 == 500_000 for shape in fig.layout.shapes)
    assert any("lr_too_high" in a.text for a in fig.layout.annotations)


def test_train_val_figure_without_smoothing_draws_values_as_logged():
    fig = F.train_val_figure(series(10), None, smoothing=0.0)
    assert [t.name for t in fig.data] == ["train"]
    np.testing.assert_allclose(fig.data[0].y, series(10).values)


def test_layer_lines_highlight_band_and_guides_on_a_log_axis():
    layers = [
        ("features.0", series(300, lambda s: 1e-6 + 0 * s)),
        ("classifier", series(300, lambda s: 1e-2 + 0 * s)),
    ]
    fig = F.layer_lines_figure(
        layers,
        y_title="r",
        log_y=True,
        highlight=["features.0"],
        band=F.Band(1e-4, 1e-2, "healthy"),
        guides=[F.Guide(0.1, "too large")],
    )
    widths = {t.name: t.line.width for t in fig.data}
    assert widths["features.0"] > widths["classifier"]
    assert fig.layout.yaxis.type == "log"
    band_label = next(a for a in fig.layout.annotations if a.text == "healthy")
    assert band_label.y == pytest.approx(-2.0)  # annotations sit at log10 of the value on a log axis
    assert any(s.type == "rect" and s.y0 == 1e-4 and s.y1 == 1e-2 for s in fig.layout.shapes)


def test_layer_heatmap_rows_in_order_log_colour_and_zero_as_darkest():
    vanishing = series(1000, lambda s: 1e-7 + 0 * s)
    vanishing.values[:5] = 0.0  # half of the first bin (10 steps per bin)
    vanishing.values[20:30] = 0.0  # all of the third
    layers = [
        ("0", vanishing),
        ("1", series(1000, lambda s: 1e-3 + 0 * s)),
        ("2", series(1000, lambda s: 1.0 + 0 * s)),
    ]
    fig = F.layer_heatmap(layers, value_title="gradient norm", bins=100)
    heat = fig.data[0]
    z = np.array(heat.z, dtype=float)
    assert list(heat.y) == ["0", "1", "2"] and z.shape == (3, 100)
    assert fig.layout.yaxis.autorange == "reversed"  # first layer on top
    assert z[0, 50] == pytest.approx(-7) and z[2, 50] == pytest.approx(0)
    assert z[0, 0] == pytest.approx(-7)  # zeros and 1e-7: the largest is 1e-7
    assert z[0, 2] == pytest.approx(-8)  # only zeros: the darkest colour, a decade below the rest
    assert heat.zmin == pytest.approx(-8)  # zeros would sit a decade below the smallest positive value


def test_ridgeline_one_ridge_per_sampled_step_latest_at_the_bottom():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 5000, 100)
    edges, counts = [], []
    for i in range(len(steps)):
        c, e = np.histogram(rng.normal(0, 1 + i / 10, 1000), bins=30)
        e[0] = -np.inf  # TensorBoard's catch-all outer bucket
        edges.append(e)
        counts.append(c.astype(float))
    fig = F.ridgeline_figure(HistogramSeries(steps, edges, counts), value_title="weight", max_ridges=12)
    assert len(fig.data) == 12
    assert fig.data[-1].name == "step 4,900" and min(fig.data[-1].y) == 0.0
    assert all(np.all(np.isfinite(np.array(t.x, dtype=float))) for t in fig.data)


def test_compare_figure_one_colour_per_run():
    fig = F.compare_figure([("a", series(100)), ("b", series(100))], y_title="loss", smoothing=0.6)
    colours = {t.legendgroup: t.line.color for t in fig.data}
    assert set(colours) == {"a", "b"} and colours["a"] != colours["b"]


# -- summaries and exports ----------------------------------------------------------


def finding(rule: str, severity: str, title: str = "t") -> Finding:
    return Finding(rule, severity, title, "m", ("do this",), "src", step=5)


def diagnosis(findings=(), skipped=(), scalars=None) -> Diagnosis:
    run = Run("r", "/tmp/r", "trainscope", scalars if scalars is not None else {T.TRAIN_LOSS: series(10)})
    return Diagnosis(run, tuple(findings), tuple(skipped))


@pytest.mark.parametrize(
    "d, expected",
    [
        (diagnosis([finding("nonfinite", "critical")]), summaries.CRITICAL),
        (diagnosis([finding("overfitting", "warning")]), summaries.WARNING),
        (diagnosis([finding("noisy_batches", "info")]), summaries.OK),
        (
            diagnosis(skipped=[Skipped("overfitting", "not enough data yet: 1 of 4 validations")]),
            summaries.WAITING,
        ),
        (diagnosis(skipped=[Skipped("dead_relu", "needs act/dead_fraction/*")]), summaries.OK),
        (diagnosis(scalars={}), summaries.WAITING),
    ],
)
def test_health(d, expected):
    assert summaries.health(d) == expected


def test_runs_table_is_worst_first():
    diagnoses = {
        "b-ok": diagnosis(),
        "a-warn": diagnosis([finding("overfitting", "warning", "Overfitting since step 29")]),
        "c-crit": diagnosis([finding("nonfinite", "critical", "NaN")]),
    }
    table = summaries.runs_table(diagnoses)
    assert list(table["run"]) == ["c-crit", "a-warn", "b-ok"]
    assert list(table["health"]) == ["critical", "warning", "ok"]
    assert table["most severe finding"].iloc[1] == "Overfitting since step 29"


def test_json_export_is_the_cli_shape_for_one_run():
    snapshot = read_logdir(RUNS_DIR)
    d = diagnose_run(snapshot.runs["overfitting"])
    exported = json.loads(diagnosis_json(snapshot.path, d))
    whole = json.loads(render_json(snapshot, [diagnose_run(r) for r in snapshot.runs.values()]))
    assert exported["runs"] == [r for r in whole["runs"] if r["run"] == "overfitting"]
    assert set(exported) == set(whole) and exported["summary"]["runs"] == 1


def test_markdown_export_has_findings_advice_and_sources():
    snapshot = read_logdir(RUNS_DIR)
    d = diagnose_run(snapshot.runs["overfitting"])
    text = diagnosis_markdown(snapshot.path, d)
    f = next(f for f in d.findings if f.rule == "overfitting")
    assert "`overfitting`" in text and "What to do:" in text and "Source:" in text
    assert f.advice[0].split()[0] in text


def test_markdown_export_lists_what_the_collector_could_not_measure():
    import dataclasses

    run = read_logdir(RUNS_DIR).runs["overfitting"]
    errors = ["layers: ValueError: the optimizer updates none of the model's trainable parameters"]
    run = dataclasses.replace(run, meta={**run.meta, "collector_errors": errors})
    text = diagnosis_markdown(RUNS_DIR, diagnose_run(run))
    assert "## Collector problems\n\n- layers: ValueError: the optimizer updates none" in text


# -- text from logs is text ---------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["[click](javascript:alert(1))", "<img src=x onerror=alert(1)>", "**bold** _it_ :red[x] $x^2$ #h", "a`b"],
)
def test_log_text_is_escaped_for_markdown(name):
    escaped = md(name)
    for ch in "[]()<>*_:$#`":
        assert ch not in escaped.replace("\\" + ch, "")  # every control character is backslash-escaped
    assert code(name).count("`") == 2


def test_prose_quotes_only_what_rules_quote():
    text = prose("Dead ReLUs: 90% of `fc.1`'s units; <b>`[x](y)`")
    assert "`fc.1`" in text and "`[x](y)`" in text  # quoted names become inline code (never links)
    assert "\\<b\\>" in text
    assert prose("one ` unpaired") == md("one ` unpaired")


def test_names_from_logs_are_plotly_text_not_markup():
    fig = F.layer_lines_figure([("<a href='x'>l</a>", series(10))], y_title="g")
    assert fig.data[0].name == "&lt;a href='x'&gt;l&lt;/a&gt;"
    heat = F.layer_heatmap([("<b>x</b>", series(10))], value_title="g").data[0]
    assert list(heat.y) == ["&lt;b&gt;x&lt;/b&gt;"]


def test_one_legend_entry_for_all_nan_marks():
    a, b = series(10), series(10)
    a.values[3] = b.values[4] = np.nan
    fig = F.layer_lines_figure([("a", a), ("b", b)], y_title="g")
    marks = [t for t in fig.data if t.legendgroup == "NaN/Inf"]
    assert len(marks) == 2 and [t.showlegend for t in marks] == [True, False]
