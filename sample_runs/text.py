"""The text of the language-model sample runs: sentences from a small grammar, written here.

A few dozen words and a dozen sentence patterns about a harbour town, drawn by a
seeded generator: the same seed gives the same text, character for character, on
every machine and Python version (only `random.Random.random`, whose sequence for a
given seed Python guarantees not to change, picks anything). The text is part of
the project and shares its licence: nothing is downloaded.

It has what a character model can learn in a few hundred steps: spelling (a fixed
set of words), word order (patterns), agreement (a plural subject takes a verb
without "s"), punctuation and line breaks; and what it cannot learn away: which
word comes next is a real choice, so no model gets the loss near zero (the healthy
GPT run ends at 0.61 nats per character on the validation text, from ln 33 = 3.50).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

TEXT_SEED = 1234  # the seed of the committed runs' text
TEXT_CHARS = 24_000  # characters to generate: ~4,000 words, a few hundred sentences

# The lexicon. A noun phrase is an article, maybe an adjective, and a noun.
_SINGULAR = ("fisher", "baker", "sailor", "child", "cat", "dog", "old woman", "miller", "captain", "gull")
_PLURAL = ("fishers", "bakers", "sailors", "children", "cats", "dogs", "old men", "traders", "gulls")
_THINGS = ("net", "boat", "loaf", "basket", "rope", "lamp", "letter", "barrel", "sail", "key")
_ADJECTIVES = ("small", "old", "red", "wet", "heavy", "quiet", "bright", "broken", "warm")
_PLACES = ("the harbour", "the market", "the mill", "the lighthouse", "the bridge", "the inn", "the shore")
_TIMES = ("at dawn", "in the evening", "after the storm", "every morning", "before the tide turns", "at noon")
# Verbs as (singular, plural) forms.
_CARRY = (("carries", "carry"), ("mends", "mend"), ("finds", "find"), ("sells", "sell"), ("loses", "lose"))
_MOVE = (("walks", "walk"), ("runs", "run"), ("sails", "sail"), ("waits", "wait"), ("sleeps", "sleep"))
_SAY = (("says", "say"), ("thinks", "think"), ("hears", "hear"))


class _Draw:
    """Choices from one seeded stream, made with `random()` alone (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def chance(self, p: float) -> bool:
        return self._rng.random() < p

    def pick(self, options: Sequence[str]) -> str:
        return options[min(int(self._rng.random() * len(options)), len(options) - 1)]

    def verb(self, verbs: Sequence[tuple[str, str]], plural: bool) -> str:
        singular_form, plural_form = verbs[min(int(self._rng.random() * len(verbs)), len(verbs) - 1)]
        return plural_form if plural else singular_form


def _subject(draw: _Draw) -> tuple[str, bool]:
    """A noun phrase and whether it is plural."""
    plural = draw.chance(0.4)
    noun = draw.pick(_PLURAL if plural else _SINGULAR)
    article = draw.pick(("the", "some")) if plural else draw.pick(("the", "the", "a"))
    if draw.chance(0.3):
        noun = f"{draw.pick(_ADJECTIVES)} {noun}"
    if article == "a" and noun[0] in "aeiou":
        article = "an"
    return f"{article} {noun}", plural


def _thing(draw: _Draw) -> str:
    noun = draw.pick(_THINGS)
    if draw.chance(0.4):
        noun = f"{draw.pick(_ADJECTIVES)} {noun}"
    return f"the {noun}"


def _clause(draw: _Draw) -> str:
    subject, plural = _subject(draw)
    pattern = draw.pick(("carry", "carry_to", "move", "move_time", "say"))
    if pattern == "carry":
        return f"{subject} {draw.verb(_CARRY, plural)} {_thing(draw)}"
    if pattern == "carry_to":
        return f"{subject} {draw.verb(_CARRY, plural)} {_thing(draw)} to {draw.pick(_PLACES)}"
    if pattern == "move":
        return f"{subject} {draw.verb(_MOVE, plural)} to {draw.pick(_PLACES)}"
    if pattern == "move_time":
        return f"{draw.pick(_TIMES)} {subject} {draw.verb(_MOVE, plural)} by {draw.pick(_PLACES)}"
    return f"{subject} {draw.verb(_SAY, plural)} that {_clause(draw)}"


def sentence(draw: _Draw) -> str:
    text = _clause(draw)
    if draw.chance(0.25):
        text += f", and {_clause(draw)}"
    return text[0].upper() + text[1:] + "."


def generate_text(chars: int = TEXT_CHARS, seed: int = TEXT_SEED) -> str:
    """At least `chars` characters of sentences, a few to a line, ending with a newline."""
    draw = _Draw(seed)
    lines: list[str] = []
    total = 0
    while total < chars:
        count = 1 + int(draw.chance(0.5)) + int(draw.chance(0.3))
        line = " ".join(sentence(draw) for _ in range(count))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"
