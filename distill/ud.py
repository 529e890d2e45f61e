"""Universal Dependencies part-of-speech tagging: CoNLL-U reading, word-to-sub-token labels, batching.

The data is a local folder of UD treebanks (as in ../shared/data/ud-pos), one folder per treebank
holding `<prefix>-ud-{train,dev,test}.conllu` (optionally gzipped). Languages are named with the
SIB-200 codes (`wol_Latn`, `uig_Arab`, ...) so per-language reports line up across the SIB-200
topic task and this one; `UD_TREEBANKS` maps each code to its treebank folder, and the split files
are found by globbing, not by hard-coded prefixes.

Only syntactic words (integer ids) are tagged: multiword-token range lines (`3-4`) and empty nodes
(`5.1`) are skipped. Labels are the 17 UPOS tags in the fixed order of `UPOS_TAGS`.

Splits a treebank lacks (UD_Yoruba-YTB has only test) are *absent* from `PosTaskData.splits[split]`
and listed in `PosTaskData.missing_splits`; nothing is ever an empty Dataset. A pipeline trains on
`data.languages("train")` and evaluates zero-shot on the languages that have test data only.

Token labels follow the usual first-sub-token scheme: each word's first sub-token carries the
word's tag and every other position (later sub-tokens, special tokens, padding) is -100.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import datasets

from polydistill.data import IGNORE_INDEX, SPLITS, Encoded, TaskData, stratified_indices
from polydistill.errors import DistillError, suggest

# the UD v2 universal POS inventory, in the order of the UD documentation; label id = position here
UPOS_TAGS = [
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
]  # fmt: skip

# SIB-200 language code -> UD treebank folder under the data root
UD_TREEBANKS = {
    "afr_Latn": "UD_Afrikaans-AfriBooms",
    "eng_Latn": "UD_English-EWT",
    "fao_Latn": "UD_Faroese-FarPaHC",
    "mlt_Latn": "UD_Maltese-MUDT",
    "uig_Arab": "UD_Uyghur-UDT",
    "wol_Latn": "UD_Wolof-WTB",
    "yor_Latn": "UD_Yoruba-YTB",
}

_RANGE_ID = re.compile(r"[1-9][0-9]*-[1-9][0-9]*")
_EMPTY_NODE_ID = re.compile(r"(0|[1-9][0-9]*)\.[1-9][0-9]*")

_FEATURES = datasets.Features(
    {
        "text": datasets.Value("string"),
        "words": datasets.List(datasets.Value("string")),
        "tags": datasets.List(datasets.Value("int64")),
    }
)


# ----------------------------------------------------------------------------------------------
# CoNLL-U


class _Sentence(NamedTuple):
    words: list[str]
    upos: list[str]
    line: int  # 1-based line number of the sentence's first line (comments included)
    sent_id: str | None


def read_conllu(path: str | Path, max_sentences: int | None = None) -> list[tuple[list[str], list[str]]]:
    """Return `(words, upos)` per sentence of a CoNLL-U file (plain text, or gzip when it ends in `.gz`).

    Comments, multiword-token range lines (`3-4`) and empty nodes (`5.1`) are skipped, so the words
    are the syntactic words with integer ids. `max_sentences` stops reading after that many.
    A malformed line raises a `DistillError` naming the file and line; so does a file without sentences.
    """
    return [(s.words, s.upos) for s in _read_sentences(Path(path), max_sentences)]


def _read_sentences(path: Path, max_sentences: int | None = None) -> list[_Sentence]:
    if not path.is_file():
        raise DistillError(f"CoNLL-U file not found: {path}")
    sentences: list[_Sentence] = []
    words: list[str] = []
    upos: list[str] = []
    start: int | None = None
    sent_id: str | None = None
    lineno = 0

    def bad(reason: str) -> DistillError:
        return DistillError(f"malformed CoNLL-U line {lineno} in {path}: {reason}")

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    if words:
                        sentences.append(_Sentence(words, upos, start or lineno, sent_id))
                        if max_sentences is not None and len(sentences) >= max_sentences:
                            return sentences
                    words, upos, start, sent_id = [], [], None, None
                    continue
                if start is None:
                    start = lineno
                if line.startswith("#"):
                    if line.startswith("# sent_id"):
                        sent_id = line.partition("=")[2].strip() or None
                    continue
                cols = line.split("\t")
                if len(cols) != 10:
                    raise bad(f"expected 10 tab-separated columns, found {len(cols)}")
                token_id = cols[0]
                if token_id.isascii() and token_id.isdigit():
                    if int(token_id) != len(words) + 1:
                        raise bad(f"word id {token_id} out of sequence (expected {len(words) + 1})")
                    if not cols[1]:
                        raise bad("empty FORM column")
                    words.append(cols[1])
                    upos.append(cols[3])
                elif not (_RANGE_ID.fullmatch(token_id) or _EMPTY_NODE_ID.fullmatch(token_id)):
                    raise bad(f"ID {token_id!r} is not a word id, a range like 3-4 or an empty node like 5.1")
    except UnicodeDecodeError as exc:
        raise DistillError(f"{path} is not UTF-8 (after line {lineno}): {exc.reason}") from exc
    except (OSError, EOFError) as exc:  # a truncated or non-gzip .gz file
        raise DistillError(f"could not read {path}: {exc}") from exc
    if words:  # no blank line after the last sentence
        sentences.append(_Sentence(words, upos, start or lineno, sent_id))
    if not sentences:
        raise DistillError(f"no sentences in CoNLL-U file {path}")
    return sentences


# ----------------------------------------------------------------------------------------------
# treebanks -> datasets


@dataclass(frozen=True)
class PosTaskData(TaskData):
    """UPOS data per split and language: Dataset(text, words, tags); `labels` is `UPOS_TAGS`.

    A split the treebank does not have is absent from `splits[split]` (never an empty Dataset) and
    listed in `missing_splits[lang]`. `text` is the words joined by single spaces, so `texts(split)`
    works as for SIB-200 (parity checks, tokenizer training); it is not the original `# text` line.
    """

    missing_splits: dict[str, tuple[str, ...]] = field(default_factory=dict)  # lang -> splits it lacks
    files: dict[str, dict[str, Path]] = field(default_factory=dict)  # split -> lang -> CoNLL-U file read

    def languages(self, split: str) -> list[str]:
        """The languages that have `split`, in the order they were requested."""
        return list(self.splits[split])


def resolve_ud_root(path: str | Path) -> Path:
    """Accept the UD folder itself (holding `UD_*` treebanks) or a data root holding `ud-pos/`."""
    root = Path(path)
    if not any(root.glob("UD_*")) and any((root / "ud-pos").glob("UD_*")):
        return root / "ud-pos"
    return root


def find_split_files(treebank_dir: Path) -> dict[str, Path]:
    """`split -> file` for the splits present in a treebank folder (`*-ud-{split}.conllu` or `.conllu.gz`)."""
    found = {}
    for split in SPLITS:
        matches = sorted(treebank_dir.glob(f"*-ud-{split}.conllu")) + sorted(
            treebank_dir.glob(f"*-ud-{split}.conllu.gz")
        )
        if len(matches) > 1:
            raise DistillError(f"more than one {split} file in {treebank_dir}: {', '.join(p.name for p in matches)}")
        if matches:
            found[split] = matches[0]
    return found


def check_pos_dataset(path: str | Path, languages: list[str]) -> None:
    """Fail early, naming the culprit, if the UD folder, a language's treebank or every split is missing."""
    if not Path(path).is_dir():
        raise DistillError(f"UD data path not found: {path} (set 'data.path' or POLYDISTILL_DATA)")
    root = resolve_ud_root(path)
    for lang in languages:
        folder = root / _treebank_for(lang)
        if not folder.is_dir():
            raise DistillError(f"treebank folder for '{lang}' not found: {folder}")
        if not find_split_files(folder):
            raise DistillError(f"no *-ud-{{train,dev,test}}.conllu files in {folder}")


def load_pos_data(
    root: str | Path,
    languages: list[str],
    max_train_per_language: int | None = None,
    max_eval_per_language: int | None = None,
) -> PosTaskData:
    """Read the UD treebanks of `languages` (SIB-200 codes, see `UD_TREEBANKS`) under `root`.

    `max_train_per_language` keeps a seeded random sample of N train sentences, `max_eval_per_language` one of
    N dev and of N test sentences, in file order (`polydistill.data.stratified_indices` with one class: a sentence
    has no single label to stratify by). Treebanks are ordered by document and genre, so their first N
    sentences would be one genre. Unknown codes, missing
    folders, a UPOS value outside `UPOS_TAGS` (including `_`) raise a one-line `DistillError`.
    """
    check_pos_dataset(root, languages)
    root = resolve_ud_root(root)
    if not languages:
        raise DistillError("no languages given for the UD POS data")
    for name, limit in (
        ("max_train_per_language", max_train_per_language),
        ("max_eval_per_language", max_eval_per_language),
    ):
        if limit is not None and limit < 1:
            raise DistillError(f"{name} must be at least 1, got {limit}")
    duplicates = sorted({lang for lang in languages if languages.count(lang) > 1})
    if duplicates:
        raise DistillError(f"language(s) listed twice: {duplicates}")

    splits: dict[str, dict[str, datasets.Dataset]] = {s: {} for s in SPLITS}
    files: dict[str, dict[str, Path]] = {s: {} for s in SPLITS}
    missing: dict[str, tuple[str, ...]] = {}
    tag_index = {tag: i for i, tag in enumerate(UPOS_TAGS)}
    for lang in languages:
        folder = root / _treebank_for(lang)
        present = find_split_files(folder)
        missing[lang] = tuple(s for s in SPLITS if s not in present)
        for split, path in present.items():
            limit = max_train_per_language if split == "train" else max_eval_per_language
            sentences = _read_sentences(path)
            if limit is not None and len(sentences) > limit:
                sentences = [sentences[i] for i in stratified_indices([0] * len(sentences), limit)]
            splits[split][lang] = _to_dataset(sentences, tag_index, path)
            files[split][lang] = path
    return PosTaskData(labels=list(UPOS_TAGS), splits=splits, missing_splits=missing, files=files)


def _treebank_for(lang: str) -> str:
    if lang in UD_TREEBANKS:
        return UD_TREEBANKS[lang]
    by_prefix = [code for code in UD_TREEBANKS if code.split("_")[0] == lang.split("_")[0]]
    hint = f" (did you mean '{by_prefix[0]}'?)" if by_prefix else suggest(lang, UD_TREEBANKS)
    raise DistillError(f"no UD treebank registered for language '{lang}'{hint}; known: {sorted(UD_TREEBANKS)}")


def _to_dataset(sentences: list[_Sentence], tag_index: dict[str, int], path: Path) -> datasets.Dataset:
    all_tags = []
    for number, sentence in enumerate(sentences, start=1):
        try:
            all_tags.append([tag_index[t] for t in sentence.upos])
        except KeyError as exc:
            tag = exc.args[0]
            what = "missing UPOS tag '_'" if tag == "_" else f"UPOS tag {tag!r} is not one of the 17 UD tags"
            ident = f"sentence {number}" + (f" (sent_id {sentence.sent_id})" if sentence.sent_id else "")
            raise DistillError(f"{what} in {path}, {ident} starting at line {sentence.line}") from None
    data = {"text": [" ".join(s.words) for s in sentences], "words": [s.words for s in sentences], "tags": all_tags}
    return datasets.Dataset.from_dict(data, features=_FEATURES)


# ----------------------------------------------------------------------------------------------
# tokenisation, batching, scoring


@dataclass(frozen=True)
class TokenEncoded(Encoded):
    """`Encoded` for token tasks: `labels[i]` is aligned with `input_ids[i]`, -100 where not scored.

    `num_words[i]` is the example's word count, so words lost to truncation can be reported.
    """

    num_words: list[int] = field(default_factory=list)

    @property
    def scored(self) -> int:
        """Number of scored positions (words that kept their first sub-token)."""
        return sum(1 for row in self.labels for y in row if y != IGNORE_INDEX)

    @property
    def words_dropped(self) -> int:
        """Words with no scored position, i.e. cut off by truncation."""
        return sum(self.num_words) - self.scored


def encode_words(
    tokenizer, words_list: Sequence[Sequence[str]], tags_list: Sequence[Sequence[int]], max_length: int
) -> TokenEncoded:
    """Tokenize pre-split words and put each word's tag on its first sub-token (everything else -100).

    Needs a fast tokenizer (`word_ids()`). A word the tokenizer turns into no sub-token at all
    (e.g. only characters its normaliser strips) is replaced by the unknown token, so every word
    keeps a scored position unless truncation cuts it off. SentencePiece tokenizers (XLM-R) give
    every word its own "▁" prefix under `is_split_into_words`, as if the words were space-separated;
    byte-level BPE tokenizers (RoBERTa, GPT-2) must be loaded with `add_prefix_space=True`.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise DistillError(f"{type(tokenizer).__name__} is not a fast tokenizer; word alignment needs word_ids()")
    if len(words_list) != len(tags_list):
        raise DistillError(f"{len(words_list)} word lists but {len(tags_list)} tag lists")
    words_list = [list(w) for w in words_list]
    for i, (words, tags) in enumerate(zip(words_list, tags_list, strict=True)):
        if len(words) != len(tags):
            raise DistillError(f"example {i}: {len(words)} words but {len(tags)} tags")
        if not words:
            raise DistillError(f"example {i} has no words")
    if not words_list:
        return TokenEncoded(input_ids=[], labels=[], num_words=[])
    words_list = _replace_wordless(tokenizer, words_list)
    batch = tokenizer(words_list, is_split_into_words=True, truncation=True, max_length=max_length)
    labels = []
    for i, tags in enumerate(tags_list):
        row, previous = [], None
        for word in batch.word_ids(i):
            row.append(IGNORE_INDEX if word is None or word == previous else int(tags[word]))
            previous = word
        labels.append(row)
    return TokenEncoded(input_ids=list(batch["input_ids"]), labels=labels, num_words=[len(w) for w in words_list])


def _replace_wordless(tokenizer, words_list: list[list[str]]) -> list[list[str]]:
    """Swap words that yield no sub-token for the unknown token (left as they are without one)."""
    unk = tokenizer.unk_token
    if unk is None:
        return words_list
    probe = tokenizer(words_list, is_split_into_words=True, add_special_tokens=False, truncation=False, verbose=False)
    fixed = []
    for i, words in enumerate(words_list):
        seen = {w for w in probe.word_ids(i) if w is not None}
        if len(seen) == len(words):
            fixed.append(words)
        else:
            fixed.append([w if j in seen else unk for j, w in enumerate(words)])
    return fixed
