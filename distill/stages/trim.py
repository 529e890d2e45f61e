"""Stage `trim`: the student's vocabulary cut to the pieces the recipe languages' text uses."""

from __future__ import annotations

from typing import Any

import numpy as np

from polydistill.data import (
    Encoded,
    read_corpus,
)
from polydistill.errors import DistillError
from polydistill.run_state import STUDENT_TRIMMED, Run, encode_all
from polydistill.scoring import evaluate_torch, per_sentence, scored_per_sentence
from polydistill.stages.student import build_student
from polydistill.students.vocab import TrimReport, same_tokenisation, save_trimmed, trim_vocab


def stage_trim(run: Run) -> None:
    """Vocabulary trimming of the student (students.vocab): keep the pieces its tokenizer produces on the
    recipe languages' training text, slice the embedding to them, and give the student its own tokenizer.

    No training: a sentence that tokenises into the same pieces as before gets the same logits. The teacher
    keeps its tokenizer and encodings; later stages feed the student through `run.student_tokenizer` and
    `run.student_encoded`. Coverage (dev) and the share of identically tokenised test sentences are recorded
    per language, and the trimmed student is scored beside the untrimmed one.

    Before 'distill' in `stages`, the student is built here and trimmed first, then learns on the pieces it
    keeps (rarer words re-segmented) instead of meeting them only after training; it is scored once distilled.
    """
    stages = run.recipe.stages
    before_distill = "distill" in stages and stages.index("trim") < stages.index("distill")
    if run.student is None and before_distill:
        run.student = build_student(run)
    if run.student is None:
        raise DistillError("stage 'trim' needs a student: put 'distill' before it in 'stages'")
    cfg = run.recipe.trim
    old_tokenizer, old_encoded, old_name = run.student_tokenizer, run.student_encoded, run.student_name
    texts = run.data.texts("train") + [t for path in cfg.corpus for t in read_corpus(path, "'trim.corpus'")]
    extra = f" (+ {len(cfg.corpus)} trim.corpus file(s))" if cfg.corpus else ""
    run.say(f"counting the student tokenizer's pieces on {len(texts)} sentences: train{extra}")
    try:
        trimmed, tokenizer, report = trim_vocab(run.student, old_tokenizer, texts, cfg)
    except ValueError as exc:  # a tokenizer kind it cannot trim, top_k below the special tokens, ...
        raise DistillError(f"cannot trim the student's vocabulary: {exc}") from exc
    for line in report.lines():
        run.say(f"  {line}")
    encoded = encode_all(run, tokenizer)
    _check_no_more_words_cut(run, encoded, old_encoded)
    same = {
        split: {lang: same_tokenisation(old_tokenizer, tokenizer, list(ds["text"])) for lang, ds in by_lang.items()}
        for split, by_lang in run.data.splits.items()
        if split in ("dev", "test")
    }
    directory = run.directory / "checkpoints" / STUDENT_TRIMMED
    save_trimmed(trimmed, tokenizer, report, directory)
    run.trimmed_tokenizer, run.trimmed_encoded = tokenizer, encoded
    run.student, run.student_checkpoint = trimmed, STUDENT_TRIMMED
    if not before_distill:  # an undistilled student's head is untrained: nothing worth scoring yet
        run.student_name = STUDENT_TRIMMED
        run.models[STUDENT_TRIMMED] = trimmed
        evaluate_torch(run, STUDENT_TRIMMED, trimmed, encoded["test"], tokenizer.pad_token_id)
    agreement = _agreement(run, old_name, same["test"], (old_encoded["test"], encoded["test"]))
    run.metrics["trim"] = {
        "top_k": cfg.top_k,
        "min_freq": cfg.min_freq,
        "tokenizer": report.kind,
        "untrimmed": old_name,  # the model that was trimmed
        "before_distill": before_distill,
        "checkpoint": str(directory.relative_to(run.directory)),
        **_trim_sizes(report),
        # share of sentences the trimmed tokenizer splits into the same pieces as the untrimmed one
        "dev_coverage": {lang: float(np.mean(flags)) for lang, flags in same.get("dev", {}).items()},
        "test_identical": {lang: float(np.mean(flags)) for lang, flags in same["test"].items()},
        # on those test sentences: share whose predicted labels equal the untrimmed student's (1.0 expected)
        "test_identical_agreement": agreement,
    }
    coverage = ", ".join(f"{lang} {share:.1%}" for lang, share in run.metrics["trim"]["dev_coverage"].items())
    run.say(f"dev coverage (sentences tokenised as before): {coverage}")


def _check_no_more_words_cut(
    run: Run, encoded: dict[str, dict[str, Encoded]], old_encoded: dict[str, dict[str, Encoded]]
) -> None:
    """The trimmed tokenizer's encodings score exactly the words the old ones did, or a one-line error."""
    for split, by_lang in encoded.items():
        for lang, enc in by_lang.items():
            if scored_per_sentence(enc) != scored_per_sentence(old_encoded[split][lang]):
                raise DistillError(
                    f"{lang}/{split}: the trimmed tokenizer's longer segmentations cut more words off at "
                    f"data.max_length {run.recipe.data.max_length}; raise it or keep more pieces (trim.min_freq, "
                    "trim.top_k)"
                )


def _agreement(
    run: Run,
    old_name: str,
    same_test: dict[str, list[bool]],
    tests: tuple[dict[str, Encoded], dict[str, Encoded]],
) -> dict[str, float | None]:
    """Per language, the share of identically tokenised test sentences (`same_test`) whose predicted labels are
    those of the untrimmed student `old_name`; empty when that student was not scored. `tests`: the test
    encodings before and after trimming."""
    agreement: dict[str, float | None] = {}
    if old_name not in run.predictions:  # a scored student before: same pieces must give the same labels
        return agreement
    old_test, new_test = tests
    for lang, flags in same_test.items():
        before = per_sentence(run.predictions[old_name][lang], old_test[lang])
        after = per_sentence(run.predictions[STUDENT_TRIMMED][lang], new_test[lang])
        agree = [np.array_equal(b, a) for b, a, f in zip(before, after, flags, strict=True) if f]
        agreement[lang] = float(np.mean(agree)) if agree else None
    return agreement


def _trim_sizes(report: TrimReport) -> dict[str, Any]:
    """What was counted and how much smaller the vocabulary, the model and its embedding became."""
    return {
        "counted_sentences": report.texts,
        "counted_tokens": report.tokens,
        "vocab_before": report.vocab_before,
        "vocab_after": report.vocab_after,
        "always_kept": report.always_kept,
        "params_before": report.params_before,
        "params_after": report.params_after,
        "embedding_params_before": report.embedding_params_before,
        "embedding_params_after": report.embedding_params_after,
        "embedding_share_before": report.embedding_params_before / report.params_before,
        "embedding_share_after": report.embedding_params_after / report.params_after,
    }
