"""Train an XLM-R style SentencePiece-Unigram tokenizer on the recipe's own text.

No pretrained XLM-R tokenizer is reachable offline, so the quickstart trains one with the same
shape as XLM-R's: a Unigram model, Metaspace pre-tokenisation and the XLM-R special ids
(<s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=last). Position ids in XLM-R are derived from the pad id,
so <pad> must stay at id 1.

No normaliser is attached: transformers 5 rebuilds an XLM-R tokenizer from its vocabulary on load
and keeps only a SentencePiece precompiled charsmap, so any other normaliser would be lost on reload
and the reloaded tokenizer would segment differently from the trained one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import Unigram
from tokenizers.trainers import UnigramTrainer
from transformers import XLMRobertaTokenizer

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
MASK_TOKEN = "<mask>"


def train_unigram_tokenizer(texts: Iterable[str], vocab_size: int) -> XLMRobertaTokenizer:
    """Return an `XLMRobertaTokenizer` whose Unigram vocabulary is learnt from `texts`.

    `vocab_size` counts the special tokens; the trainer may return fewer pieces when the text
    does not support that many (then the vocabulary is as large as the text allows).
    """
    raw = Tokenizer(Unigram())
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
    _check_special_ids(tokenizer)
    return tokenizer


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
