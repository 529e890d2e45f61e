"""More sentences for the teacher to label: cropped and word-dropped copies of the training text.

A student distilled on a small labelled set learns the teacher's function only where that set has
points, and overfits it there (the flagship student's train loss keeps falling after its dev accuracy has
stopped). The teacher can label any text, so every training sentence is copied `copies` times, each copy a
random contiguous run of its words (at least `keep` of them) with each remaining word dropped with
probability `word_dropout`; the teacher's outputs on the copies, not their original labels, are what the
student mostly learns from. This is the transfer-set augmentation of Tang et al. 2019 ("Distilling
Task-Specific Knowledge from BERT into Simple Neural Networks", arXiv:1903.12136: masking and n-gram
sampling) and of TinyBERT (Jiao et al. 2020), cut down to what needs no other model and no other language
resource: it works the same way in Wolof as in English.

Words are what whitespace separates; a sentence of one word is copied unchanged. Copies are a pure function
of (texts, config, seed), so the teacher's outputs on them are cached once like the training set's.
"""

from __future__ import annotations

import random

from polydistill.config import AugmentConfig


def augmented_copy(text: str, cfg: AugmentConfig, rng: random.Random) -> str:
    """One crop-then-drop copy of `text`."""
    words = text.split()
    if len(words) < 2:
        return text
    length = rng.randint(max(1, round(cfg.keep * len(words))), len(words))
    start = rng.randint(0, len(words) - length)
    window = words[start : start + length]
    kept = [word for word in window if rng.random() >= cfg.word_dropout]
    return " ".join(kept or [rng.choice(window)])


def augment_texts(texts: list[str], cfg: AugmentConfig, seed: int) -> list[str]:
    """`cfg.copies` copies of every text: copy 1 of each text in order, then copy 2, ... (deterministic)."""
    rng = random.Random(seed)
    return [augmented_copy(text, cfg, rng) for _ in range(cfg.copies) for text in texts]
