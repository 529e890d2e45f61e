"""The one error type users see: the CLI prints it as a single line and exits non-zero."""


class DistillError(Exception):
    """A user-facing problem (bad recipe, missing path, failed gate) with a one-line message."""


class RecipeError(DistillError):
    """The recipe is malformed: YAML syntax, unknown key, wrong type or bad value."""
