"""Train an XLM-R style SentencePiece-Unigram tokenizer on the recipe's own text.

No pretrained XLM-R tokenizer is reachable offline, so the quickstart trains one with the same
shape as XLM-R's: a Unigram model, Metaspace pre-tokenisation and the XLM-R special ids
(<s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=last). Position ids in XLM-R are derived from the pad id,
so <pad> must stay at id 1.

By default no normaliser is attached. transformers 5 rebuilds an XLM-R tokenizer from its vocabulary on
load and keeps only a SentencePiece precompiled charsmap, so any other normaliser would be lost on reload
and the reloaded tokenizer would segment differently from the trained one. `lowercase=True` therefore
attaches SentencePiece's own compiled `nmt_nfkc_cf` rule (NFKC + case folding), which survives reloading:
the tokenizer of a student whose teacher is uncased, so that "The" and "the" are one piece.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import Unigram
from tokenizers.trainers import UnigramTrainer
from transformers import XLMRobertaTokenizer

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
MASK_TOKEN = "<mask>"


def train_unigram_tokenizer(texts: Iterable[str], vocab_size: int, *, lowercase: bool = False) -> XLMRobertaTokenizer:
    """Return an `XLMRobertaTokenizer` whose Unigram vocabulary is learnt from `texts`.

    `vocab_size` counts the special tokens; the trainer may return fewer pieces when the text
    does not support that many (then the vocabulary is as large as the text allows). `lowercase`:
    NFKC-normalise and case-fold text, in training and in the returned tokenizer.
    """
    raw = Tokenizer(Unigram())
    charsmap = case_folding_charsmap() if lowercase else None
    if charsmap is not None:
        raw.normalizer = normalizers.Precompiled(charsmap)
    raw.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁")]
    )
    trainer = UnigramTrainer(
        vocab_size=vocab_size - 1,  # room for <mask>, appended last as in XLM-R
        special_tokens=SPECIAL_TOKENS,
        unk_token="<unk>",
        show_progress=False,
    )
    raw.train_from_iterator(texts, trainer=trainer)
    vocab = json.loads(raw.to_str())["model"]["vocab"]
    pieces = [(str(piece), float(score)) for piece, score in vocab]
    pieces = [*pieces[: len(SPECIAL_TOKENS)], *_reproducible(pieces[len(SPECIAL_TOKENS) :]), (MASK_TOKEN, 0.0)]
    tokenizer = XLMRobertaTokenizer(vocab=pieces)
    if charsmap is not None:
        tokenizer.backend_tokenizer.normalizer = normalizers.Precompiled(charsmap)
    _check_special_ids(tokenizer)
    return tokenizer


def case_folding_charsmap() -> bytes:
    """SentencePiece's compiled `nmt_nfkc_cf` normalisation rule (NFKC, then Unicode case folding).

    SentencePiece ships its rules only compiled into a trained model, so a throwaway model is trained on
    a few characters to read the rule back from it.
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a b c d e f g h"] * 8), model_writer=model, vocab_size=20,
        normalization_rule_name="nmt_nfkc_cf", hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def _reproducible(pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The trainer is not deterministic: two runs on the same text give the same pieces, but scores that
    differ in the third decimal for a few dozen of them and so a different order, i.e. different ids and a
    differently initialised model. Ordering the pieces by their text and rounding the scores to two decimals
    makes the ids (and, but for the rare score on a rounding edge, the segmentation) the same every run."""
    return sorted((piece, round(score, 2)) for piece, score in pieces)


def _check_special_ids(tokenizer: XLMRobertaTokenizer) -> None:
    expected = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, MASK_TOKEN: len(tokenizer) - 1}
    got = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in expected}
    if got != expected:
        raise RuntimeError(f"tokenizer special ids {got} differ from XLM-R's {expected}")
