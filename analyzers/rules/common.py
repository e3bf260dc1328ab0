"""What every rule needs besides numbers: required signals, run.json facts, wording, citations.

Rules never guess. A missing signal or too short a series raises `Skip` with a reason
the user can act on; run.json facts (batch size, optimizer, layer order) are read
through the helpers here so that a foreign log without run.json simply has fewer facts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from trainscope.analyzers.findings import WAITING_FOR_DATA, Finding, Severity, Skip
from trainscope.analyzers.run import Run, Series

# --- building runs (tests, benchmarks, what-ifs) ---------------------------------------


def make_run(
    scalars: Mapping[str, Series | tuple[Any, Any]],
    meta: Mapping[str, Any] | None = None,
    name: str = "synthetic",
) -> Run:
    """A `Run` from in-memory arrays: ``{tag: (steps, values)}`` or ``{tag: Series}``."""
    series = {
        tag: s if isinstance(s, Series) else Series.from_lists(s[0], s[1]) for tag, s in scalars.items()
    }
    return Run(name=name, path=name, source="trainscope", scalars=series, meta=dict(meta or {}))


# --- required signals --------------------------------------------------------------------


def missing_reason(signal: str, what: str) -> str:
    return f"needs {signal} ({what}), which this run does not log"


def missing_meta_reason(key: str, what: str) -> str:
    return f"needs run.json {key} ({what}), which this run does not have"


def require_scalar(run: Run, tag: str, what: str) -> Series:
    """The series of `tag`, or `Skip` naming it."""
    series = run.scalar(tag)
    if series is None:
        raise Skip(missing_reason(tag, what))
    return series


def require_layers(run: Run, prefix: str, what: str) -> dict[str, Series]:
    """Per-layer series under `prefix`, or `Skip` naming the family (``grad/norm/*``)."""
    layers = run.layers(prefix)
    if not layers:
        raise Skip(missing_reason(prefix + "*", what))
    return layers


def require_points(have: int, need: int, what: str) -> None:
    """`Skip` with "not enough data yet" unless `have` >= `need`."""
    if have < need:
        raise Skip(f"{WAITING_FOR_DATA}: {have:,} of {need:,} {what}")


def require_finite_points(series: Series, need: int, what: str) -> None:
    """Like `require_points` on the finite values, but a series that went NaN/Inf says so."""
    finite = np.isfinite(series.values)
    have = int(finite.sum())
    if have >= need:
        return
    if have < len(series):
        first_bad = int(series.steps[np.flatnonzero(~finite)[0]])
        raise Skip(
            f"only {have:,} finite {what} (needs {need:,}): the values are NaN/Inf from step {first_bad:,} "
            "(see nonfinite)"
        )
    require_points(have, need, what)


# --- wording -----------------------------------------------------------------------------


def quote(layer: str) -> str:
    """A layer's module name set off from the prose (``0`` alone reads as a number)."""
    return f"`{layer}`"


def fmt(x: float) -> str:
    """A number as people read it: 3 significant digits, scientific only when tiny or huge."""
    if x is None or not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        mantissa, exp = f"{x:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{x:.3g}"


def fmt_step(step: int | float) -> str:
    return f"{int(step):,}"


def fmt_pct(fraction: float) -> str:
    """0.234 -> "23%"; small fractions keep a decimal ("0.4%"), and so does a share just short of
    the whole (0.997 -> "99.7%", 0.99996 -> "99.9%"): "fell 100%" would say it reached zero."""
    value = 100.0 * fraction
    if 99.5 <= abs(value) < 100:
        return f"{math.copysign(math.floor(abs(value) * 10) / 10, value):.1f}%"
    return f"{value:.1f}%" if abs(value) < 10 else f"{value:.0f}%"


def fmt_change(ratio: float) -> str:
    """A relative change new/old as people say it: 1.23 -> "+23%", 0.6 -> "-40%", 38.0 -> "38x"."""
    return fmt_factor(ratio) if ratio >= 10 else f"{'+' if ratio >= 1 else '-'}{fmt_pct(abs(ratio - 1))}"


def fmt_factor(factor: float) -> str:
    """12.3 -> "12x"; 2.46 -> "2.5x"; 2.5e7 -> "2.5e7x"."""
    if factor >= 1e5:
        return f"{fmt(factor)}x"
    return f"{factor:.2g}x" if factor < 10 else f"{factor:,.0f}x"


def fmt_points(fraction: float) -> str:
    """An accuracy difference in percentage points: 0.0301 -> "3 points", 0.111 -> "11 points"."""
    return (
        f"{100 * fraction:.0f} points"
        if abs(fraction) >= 0.095 or abs(fraction) < 0.0005
        else f"{100 * fraction:.1f} points"
    )


def sentence(text: str) -> str:
    """First letter upper-cased, the rest untouched (layer names and tags keep their case)."""
    return text[:1].upper() + text[1:]


def cite(*quotes: tuple[str, int, str] | tuple[str, int, str, str]) -> str:
    """The source line(s) a rule's advice rests on, each with its English gloss where given:
    ``000 line 67: "…" (English: …); 001 line 24: "…" (English: …)``.

    The documents are in Chinese; a reader who does not read it still learns what the
    line says. Each rule module spells a quote and its gloss once, in its ``*_SOURCE``.
    """
    return "; ".join(
        f'{q[0]} line {q[1]}: "{q[2]}"' + (f" ({GLOSS_LABEL}: {q[3]})" if len(q) > 3 else "") for q in quotes
    )


GLOSS_LABEL = "English"  # cite's ``(English: ...)`` after a quote; `quotes` reads it back


def quotes(source: str) -> list[tuple[str, int, str, str | None]]:
    """`cite`'s text read back: ``(document, line, quote, gloss or None)`` for each line cited."""
    found = re.finditer(
        r'(\d{3}) line (\d+): "(.*?)"(?: \(' + GLOSS_LABEL + r": (.*?)\))?(?=; \d{3} line |$)", source
    )
    return [(m.group(1), int(m.group(2)), m.group(3), m.group(4)) for m in found]


# --- findings ----------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays become floats/ints/lists, NaN/Inf become None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def finding(
    rule: str,
    severity: Severity,
    title: str,
    message: str,
    advice: Iterable[str],
    source: str,
    step: int | None = None,
    layer: str | None = None,
    evidence: Mapping[str, Any] | None = None,
) -> Finding:
    """A `Finding` whose evidence is guaranteed JSON-serializable."""
    return Finding(
        rule=rule,
        severity=severity,
        title=title,
        message=message,
        advice=tuple(advice),
        source=source,
        step=None if step is None else int(step),
        layer=layer,
        evidence=jsonable(dict(evidence or {})),
    )
