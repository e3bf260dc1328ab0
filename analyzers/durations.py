"""A span of time as people say it: ``12 s``, ``4 min``, ``3.5 h``, ``8 days``.

One wording for every place that tells one (how long ago a run logged, how long a killed
run has been silent), so the page and the report never say the same span two ways.
"""

from __future__ import annotations

import math

# Each unit is used from 1.5 of it (90 s is "2 min", not "1 min"), in seconds.
_UNITS = ((86400.0, "days"), (3600.0, "h"), (60.0, "min"))


def duration(seconds: float) -> str:
    """``"12 s"``, ``"4 min"``, ``"3.5 h"``, ``"12 h"``, ``"3 days"``: whole seconds, minutes and
    days; hours to one decimal below 10 of them (``2 h``, not ``2.0 h``), whole from there."""
    if math.isnan(seconds) or seconds < 0:  # a clock set back, or no clock: no time at all
        seconds = 0.0
    for per, unit in _UNITS:
        if seconds >= 1.5 * per:
            n = seconds / per
            if (
                unit != "h" or n >= 10
            ):  # days whole: "8 days ago" fits the page's metric, "7.8 days a…" did not
                return f"{n:.0f} {unit}"
            return f"{n:.1f}".removesuffix(".0") + f" {unit}"
    return f"{seconds:.0f} s"
