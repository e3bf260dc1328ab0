"""Finding and comparing runs: the run filter, run links that carry the log dir, the
hyperparameters that differ as columns, several metrics at once on one x axis.

Pure parts first (filter, links, hyperparameters, comparison), then the pages through
Streamlit's AppTest on the sample runs and on the real Lightning, Hugging Face, Keras,
MLflow and W&B logs of tests/fixtures.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from trainscope.analyzers.reading import hf_args, read_logdir
from trainscope.analyzers.reading.hparams import run_hparams
from trainscope.app import catalog, comparison, links, tables, xaxis
from trainscope.app.runfilter import filter_runs
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T
from trainscope.logformat.events import EventFileWriter, summary_record
from trainscope.sample_runs import RUNS_DIR

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "main.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RUN_PAGE, COMPARE_PAGE = "views/run.py", "views/compare.py"
TIMEOUT = 60
LIGHTNING, HF, KERAS, LIGHTNING_CSV = (
    "lightning/tb/version_0",
    "hf_trainer",
    "keras",
    "lightning/csv/version_0",
)


def start(logdir=None, **query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if logdir is not None:
        at.session_state["logdir"] = str(logdir)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def names_of(table) -> list[str]:
    return [links.run_of(url) for url in table["run"]]


def shown_cells(at: AppTest, index: int = 0) -> list[str]:
    """What the cells of a table show (the Styler's display values), as text."""
    import pyarrow as pa

    proto = at.dataframe[index].proto
    display = pa.ipc.open_stream(proto.arrow_data.styler.display_values).read_all().to_pandas()
    return [str(v) for v in display.to_numpy().ravel()]


def write_run(run_dir: Path, hparams: dict, steps: int = 60) -> None:
    """A TrainScope-shaped run with its hyperparameters and the optimizer record the collector writes."""
    writer = EventFileWriter(run_dir)
    writer.write(
        [
            summary_record(s, 1.7e9 + 2 * s, {T.TRAIN_LOSS: 2.3 / (1 + s / 20), T.LR: hparams.get("lr", 0.1)})
            for s in range(steps)
        ]
    )
    writer.close()
    optimizer = {
        "type": "SGD",
        "param_groups": [{"lr": hparams.get("lr", 0.1), "momentum": 0.9, "weight_decay": 0}],
    }
    RJ.write_run_json(
        run_dir,
        {
            RJ.K_SCHEMA: RJ.SCHEMA_VERSION,
            RJ.K_STATUS: RJ.STATUS_FINISHED,
            RJ.K_HPARAMS: hparams,
            RJ.K_OPTIMIZER: optimizer,
            RJ.K_BATCH_SIZE: hparams.get("batch_size", 32),
        },
    )


# -- the filter -----------------------------------------------------------------------


NAMES = ["sweep/lr_0.1", "sweep/lr_0.01", "baseline", "Lightning/version_0", "lightning/version_1"]


@pytest.mark.parametrize(
    "pattern, regex, expected",
    [
        ("", False, NAMES),
        ("lr_0.1", False, ["sweep/lr_0.1"]),  # a substring: the dot is a dot
        ("LIGHTNING", False, ["Lightning/version_0", "lightning/version_1"]),  # case-insensitive
        ("lr_0.1", True, ["sweep/lr_0.1"]),
        (r"lr_0\.0", True, ["sweep/lr_0.01"]),
        (r"^lightning/.*_[01]$", True, ["Lightning/version_0", "lightning/version_1"]),
        ("nothing", False, []),
    ],
)
def test_the_filter_matches_a_substring_or_a_regex(pattern, regex, expected):
    out = filter_runs(NAMES, pattern, regex)
    assert out.names == expected and out.error is None


def test_an_invalid_regex_says_so_and_hides_nothing():
    out = filter_runs(NAMES, "lr_(0", regex=True)
    assert out.names == NAMES
    assert out.error is not None and out.error.startswith("invalid regular expression 'lr_(0'")
    assert filter_runs(NAMES, "lr_(0", regex=False).names == []  # as a substring it is just text


# -- links ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["overfitting", "lightning/tb/version_0", "a b&c=d#e%f?g", "实验/1"])
def test_a_run_link_names_the_run_and_the_log_dir(name):
    url = links.run_url(name, "/data/runs & more")
    assert url.startswith("run?run=")
    assert links.run_of(url) == name
    from urllib.parse import parse_qs, urlsplit

    assert parse_qs(urlsplit(url).query)["logdir"] == ["/data/runs & more"]


def test_links_sort_as_the_run_names():
    names = ["b", "a/2", "a/10", "c"]
    assert sorted(links.run_url(n, "/x") for n in names) == [links.run_url(n, "/x") for n in sorted(names)]


# -- hyperparameters --------------------------------------------------------------------


def test_run_hparams_adds_the_collector_s_optimizer_record_only_where_the_log_names_none():
    meta = {
        RJ.K_HPARAMS: {"learning_rate": 0.01, "model": {"depth": 3}},
        RJ.K_OPTIMIZER: {
            "type": "AdamW",
            "param_groups": [{"lr": 0.01, "weight_decay": 0.1, "betas": [0.9, 0.99]}],
        },
        RJ.K_BATCH_SIZE: 64.0,  # as run.json read back may hold it
    }
    assert run_hparams(meta) == {
        "batch_size": 64,
        "betas": [0.9, 0.99],
        "learning_rate": 0.01,  # the logged name kept; the optimizer's lr not added again
        "model.depth": 3,
        "optimizer": "AdamW",
        "weight_decay": 0.1,
    }
    assert run_hparams({}) == {}
    assert run_hparams({RJ.K_HPARAMS: "not a mapping", RJ.K_OPTIMIZER: {"param_groups": "x"}}) == {}


def test_hparams_of_every_kind_of_log_are_read():
    snapshot = read_logdir(FIXTURES)
    mlflow = [r for n, r in snapshot.runs.items() if n.startswith("mlflow/")]
    wandb = [r for n, r in snapshot.runs.items() if n.startswith("wandb/")]
    assert mlflow and all(run_hparams(r.meta)["optimizer"] == "SGD" for r in mlflow)
    assert {run_hparams(r.meta)["epochs"] for r in mlflow} == {2, 5}
    assert wandb and all(run_hparams(r.meta)["model.width"] == 64 for r in wandb)
    hf = run_hparams(snapshot.runs[HF].meta)  # the Trainer's arguments, from its TensorBoard text summary
    assert (
        hf["learning_rate"] == 0.05
        and hf["per_device_train_batch_size"] == 32
        and hf["optim"] == "adamw_torch_fused"
    )
    assert "batch_size" not in hf and "output_dir" not in hf  # named once; paths say nothing of training
    attempts = {
        n: run_hparams(snapshot.runs[n].meta)
        for n in ("hf_attempts/runs/attempt1", "hf_attempts/runs/attempt2")
    }
    assert tables.differing(attempts) == (["learning_rate"], 0)
    sample = read_logdir(RUNS_DIR).runs["overfitting"]
    assert run_hparams(sample.meta)["optimizer"] == "adam" and run_hparams(sample.meta)["batch_size"] == 20


@pytest.mark.parametrize(
    "text", ["", "[1, 2]", "{not json", '{"learning_rate": {"nested": 1}}', "x" * (2 << 20)]
)
def test_hf_arguments_that_are_not_a_json_object_give_no_hyperparameters(text):
    assert hf_args.parse(text) == {}


def test_only_hyperparameters_that_differ_become_columns_the_usual_suspects_first():
    hparams = {
        "a": {"lr": 0.1, "batch_size": 32, "seed": 1, "case": "a", "zeta": "x", "dataset": "digits"},
        "b": {"lr": 0.01, "batch_size": 32, "seed": 2, "case": "b", "zeta": "y", "dataset": "digits"},
        "c": {"lr": 0.01, "batch_size": 32, "case": "c", "zeta": "x", "dataset": "digits"},
    }
    columns, more = tables.differing(hparams)
    assert columns == ["lr", "seed", "zeta"] and more == 0  # batch_size and dataset equal; case names the run
    assert tables.differing(hparams, limit=1) == (["lr"], 2)
    assert tables.differing({"a": hparams["a"]}) == ([], 0)  # one run differs from nothing
    assert tables.differing({**hparams, "csv log": {}}) == (columns, 0)  # a log without any has no say
    frame = tables.hparam_frame(hparams, ["a", "b", "c"], columns)
    assert frame["lr"].dtype == float and frame["seed"].isna().tolist() == [False, False, True]
    assert [tables.cell(v) for v in frame["seed"]] == ["1", "2", tables.MISSING]
    assert tables.cell(0.000123456) == "0.0001235" and tables.cell(449) == "449" and tables.cell(None) == "—"


# -- comparison -----------------------------------------------------------------------


def test_the_epoch_counter_is_an_axis_not_a_metric():
    snapshot = read_logdir(FIXTURES)
    runs = [snapshot.runs[n] for n in (LIGHTNING, HF, KERAS, LIGHTNING_CSV)]
    offered = comparison.metrics(runs)
    assert "epoch" not in offered and "train/epoch" not in offered
    assert offered[:6] == [T.TRAIN_LOSS, T.VAL_LOSS, T.TRAIN_ACC, T.VAL_ACC, T.LR, T.GRAD_GLOBAL_NORM]
    assert comparison.default_metrics(offered) == offered[:6]
    placed, lacking = comparison.axes(runs, xaxis.EPOCH)
    assert lacking == []  # Lightning and HF log an epoch counter; Keras's steps count epochs
    curves, _ = comparison.curves(runs, T.VAL_LOSS, placed)
    by_run = {c.name: c for c in curves}
    assert by_run[LIGHTNING].steps.max() <= 5 and by_run[HF].steps.max() <= 3  # epochs, not steps
    placed, lacking = comparison.axes(runs, xaxis.RELATIVE)
    assert lacking == [LIGHTNING_CSV]  # a CSV log keeps no time
    assert len({a.unit for a in placed.values()}) == 1  # one unit for every run of the page
    # A run whose only series beyond the canonical ones is the epoch counter has no "other series" chart.
    lightning = snapshot.runs[LIGHTNING]
    only_epoch = dataclasses.replace(lightning, unmapped={"epoch": lightning.unmapped["epoch"]})
    assert not catalog.OTHER.available(only_epoch) and catalog.OTHER.available(lightning)


# -- the Runs page ----------------------------------------------------------------------


def test_the_runs_page_filters_runs_and_an_invalid_regex_says_so():
    at = clean(start())
    every = names_of(at.dataframe[0].value)
    at.text_input(key="filter").set_value("LR_TOO").run()
    assert sorted(names_of(clean(at).dataframe[0].value)) == ["lr_too_high_oscillating", "lr_too_low"]
    assert any("2 of 28 runs match" in c.value for c in at.caption)
    at.toggle(key="regex").set_value(True).run()
    at.text_input(key="filter").set_value("^lr_.*(nan|dead)$").run()
    assert sorted(names_of(clean(at).dataframe[0].value)) == ["lr_far_too_high_dead", "lr_far_too_high_nan"]
    at.text_input(key="filter").set_value("lr_(too").run()
    assert "invalid regular expression" in at.warning[0].value
    assert names_of(at.dataframe[0].value) == every  # nothing hidden by a pattern that does not compile
    at.text_input(key="filter").set_value("no such run").run()
    assert "No run matches the filter." in at.info[0].value


def test_run_names_are_links_to_the_run_with_the_log_dir(tmp_path):
    write_run(tmp_path / "sweep" / "lr_0.1", {"lr": 0.1})
    write_run(tmp_path / "sweep" / "lr_0.01", {"lr": 0.01})
    at = clean(start(tmp_path))
    urls = list(at.dataframe[0].value["run"])
    assert all(url.startswith("run?run=sweep/lr_0.") and url.endswith(f"&logdir={tmp_path}") for url in urls)
    # The link, opened in a new browser (a new session), shows that run of that log dir.
    query = dict(pair.split("=", 1) for pair in urls[0].split("?", 1)[1].split("&"))
    fresh = start(**query)
    fresh.switch_page(RUN_PAGE).run()
    assert clean(fresh).selectbox(key="run").value == links.run_of(urls[0])
    assert fresh.text_input(key="logdir").value == str(tmp_path)
    assert "No run named" not in " ".join(w.value for w in fresh.warning)


def test_the_runs_table_shows_differing_hyperparameters_and_no_none_cells(tmp_path):
    write_run(tmp_path / "a", {"lr": 0.1, "batch_size": 32, "dataset": "digits"})
    write_run(tmp_path / "b", {"lr": 0.01, "batch_size": 64, "dataset": "digits"})
    (tmp_path / "empty").mkdir()
    RJ.write_run_json(tmp_path / "empty", {RJ.K_SCHEMA: RJ.SCHEMA_VERSION, RJ.K_STATUS: RJ.STATUS_RUNNING})
    at = clean(start(tmp_path))
    table = at.dataframe[0].value
    assert {"lr", "batch_size"} <= set(table.columns) and "dataset" not in table.columns
    lr = dict(zip(names_of(table), table["lr"]))
    assert lr["a"] == 0.1 and lr["b"] == 0.01  # numbers: the column sorts by value
    cells = shown_cells(at)
    assert "None" not in cells and "nan" not in cells
    assert at.dataframe[0].proto.placeholder == "—"  # what the grid draws for a missing value
    assert "—" in cells  # the empty run's last step, lr, batch size


def test_the_sample_runs_table_fits_its_main_columns_and_lists_hparams():
    at = clean(start())
    table = at.dataframe[0].value
    assert list(table.columns[:4]) == ["health", "run", "most severe finding", "last logged"]
    assert {"explains", "critical", "warnings", "last step"} <= set(table.columns)
    batch = dict(zip(names_of(table), table["batch_size"]))
    assert batch["noisy_batch_size_2"] == 2 and batch["overfitting"] == 20 and batch["healthy_mlp"] == 32
    assert "case" not in table.columns  # it only repeats each run's name
    widths = json.loads(at.dataframe[0].proto.columns)
    shown = sum(widths[c]["width"] for c in table.columns[:4])
    assert shown <= 900  # what a 1400 px window leaves beside the sidebar (and the row ticks)


# -- links to the run page ------------------------------------------------------------


def test_a_link_to_an_unknown_run_says_so():
    at = start(run="no_such_run")
    at.switch_page(RUN_PAGE).run()
    clean(at)
    shown = at.selectbox(key="run").value
    warning = next(w.value for w in at.warning if "No run named" in w.value)
    assert "`no_such_run`" in warning and f"showing `{shown}`" in warning
    at.run()  # a refresh: still said
    assert any("No run named" in w.value for w in at.warning)
    at.selectbox(key="run").set_value("overfitting").run()  # another run picked: no longer
    assert not any("No run named" in w.value for w in clean(at).warning)


def test_a_shared_link_opens_another_log_dir():
    at = start(logdir=str(FIXTURES), run=LIGHTNING)  # /run?run=...&logdir=... in a fresh browser
    at.switch_page(RUN_PAGE).run()
    clean(at)
    assert at.selectbox(key="run").value == LIGHTNING
    assert at.title[0].value.replace("\\", "") == LIGHTNING


# -- the Compare page ------------------------------------------------------------------


def test_compare_overlays_several_metrics_at_once_and_switches_the_x_axis():
    at = start(FIXTURES)
    at.switch_page(COMPARE_PAGE).run()
    at.multiselect(key="compare").set_value([LIGHTNING, HF, KERAS, LIGHTNING_CSV]).run()
    clean(at)
    assert at.multiselect(key="metrics").value == [
        T.TRAIN_LOSS,
        T.VAL_LOSS,
        T.TRAIN_ACC,
        T.VAL_ACC,
        T.LR,
        T.GRAD_GLOBAL_NORM,
    ]
    assert "epoch" not in at.multiselect(key="metrics").options
    assert len(at.get("plotly_chart")) == 6
    assert at.button_group(key="x_axis").options == [xaxis.STEP, xaxis.EPOCH, xaxis.WALL, xaxis.RELATIVE]
    at.button_group(key="x_axis").set_value(xaxis.EPOCH).run()
    spec = json.loads(clean(at).get("plotly_chart")[1].proto.spec)  # val/loss
    assert spec["layout"]["xaxis"]["title"]["text"] == "epoch"
    at.button_group(key="x_axis").set_value(xaxis.WALL).run()
    spec = json.loads(clean(at).get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["xaxis"]["type"] == "date"
    assert any(f"Not drawn on {xaxis.WALL}" in c.value and LIGHTNING_CSV in c.value for c in at.caption)
    at.button_group(key="x_axis").set_value(xaxis.RELATIVE).run()
    spec = json.loads(clean(at).get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["xaxis"]["title"]["text"].startswith("relative time (")


def test_compare_table_lists_the_hyperparameters_that_differ():
    at = start(FIXTURES)
    at.switch_page(COMPARE_PAGE).run()
    mlflow = sorted(n for n in read_logdir(str(FIXTURES)).runs if n.startswith("mlflow/"))  # offered by name
    at.multiselect(key="compare").set_value(mlflow).run()
    table = clean(at).dataframe[0].value
    assert names_of(table) == mlflow
    assert "epochs" in table.columns and "lr" not in table.columns  # every run used lr 0.1
    assert sorted(table["epochs"]) == [2.0, 5.0, 5.0]


def test_compare_filter_narrows_the_runs_offered():
    at = start()
    at.switch_page(COMPARE_PAGE).run()
    at.multiselect(key="compare").set_value(["healthy_mlp"]).run()
    at.text_input(key="filter").set_value("lr_too").run()
    offered = clean(at).multiselect(key="compare").options
    assert sorted(offered) == ["healthy_mlp", "lr_too_high_oscillating", "lr_too_low"]  # the chosen run stays


def test_a_diverged_loss_shows_as_a_short_number_not_an_unsafe_integer():
    """lr_far_too_high_nan's last finite loss is 1.4e25: the grid would draw all 26 digits, flagged."""
    at = start()
    at.switch_page(COMPARE_PAGE).run()
    at.multiselect(key="compare").set_value(["lr_far_too_high_nan", "healthy_mlp"]).run()
    table = clean(at).dataframe[0].value
    assert table["final train loss"].tolist()[0] == "1.415e+25"
    assert table["best val acc"].dtype == float  # columns without such a value stay numbers, sorted as such


def test_make_dashboard_takes_a_port():
    import subprocess

    out = subprocess.run(
        ["make", "-n", "dashboard", "PORT=8612"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "--port 8612" in out.stdout


def test_a_compare_link_naming_an_unknown_run_says_so():
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["compare"] = ["overfitting", "no_such_run"]
    at.run()
    at.switch_page(COMPARE_PAGE).run()
    clean(at)
    assert at.multiselect(key="compare").value == ["overfitting"]
    assert any("No run named `no_such_run`" in w.value for w in at.warning)
    at.multiselect(key="compare").set_value(["overfitting", "healthy_mlp"]).run()
    assert not any("No run named" in w.value for w in clean(at).warning)
