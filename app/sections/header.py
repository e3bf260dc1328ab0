"""The top of a run's page: its name and health, where it has got to, what it is, and the exports."""

from __future__ import annotations

import time

import streamlit as st

from trainscope.analyzers.diagnose import Diagnosis
from trainscope.analyzers.durations import duration
from trainscope.analyzers.facts import batch_size, data_parallel_ranks, optimizer_type
from trainscope.analyzers.formatting import plain
from trainscope.analyzers.reading.assemble import EPOCH_SERIES_NAMES
from trainscope.app.escape import code, md
from trainscope.app.export import diagnosis_json, diagnosis_markdown
from trainscope.app.summaries import HEALTH_COLOR, HEALTH_ICON, health, last_logged, last_step
from trainscope.logformat import runjson as RJ


def show(logdir: str, d: Diagnosis, label: str | None = None) -> None:
    """The header of `d`'s run, titled `label` (the name the page lists it by, with its folder
    under it where the two differ), else its name."""
    run = d.run
    state = health(d)
    st.title(md(label or run.name))
    st.badge(state, icon=HEALTH_ICON[state], color=HEALTH_COLOR[state])

    step = last_step(run)
    logged = last_logged(run)
    status = run.status or "unknown"
    if run.meta and run.meta.get(RJ.K_STATUS_REASON):
        status += f" ({run.meta[RJ.K_STATUS_REASON]})"
    cols = st.columns(5)
    cols[0].metric("Last step", f"{step:,}" if step is not None else "none yet")
    cols[1].metric("Critical", sum(f.severity == "critical" for f in d.findings))
    cols[2].metric("Warnings", sum(f.severity == "warning" for f in d.findings))
    cols[3].metric("Last logged", f"{duration(time.time() - logged)} ago" if logged else "unknown")
    cols[4].metric("Status", run.status or "unknown")

    facts = [f"source: {md(run.source)}", f"status: {md(status)}"]
    if label and label != run.name:
        facts.insert(0, f"folder: {code(run.name)}")
    if optimizer_type(run):
        facts.append(f"optimizer: {md(optimizer_type(run))}")
    if batch_size(run):
        ranks = data_parallel_ranks(run)
        facts.append(f"batch size: {batch_size(run)}" + (f" per rank × {ranks} ranks" if ranks > 1 else ""))
    other = [tag for tag in run.unmapped if tag not in EPOCH_SERIES_NAMES]  # the epoch count is an axis
    facts.append(f"{len(run.scalars)} signals" + (f", {len(other)} other series" if other else ""))
    st.caption(" · ".join(facts))

    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in run.name) or "run"
    with st.container(horizontal=True, vertical_alignment="center"):
        st.download_button(
            "Diagnosis as JSON",
            diagnosis_json(logdir, d),
            file_name=f"trainscope-{safe_name}.json",
            mime="application/json",
            icon=":material/download:",
            on_click="ignore",
            help="The findings in the shape of `python -m analyzers LOGDIR --json`, for this run",
        )
        st.download_button(
            "Diagnosis as Markdown",
            diagnosis_markdown(logdir, d),
            file_name=f"trainscope-{safe_name}.md",
            mime="text/markdown",
            icon=":material/download:",
            on_click="ignore",
            help="The findings with their numbers, advice and sources, to paste into an issue or a report",
        )
    if run.meta:
        with st.expander("Run details: hyperparameters, optimizer, model (run.json)"):
            st.json(plain(run.meta), expanded=1)
