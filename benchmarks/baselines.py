"""Non-neural baselines that give the teachers' and students' scores a scale.

- SIB-200: character n-gram TF-IDF + logistic regression, one model on every language's training
  sentences (the classic strong baseline for topic classification in low-resource languages).
- UD POS: each word's most frequent tag in the training data (the unknown-word fallback is the most
  frequent tag overall), the textbook tagging baseline.

    python -m polydistill.benchmarks.baselines --out benchmarks/results/baselines

writes `baselines.json` and `baselines.md` with the command. Same data, splits and language codes as
the recipes; `POLYDISTILL_DATA` moves the data root.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from polydistill.benchmarks.outputs import command_line, write_results
from polydistill.config import ALL_SIB200_LANGUAGES, DataConfig
from polydistill.data import load_task_data
from polydistill.ud import UD_TREEBANKS, UPOS_TAGS, load_pos_data

DATA_ROOT = Path(os.environ.get("POLYDISTILL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
POS_LANGUAGES = ["wol_Latn", "mlt_Latn", "fao_Latn", "afr_Latn", "uig_Arab", "eng_Latn", "yor_Latn"]


def char_ngram_vectorizer() -> Any:
    """The TF-IDF of every baseline here: character 2-5-grams within word boundaries, sublinear counts."""
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)


TFIDF_CLASSIFIER = (
    "TfidfVectorizer(analyzer='char_wb', ngram_range=(2, 5), min_df=2, sublinear_tf=True) + "
    "LogisticRegression(C=10, max_iter=2000)"
)


def tfidf_accuracy(train: list[Any], test: dict[str, Any], seed: int = 0) -> tuple[dict[str, float], int]:
    """TFIDF_CLASSIFIER fitted on the `train` datasets' (text, label) rows: its test accuracy per language of `test`
    (language -> dataset) and its number of features. The SIB-200 baseline here and in every run's report."""
    vectorizer = char_ngram_vectorizer()
    features = vectorizer.fit_transform([t for ds in train for t in ds["text"]])
    classifier = LogisticRegression(C=10.0, max_iter=2000, random_state=seed)
    classifier.fit(features, [y for ds in train for y in ds["label"]])
    per_language = {}
    for lang, ds in test.items():
        hits = int((classifier.predict(vectorizer.transform(ds["text"])) == np.asarray(ds["label"])).sum())
        per_language[lang] = hits / len(ds)
    return per_language, features.shape[1]


def sib200_tfidf(root: Path, seed: int = 0) -> dict[str, Any]:
    """Test accuracy per language of char-n-gram TF-IDF + logistic regression trained on all languages."""
    data = load_task_data(DataConfig(path=str(root), languages=list(ALL_SIB200_LANGUAGES)))
    per_language, features = tfidf_accuracy(list(data.splits["train"].values()), data.splits["test"], seed)
    return {
        "method": f"{TFIDF_CLASSIFIER}, trained on all 15 languages' train splits",
        "features": features,
        "languages": per_language,
        "mean": float(np.mean(list(per_language.values()))),
    }


def ud_most_frequent_tag(root: Path) -> dict[str, Any]:
    """Word accuracy per language of the most-frequent-tag tagger trained on every language with train data."""
    data = load_pos_data(root, POS_LANGUAGES)
    counts: dict[str, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for ds in data.splits["train"].values():
        for words, tags in zip(ds["words"], ds["tags"], strict=True):
            for word, tag in zip(words, tags, strict=True):
                counts[word.lower()][tag] += 1
                overall[tag] += 1
    fallback = overall.most_common(1)[0][0]
    per_language = {}
    for lang, ds in data.splits["test"].items():
        right = total = 0
        for words, tags in zip(ds["words"], ds["tags"], strict=True):
            for word, tag in zip(words, tags, strict=True):
                seen = counts.get(word.lower())
                right += int((seen.most_common(1)[0][0] if seen else fallback) == tag)
                total += 1
        per_language[lang] = right / total
    return {
        "method": "most frequent tag of each (lower-cased) word in the pooled training data; unseen words get "
        f"the most frequent tag overall ({UPOS_TAGS[fallback]})",
        "languages": per_language,
        "mean": float(np.mean(list(per_language.values()))),
        "zero_shot": [lang for lang in POS_LANGUAGES if lang not in data.splits["train"]],
    }


def render(doc: dict[str, Any]) -> str:
    lines = ["# Non-neural baselines", "", f"Command: `{doc['command']}` ({doc['seconds']} s on this machine).", ""]
    sib = doc["sib200"]
    lines += ["## SIB-200 topic classification: char n-gram TF-IDF + logistic regression", "", sib["method"], ""]
    lines += ["| language | test accuracy |", "|---|---|"]
    lines += [f"| {lang} | {acc:.3f} |" for lang, acc in sib["languages"].items()]
    lines += [f"| **mean** | **{sib['mean']:.3f}** |", ""]
    pos = doc["ud_pos"]
    lines += ["## UD part-of-speech tagging: most frequent tag per word", "", pos["method"] + ".", ""]
    lines += ["| language | test word accuracy |", "|---|---|"]
    for lang, acc in pos["languages"].items():
        note = " (zero-shot: no training data)" if lang in pos["zero_shot"] else ""
        lines.append(f"| {lang} ({UD_TREEBANKS[lang]}){note} | {acc:.3f} |")
    lines += [f"| **mean** | **{pos['mean']:.3f}** |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA_ROOT), help="data root holding sib-200/ and ud-pos/")
    parser.add_argument("--out", default="benchmarks/results/baselines", help="output path without extension")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    doc = {
        "command": command_line("polydistill.benchmarks.baselines", argv),
        "sib200": sib200_tfidf(Path(args.data) / "sib-200"),
        "ud_pos": ud_most_frequent_tag(Path(args.data) / "ud-pos"),
    }
    doc["seconds"] = round(time.perf_counter() - started, 1)
    write_results(args.out, doc, render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
