"""Text from a log, made safe to show: run names, tags, layer names and anything quoting them.

Streamlit renders Markdown in `st.markdown`, alerts, captions and widget labels. Text
from a log must show as the characters it is, so every Markdown control character
is escaped with a backslash (CommonMark lets any ASCII punctuation be escaped), as
are Streamlit's own directives (``:red[...]``, ``:material/icon:``, ``$math$``).
HTML is never enabled anywhere in the app, so a ``<script>`` stays text either way.
"""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&\"'=^@%])")


def md(text: object) -> str:
    """`text` as Markdown that renders to exactly that text on one line."""
    s = str(text)
    if not s.isprintable():
        s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    return _SPECIAL.sub(r"\\\1", s)


def prose(text: object) -> str:
    """A finding's text as Markdown: what the rules quote in backticks (names) as code, the rest as text.

    Backticks pair up left to right; an unpaired one stays a plain character.
    Whatever a log put inside the quotes can only ever become inline code.
    """
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: keep it, as text, with what follows it
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    return "".join(md(part) if i % 2 == 0 else code(part) for i, part in enumerate(parts))


def code(text: object) -> str:
    """`text` as inline code (monospace), for names: backticks inside are replaced, not escaped."""
    s = str(text).replace("`", "'")
    if not s.isprintable():
        s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    return f"`{s}`"
