"""What a run prints: polydistill's own verbosity, and the third-party chatter it holds back while it works.

`distill run` (and the Python API) print stage progress and an end-of-run summary. transformers and datasets
would add their own progress bars ("Loading weights", "Writing model shards", "Generating train split") and
info logs, drawn with carriage returns even into a log file; `third_party_quiet` turns those off for the
duration of a library call and puts them back afterwards, so a notebook that imported polydistill keeps its own
settings. Nothing here imports torch, transformers or datasets at import time: `distill validate` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

LOGGER_NAME = "polydistill"
# how much a run prints: QUIET the end summary only (run.log still gets every line), NORMAL stage progress too,
# VERBOSE also the third-party bars and info logs (for debugging a loader or a slow download)
QUIET, NORMAL, VERBOSE = 0, 1, 2


def add_verbosity_flags(parser: argparse.ArgumentParser, *, quiet: str) -> None:
    """`-q/--quiet` (help text `quiet`) and `-v/--verbose`, one or the other."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help=quiet)
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show transformers' and datasets' progress bars and messages (held back by default)",
    )


def verbosity_of(args: argparse.Namespace) -> int:
    """distill.console's QUIET, NORMAL or VERBOSE from the parsed -q / -v flags."""
    return QUIET if getattr(args, "quiet", False) else VERBOSE if getattr(args, "verbose", False) else NORMAL


def logger() -> logging.Logger:
    """The library's logger: the Python API sends its progress and summary lines here at INFO."""
    return logging.getLogger(LOGGER_NAME)


def silent(_line: str) -> None:
    """A `say` that prints nothing (other ranks of a data-parallel run, `-q` progress)."""


@contextmanager
def library_logging() -> Iterator[Callable[[str], None]]:
    """A `say` for the Python API: each line goes to the `polydistill` logger at INFO.

    Whoever configured `logging` decides where the lines go and which show. When nobody did (no handler on
    that logger or above it, as in a fresh notebook), a handler printing bare lines to stdout is attached
    for the call and removed after it, so progress shows by default without the library configuring logging
    for good."""
    log = logger()
    if log.hasHandlers():
        yield log.info
        return
    handler, level = _CurrentStdout(), log.level
    log.addHandler(handler)
    if level == logging.NOTSET:
        log.setLevel(logging.INFO)
    try:
        yield log.info
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


class _CurrentStdout(logging.StreamHandler):
    """Bare lines to whatever `sys.stdout` is when a line is emitted, not when the handler was made: during a
    run that is the tee into run.log (polydistill.io.console_logged), in a notebook the cell's output."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        """StreamHandler assigns a stream when constructed; this handler always looks sys.stdout up instead."""


@contextmanager
def third_party_quiet(enabled: bool = True, *, datasets: bool = True) -> Iterator[None]:
    """transformers' and datasets' logs below ERROR and their progress bars off while the block runs; both
    libraries' own settings are put back on the way out, whatever happened. `enabled=False` (VERBOSE) leaves
    them alone; `datasets=False` leaves datasets unimported where the block does not read data with it (its
    import alone takes seconds out of `distill bench`'s budget)."""
    if not enabled:
        yield
        return
    with _transformers_quiet():
        if not datasets:
            yield
            return
        with _datasets_quiet():
            yield


@contextmanager
def _transformers_quiet() -> Iterator[None]:
    from transformers.utils import logging as hf_logging  # lazy: keeps distill --help, --version free of transformers

    bars = hf_logging.is_progress_bar_enabled, hf_logging.disable_progress_bar, hf_logging.enable_progress_bar
    with _quiet(hf_logging, *bars):
        yield


@contextmanager
def _datasets_quiet() -> Iterator[None]:
    try:
        import datasets  # lazy: optional here (bench machines may lack it)
        from datasets.utils import logging as ds_logging  # lazy: as above
    except ImportError:  # `distill bench` on a machine without datasets (benchmarks/gpu.sh): nothing to hold back
        yield
        return
    bars_on = lambda: not datasets.are_progress_bars_disabled()  # noqa: E731
    with _quiet(ds_logging, bars_on, datasets.disable_progress_bars, datasets.enable_progress_bars):
        yield


@contextmanager
def _quiet(
    logs: Any, bars_on: Callable[[], bool], bars_off: Callable[[], None], bars_back: Callable[[], None]
) -> Iterator[None]:
    """A library's logs (`logs`: its logging module, with get_verbosity / set_verbosity) at ERROR and its progress
    bars off for the block; both as they were after it."""
    verbosity, bars = logs.get_verbosity(), bars_on()
    logs.set_verbosity(logging.ERROR)
    bars_off()
    try:
        yield
    finally:
        logs.set_verbosity(verbosity)
        if bars:
            bars_back()
