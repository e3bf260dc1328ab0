"""One wording of a span of time for the pages and the report (`analyzers.durations`)."""

from __future__ import annotations

import pytest

from trainscope.analyzers.durations import duration


@pytest.mark.parametrize(
    "seconds, said",
    [
        (0, "0 s"),
        (12.4, "12 s"),
        (89, "89 s"),
        (90, "2 min"),  # a unit from 1.5 of it: "1 min" would hide half a minute
        (50 * 60, "50 min"),
        (90 * 60, "1.5 h"),
        (2 * 3600, "2 h"),  # not "2.0 h"
        (3.5 * 3600, "3.5 h"),
        (10 * 3600, "10 h"),
        (36 * 3600, "2 days"),
        (7.8 * 86400, "8 days"),  # whole days: the page's "last logged" metric has room for "8 days ago"
        (12 * 86400, "12 days"),
        (-5, "0 s"),  # a clock set back
        (float("nan"), "0 s"),
    ],
)
def test_a_span_is_said_in_the_unit_people_use(seconds, said):
    assert duration(seconds) == said


def test_the_page_and_the_killed_run_note_say_a_span_the_same_way():
    from trainscope.analyzers.reading import liveness
    from trainscope.app import summaries

    assert summaries.duration is liveness.duration is duration
