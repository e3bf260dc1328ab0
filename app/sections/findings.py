"""A run's findings as causes and symptoms: each root cause, most severe first, with what was
measured, what to do, where the advice comes from and a link to the chart where it shows, and the
symptoms it explains folded under it. Then what could not be checked, and why."""

from __future__ import annotations

import inspect

import pandas as pd
import streamlit as st

from trainscope.analyzers.diagnose import Diagnosis
from trainscope.analyzers.findings import Finding
from trainscope.analyzers.formatting import evidence_items, plain, symptom_list
from trainscope.analyzers.layer_names import describe
from trainscope.analyzers.layer_names import titled as layer_titled
from trainscope.analyzers.rules import ALL_RULES
from trainscope.analyzers.rules.common import quotes
from trainscope.analyzers.run import Run
from trainscope.analyzers.summary import end_of_run_advice
from trainscope.app.catalog import charts_of
from trainscope.app.escape import code, md, prose
from trainscope.app.summaries import CRITICAL, OK, WAITING, WARNING, health

SEVERITY_BADGE = {
    "critical": ":red-badge[:material/error: critical]",
    "warning": ":orange-badge[:material/warning: warning]",
    "info": ":blue-badge[:material/info: info]",
}
RULE_DOCS = {rule: inspect.cleandoc(fn.__doc__ or "") for rule, fn in ALL_RULES}


def show(d: Diagnosis) -> None:
    st.header("Findings", anchor="findings")
    state = health(d)
    if state == OK:
        st.success(
            "No problems found: every check that could run on this run came out clean.",
            icon=":material/check_circle:",
        )
    elif state == WAITING and not any(f.severity in (CRITICAL, WARNING) for f in d.findings):
        st.info(
            "Nothing found so far, but some checks wait for more data (see *Not checked* below).",
            icon=":material/hourglass_top:",
        )
    collector_errors(d.run)  # before the findings: it says why some signals are missing
    roots = d.roots
    serious = [f for f in roots if f.severity in (CRITICAL, WARNING)]
    for group in by_rule(serious):
        card(group, d)
    infos = [f for f in roots if f.severity not in (CRITICAL, WARNING)]
    if infos:
        with st.expander(f"{len(infos)} informational finding(s)", icon=":material/info:"):
            for group in by_rule(infos):
                card(group, d)
    general(d)
    skipped(d)
    problems(d)


def by_rule(findings: list[Finding]) -> list[list[Finding]]:
    """Findings of the same rule together (one per layer, say), in the order of each rule's most severe."""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.rule, []).append(f)
    return list(groups.values())


def card(group: list[Finding], d: Diagnosis) -> None:
    """A root cause in full (the rule's most severe finding), what it explains, its other findings
    (other layers), and the symptoms it explains folded below it, each with the advice still worth
    taking once the cause is treated."""
    run = d.run
    first, rest = group[0], group[1:]
    explained = [s for f in group for s in d.explained_by(f)]
    with st.container(border=True):
        st.markdown(f"{SEVERITY_BADGE.get(first.severity, first.severity)} **{prose(titled(first, run))}**")
        st.caption(where(first, run))
        if explained:
            st.markdown(f"**Root cause** · explains: {prose(symptom_list(explained))}")
        st.markdown(prose(first.message))
        measured(first)
        if first.advice:
            st.markdown(
                "**What to do**\n\n" + "\n".join(f"{i}. {prose(a)}" for i, a in enumerate(first.advice, 1))
            )
        if first.source:
            source(first.source)
        links = [f"[{chart.title} chart ↓](#{chart.anchor})" for chart in charts_of(first.rule, run)]
        if links:
            st.markdown(
                "**See it on the** "
                + " · ".join(links)
                + (f" (dashed line at step {first.step:,})" if first.step is not None else "")
            )
        if rest:
            with st.expander(f"The same in {len(rest)} more place(s)"):
                for f in rest:
                    st.markdown(f"{SEVERITY_BADGE.get(f.severity, f.severity)} **{prose(titled(f, run))}**")
                    st.caption(where(f, run))
                    st.markdown(prose(f.message))
                    measured(f)
        if explained:
            symptoms(explained, run)
        with st.expander(f"About {first.rule}, and all evidence"):
            if RULE_DOCS.get(first.rule):
                st.markdown(RULE_DOCS[first.rule])
            for f in group:
                st.json(plain(f.evidence), expanded=1)


def symptoms(explained: list[Finding], run: Run) -> None:
    """The symptoms a cause explains: what each measured, and only the advice that still helps."""
    with st.expander(f"{len(explained)} symptom(s) of this cause", icon=":material/account_tree:"):
        for f in explained:
            st.markdown(
                f"{SEVERITY_BADGE.get(f.severity, f.severity)} **{prose(titled(f, run))}**  \n"
                f"*explained by* {code(f.caused_by or '')}"
            )
            st.caption(where(f, run))
            st.markdown(prose(f.message))
            measured(f)
            if f.advice:
                st.markdown(
                    "**Still worth doing once the cause is fixed**\n\n"
                    + "\n".join(f"{i}. {prose(a)}" for i, a in enumerate(f.advice, 1))
                )


def source(text: str) -> None:
    """The lines the advice rests on: each Chinese quote with its English gloss beside it."""
    cited = quotes(text)
    if not cited:
        st.caption(f"Source: {md(text)}")
        return
    st.caption(
        "Source:  \n"
        + "  \n".join(
            f"{doc} line {line}: “{md(quote)}”" + (f" · *{md(gloss)}*" if gloss else "")
            for doc, line, quote, gloss in cited
        )
    )


def where(f: Finding, run: Run) -> str:
    parts = [code(f.rule)]
    if f.step is not None:
        parts.append(f"from step {f.step:,}")
    if f.layer is not None:
        what = describe(run, f.layer)
        parts.append(f"layer {code(f.layer)}" + (f" ({md(what)})" if what else ""))
    return " · ".join(parts)


def titled(f: Finding, run: Run) -> str:
    """The finding's title with its layer described where it first names it (`layer_names.titled`)."""
    return layer_titled(f.title, f.layer, run)


def measured(f: Finding) -> None:
    numbers = evidence_items(f)
    if numbers:
        st.markdown("**Measured:** " + " · ".join(f"{md(key)} {code(value)}" for key, value in numbers))


def general(d: Diagnosis) -> None:
    advice = end_of_run_advice(d.run)
    if not advice:
        return
    with st.expander(f"General advice for a finished run ({len(advice)})", icon=":material/lightbulb:"):
        for a in advice:
            st.markdown(f"**{prose(a.title)}**  \n{prose(a.message)}")
            source(a.source)


def skipped(d: Diagnosis) -> None:
    if not d.skipped:
        return
    with st.expander(
        f"Not checked: {len(d.skipped)} of {len(ALL_RULES)} rules could not run on this run",
        icon=":material/block:",
    ):
        st.dataframe(
            pd.DataFrame([{"rule": s.rule, "why not": s.reason} for s in d.skipped]),
            hide_index=True,
            column_config={"why not": st.column_config.TextColumn(width="large")},
        )


def collector_errors(run: Run) -> None:
    errors = run.collector_errors
    if not errors:
        return
    st.warning(
        f"**The collector reported {len(errors)} problem(s)** while recording this run: what each names"
        " was switched off, so its signals are missing and the checks that need them did not run."
        "\n\n" + "\n".join(f"- {md(e)}" for e in errors),
        icon=":material/sensors_off:",
    )


def problems(d: Diagnosis) -> None:
    if not d.run.problems:
        return
    st.warning(
        f"**{len(d.run.problems)} reading problem(s)**: parts of this run could not be read and were skipped."
        "\n\n" + "\n".join(f"- {md(p)}" for p in d.run.problems),
        icon=":material/warning:",
    )
