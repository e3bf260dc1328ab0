"""Reading log dirs into canonical `Run`s, whatever wrote them.

Formats: TensorBoard event files (TrainScope, Lightning, Hugging Face, Keras,
``SummaryWriter``), Lightning ``metrics.csv`` and ``hparams.yaml``, Hugging Face
``trainer_state.json``, Keras ``CSVLogger`` and plain metric CSV/TSV logs, MLflow's file
store, W&B run folders, and TrainScope's own ``run.json``.

Use `LogDirReader` for a log dir that is still being written, `read_logdir` for a
one-off read (the command line). Both return a `LogDirSnapshot`: the runs by name
(their path relative to the log dir, "." for the log dir itself; a CSV log's runs are
named by the file, ``results/log.csv``, one per key value ``results/log.csv/fold=1``)
and log-dir-level problems. The dashboard keeps one reader per log dir and refreshes it::

    @st.cache_resource
    def reader(logdir: str) -> LogDirReader:
        return LogDirReader(logdir)

    snapshot = reader(logdir).refresh()      # cheap when nothing changed (a few ms)
    for name, run in snapshot.runs.items():  # an unchanged run is the same object as before,
        ...                                  # so per-run work can be cached on it

Foreign tag names are mapped by `tagmap.DEFAULT_RULES` (and Hugging Face's named eval
sets by `eval_sets`); pass your own `TagRule`s (tried first) as
``LogDirReader(path, extra_rules=[...])`` or ``--map`` on the command line. What a run
could not map stays in `Run.unmapped`; where a run's steps count epochs,
`Run.epoch_axis` says so; `Run.tag_origins` names the foreign tag behind each
canonical one (``sum(a_loss, b_loss)`` where `train_loss` added up a run's loss terms).
What a foreign log says of itself goes under run.json's keys in `Run.meta`: its
hyperparameters, and its status only where the log records the end (Trainer's last
log entry, MLflow's status, W&B's exit record). `Run.last_wall_time` is the newest
clock time its points carry; `Run.not_shown` what it logged that is not drawn
(images, text, the model graph, ...).

The flow, one job per module: `discovery` (which directories and files are runs,
folding the layouts that spread one run over several directories) -> `sources` (one
reader per file or run directory, each reading only what changed: `eventdecode` with
`templates` and `tensors` for event records, the TFRecord framing itself being
`logformat.records`; `lightning_csv`, `hf_state`, `hparams`, `metric_csv`,
`mlflow_store`, `wandb` for the other formats) -> `tagmap` and `eval_sets` (foreign ->
canonical names), `train_loss` (the training loss of a run that names none) ->
`assemble` (raw series -> `Run`; `series` grows them, latest value per step;
`shards` sums a sharded run's parts) -> `logdir` (the reader), which also calls a run
whose run.json says ``running`` stopped once it has been silent far longer than its step
time (`liveness`: a killed process cannot say so), and fences every reader: whatever one
file's parser raises is one problem line for that file.
"""

from trainscope.analyzers.reading.logdir import (
    NO_RUNS_FOUND,
    LogDirReader,
    LogDirSnapshot,
    read_logdir,
    unreadable,
)
from trainscope.analyzers.reading.tagmap import DEFAULT_RULES, TagMapper, TagRule, is_canonical, parse_rule

__all__ = [
    "DEFAULT_RULES",
    "NO_RUNS_FOUND",
    "LogDirReader",
    "LogDirSnapshot",
    "TagMapper",
    "TagRule",
    "is_canonical",
    "parse_rule",
    "read_logdir",
    "unreadable",
]
