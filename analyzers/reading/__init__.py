"""Reading log dirs into canonical `Run`s: TensorBoard event files, Lightning CSV, HF state.

Use `LogDirReader` for a log dir that is still being written, `read_logdir` for a
one-off read (the command line). Both return a `LogDirSnapshot`: the runs by name
(their path relative to the log dir, "." for the log dir itself) and log-dir-level
problems. The dashboard keeps one reader per log dir and refreshes it::

    @st.cache_resource
    def reader(logdir: str) -> LogDirReader:
        return LogDirReader(logdir)

    snapshot = reader(logdir).refresh()      # cheap when nothing changed (a few ms)
    for name, run in snapshot.runs.items():  # an unchanged run is the same object as before,
        ...                                  # so per-run work can be cached on it

Foreign tag names are mapped by `tagmap.DEFAULT_RULES`; pass your own `TagRule`s
(tried first) as ``LogDirReader(path, extra_rules=[...])`` or ``--map`` on the
command line. What a run could not map stays in `Run.unmapped`; where a run's steps
count epochs, `Run.epoch_axis` says so; `Run.tag_origins` names the foreign tag
behind each canonical one.

Modules, one job each: `discovery` (which directories are runs), `sources` (one
reader per file; the TFRecord framing itself is `logformat.records`), `eventdecode`
with `templates` and `tensors` (event records -> points), `lightning_csv`,
`hf_state`, `tagmap` (foreign -> canonical names), `series` (growing series, latest
value per step), `assemble` (raw series -> `Run`), `logdir` (the reader).
"""

from analyzers.reading.logdir import NO_RUNS_FOUND, LogDirReader, LogDirSnapshot, read_logdir, unreadable
from analyzers.reading.tagmap import DEFAULT_RULES, TagMapper, TagRule, is_canonical, parse_rule

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
