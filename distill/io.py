"""Atomic writes: a kill at any moment leaves the old artifact or the new one, never a torn one.

In a data-parallel run (distill.distributed) only rank 0 writes: on the other ranks `atomic_file` and
`atomic_directory` return without calling their writer, so every artifact has one author.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from polydistill.distributed import is_main
from polydistill.errors import DistillError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_file(path: str | Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` fills a temporary file beside `path`, which then replaces `path` in one rename.

    The temporary name keeps the suffix (`.x.png.tmp.png`), so writers that pick a format by it
    (matplotlib's savefig) still work.
    """
    path = Path(path)
    if not is_main():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_directory(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Let `write(tmp_dir)` fill a temporary sibling folder, then swap it in for `path`.

    If `write` raises, the temporary folder is removed and `path` is left as it was.
    """
    path = Path(path)
    if not is_main():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists() and _exchange(tmp, path):  # one atomic swap: `path` is the old folder or the new one
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        return path
    old = None
    if path.exists():  # no atomic exchange here: a kill between the two renames leaves the old one at `old`
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


# in a folder `distill export` or `distill trim-vocab` wrote: a later --overwrite may replace that folder
OUTPUT_MARKER = ".polydistill-output"


def check_output_dir(out_dir: str | Path, inputs: list[str | Path], *, overwrite: bool, what: str) -> None:
    """Refuse an OUT_DIR whose replacement could delete files polydistill did not write: one that is or contains
    an input, and an existing non-empty folder, unless `overwrite` and a previous export/trim left its marker."""
    out = Path(out_dir).resolve()
    for given in inputs:
        path = Path(given).resolve()
        if out == path or out in path.parents:
            raise DistillError(f"{what}: OUT_DIR {out_dir} is or contains the input {given}; write to a new folder")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DistillError(f"{what}: OUT_DIR {out_dir} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise DistillError(
            f"{what}: OUT_DIR {out_dir} exists and is not empty; choose a new folder "
            "(--overwrite replaces a folder an earlier export or trim-vocab wrote)"
        )
    if not (out / OUTPUT_MARKER).is_file():
        raise DistillError(
            f"{what}: OUT_DIR {out_dir} was not written by polydistill (no {OUTPUT_MARKER} in it); "
            "--overwrite replaces only those: choose a new folder"
        )


def mark_output_dir(out_dir: str | Path, what: str) -> None:
    """Leave the marker that lets a later `--overwrite` replace this folder."""
    note = f"written by distill {what}; --overwrite may replace this folder\n"
    atomic_write_text(Path(out_dir) / OUTPUT_MARKER, note)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step with Linux's renameat2(RENAME_EXCHANGE); False where that is unavailable."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # old kernel or a filesystem without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def save_pretrained_atomic(model, tokenizer, path: str | Path) -> Path:
    """`save_pretrained` (safetensors) of model and tokenizer into `path`, atomically."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return atomic_directory(path, write)


def save_figure(fig: Any, path: Path, dpi: int) -> Path:
    """Write a matplotlib figure to `path` atomically and close it, even when writing fails."""
    import matplotlib.pyplot as plt  # lazy: keeps distill --help, --version free of matplotlib

    try:
        atomic_file(path, lambda tmp: fig.savefig(tmp, dpi=dpi))
    finally:
        plt.close(fig)
    return path


@contextmanager
def run_directory_lock(directory: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on a run directory while a process writes it (rank 0; None on the other ranks):
    a second `distill run --resume` of the same run is refused instead of exporting into it at the same time.
    The lock is on the folder itself (flock on its descriptor), so no lock file is left behind, and the kernel
    releases it when the process dies, however it dies."""
    if directory is None:
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DistillError(
                f"{directory} is being written by another distill process; wait for it to finish (or stop it), "
                "then --resume"
            ) from None
        yield
    finally:
        os.close(fd)


RUN_LOG = "run.log"  # in a run directory: everything the run printed, without progress-bar redraws


class _Tee(io.TextIOBase):
    """A console stream that also appends to a log: whole lines go to both, progress-bar redraws (text with a
    carriage return) to the console only. It answers isatty() as the console does, so bars still decide alone."""

    def __init__(self, console: Any, log: Any) -> None:
        self.console, self.log = console, log

    def write(self, text: str) -> int:
        self.console.write(text)
        if "\r" not in text:
            self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.console.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def fileno(self) -> int:
        return self.console.fileno()


@contextmanager
def console_logged(path: Path, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """stdout and stderr also appended to `path` (a resumed run adds to its log) while the block runs.

    Yields a function that writes one line to the log alone, for what a quiet run keeps off the console
    (nothing at all when not `enabled`)."""
    if not enabled:
        yield lambda _line: None
        return
    with open(path, "a", encoding="utf-8") as log:

        def log_only(line: str) -> None:
            log.write(line + "\n")
            log.flush()

        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
        try:
            yield log_only
        finally:
            sys.stdout, sys.stderr = saved
