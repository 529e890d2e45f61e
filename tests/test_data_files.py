"""A broken SIB-200 data file is one line naming the file (and the line, where there is one), exit code 2, no
traceback, nothing written; whatever bytes a split file holds, loading it either works or says so in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from polydistill.cli import main
from polydistill.config import DataConfig
from polydistill.data import load_task_data, resolve_local_root
from polydistill.errors import DistillError

LANG = "eng_Latn"
ROWS = 24  # data rows kept per split: small enough to load in milliseconds


@pytest.fixture
def sib_copy(tmp_path, sib200_path) -> Path:
    """One language of SIB-200, each split cut to its header and first ROWS data rows."""
    root, source = tmp_path / "sib", resolve_local_root(str(sib200_path))
    (root / LANG).mkdir(parents=True)
    for split in ("train", "dev", "test"):
        lines = (source / LANG / f"{split}.tsv").read_bytes().splitlines(keepends=True)
        (root / LANG / f"{split}.tsv").write_bytes(b"".join(lines[: ROWS + 1]))
    shutil.copy(source / LANG / "labels.txt", root / LANG / "labels.txt")
    return root


def _rewrite_line(path: Path, number: int, change) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[number - 1] = change(lines[number - 1])
    path.write_bytes(b"".join(lines))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


CASES = {
    "no category column": ("train.tsv", 1, lambda line: line.replace(b"category", b"topic"),
                           "train.tsv lacks column(s) ['category']"),
    "a row with an extra field": ("train.tsv", 3, lambda line: line.rstrip(b"\n") + b"\tsurplus\n",
                                  "train.tsv line 3: 4 fields, but the header names 3"),
    "an unbalanced quote": ("dev.tsv", 4, lambda line: line.replace(b"\t", b'\t"', 2),
                            "dev.tsv line 4:"),
    "invalid UTF-8": ("test.tsv", 5, lambda line: line[:10] + b"\xff\xfe" + line[10:],
                      "test.tsv line 5: not UTF-8 (byte 0xff)"),
    "a label listed twice": ("labels.txt", 3, lambda line: line + line, "labels.txt line 4: label"),
    "an index_id that is no number": ("train.tsv", 2, lambda line: b"x" + line,
                                      "train.tsv: index_id 'x"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_broken_data_file_is_one_line_naming_it_exit_2_and_nothing_written(tmp_path, sib_copy, capsys, case):
    name, line, change, message = CASES[case]
    _rewrite_line(sib_copy / LANG / name, line, change)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: t\noutput_dir: {tmp_path}/runs\ndata:\n  path: {sib_copy}\n  languages: [{LANG}]\n"
        "student:\n  num_layers: 1\n"
    )
    before = _tree(tmp_path)
    code = main(["run", str(recipe)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.splitlines() == [err] and message in err and "Traceback" not in err
    assert _tree(tmp_path) == before


def test_a_byte_order_mark_in_labels_txt_is_not_part_of_the_first_label(sib_copy):
    labels = sib_copy / LANG / "labels.txt"
    names = labels.read_text(encoding="utf-8").split()
    labels.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())
    data = load_task_data(DataConfig(path=str(sib_copy), languages=[LANG]))
    assert data.labels == names


def test_crlf_line_endings_and_quoted_cells_read_as_pandas_wrote_them(sib_copy):
    train = sib_copy / LANG / "train.tsv"
    original = load_task_data(DataConfig(path=str(sib_copy), languages=[LANG])).splits["train"][LANG]["text"]
    _rewrite_line(train, 2, lambda line: b'"%s"\t%s\t"%s"\n' % tuple(line.rstrip(b"\n").split(b"\t")))  # all quoted
    train.write_bytes(train.read_bytes().replace(b"\n", b"\r\n"))
    again = load_task_data(DataConfig(path=str(sib_copy), languages=[LANG])).splits["train"][LANG]["text"]
    assert again == original


# bytes a hand-edited or badly exported split file may hold: delimiters, quotes, line breaks, a BOM, bad UTF-8
NASTY = st.sampled_from([b"\t", b'"', b"\n", b"\r\n", b"\r", b"\xef\xbb\xbf", b"\xff", b"\xc3", b"", b"x", b"\x00"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1), NASTY, st.integers(0, 3)), min_size=1, max_size=4))
@example(edits=[(0.0, b"\x00", 0)])  # found by this test: a NUL in the header's first column name
def test_any_corrupted_split_file_loads_or_fails_in_one_line_naming_it(sib_copy, edits):
    """Each edit inserts bytes at a relative position, deleting up to 3 bytes there."""
    train = sib_copy / LANG / "train.tsv"
    pristine = train.read_bytes()
    data = bytearray(pristine)
    for where, insert, delete in edits:
        at = int(where * len(data))
        data[at : at + delete] = insert
    train.write_bytes(bytes(data))
    try:
        load_task_data(DataConfig(path=str(sib_copy), languages=[LANG]))
    except DistillError as exc:
        assert "\n" not in str(exc) and "train.tsv" in str(exc)
    finally:
        train.write_bytes(pristine)
