"""The one error type users see: the CLI prints it as a single line and exits non-zero."""

import difflib
from typing import Any


class DistillError(Exception):
    """A user-facing problem (bad recipe, missing path, failed gate) with a one-line message."""

    def __str__(self) -> str:  # one line even when it quotes user input holding line breaks
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")


class RecipeError(DistillError):
    """The recipe is malformed: YAML syntax, unknown key, wrong type or bad value."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of a library exception's message (its type name if it has none), for a
    one-line `DistillError` that wraps it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def suggest(word: str, options: Any) -> str:
    """A ` (did you mean 'x'?)` hint, or an empty string when nothing is close."""
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
