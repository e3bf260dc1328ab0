"""The run filter of the Runs and Compare pages: a substring, or a regular expression as in TensorBoard.

Case-insensitive either way, matched anywhere in the run's name (its path in the log
dir) or in the name its log gives it (`analyzers.run_names`, as the page shows it), so
``lr`` finds ``lr_too_low`` and ``sweep/lr_0.1``; with *Regex* on,
``^lightning/.*version_[0-3]$`` picks runs by pattern. A pattern that does not compile
says why in one line and filters nothing: the runs stay listed, none silently vanish.
The widgets bind to the URL (`KEY_FILTER`, `KEY_REGEX`), so a filtered view can be linked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import streamlit as st

from trainscope.app.escape import code, md

KEY_FILTER = "filter"
KEY_REGEX = "regex"


@dataclass(frozen=True)
class Filtered:
    names: list[str]  # the runs that match, in the order given
    error: str | None = None  # why the pattern could not be used (then `names` is every run)


def filter_runs(
    names: Sequence[str], pattern: str, regex: bool = False, labels: Mapping[str, str] | None = None
) -> Filtered:
    """The runs among `names` that `pattern` matches, in the name or in the label the page
    shows for it (`labels`); every run for an empty pattern."""
    if not pattern:
        return Filtered(list(names))
    known = labels or {}
    texts = {n: (n, known[n]) if known.get(n, n) != n else (n,) for n in names}
    if not regex:
        needle = pattern.casefold()
        return Filtered([n for n in names if any(needle in t.casefold() for t in texts[n])])
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        return Filtered(list(names), f"invalid regular expression {pattern!r}: {exc}")
    return Filtered([n for n in names if any(compiled.search(t) for t in texts[n])])


def show(names: Sequence[str], labels: Mapping[str, str] | None = None) -> list[str]:
    """The filter's widgets; returns the runs they let through and says how many that is."""
    box, toggle = st.columns([5, 1], vertical_alignment="bottom")
    pattern = box.text_input(
        "Filter runs",
        key=KEY_FILTER,
        bind="query-params",
        placeholder="part of a run's name, or a regular expression with Regex on",
        help="Case-insensitive. Off: runs whose name contains the text. On: a Python regular "
        "expression searched in the name, as TensorBoard's run filter (`^sweep/.*lr_0\\.1`).",
    )
    regex = toggle.toggle("Regex", key=KEY_REGEX, bind="query-params")
    result = filter_runs(names, pattern or "", regex, labels)
    if result.error is not None:
        st.warning(f"{md(result.error)}; showing every run.", icon=":material/regular_expression:")
    elif pattern:
        st.caption(f"{len(result.names)} of {len(names)} runs match {code(pattern)}")
    return result.names
