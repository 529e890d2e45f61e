"""The recipe schema of a `kind: distill` recipe: one frozen dataclass per section (`data`, `teacher`, `student`,
`agnostic`, `distill`, `prune`, `trim`, `adapt`, `export`, `bench`), each key with its type, default and range,
and `Recipe`, which holds them. `polydistill.schema_build.build_config` reads a raw mapping into them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from polydistill.export_names import ExportVariant
from polydistill.library_configs import ExportSettings, PruneConfig, TrimConfig
from polydistill.schema_fields import BELOW_ONE, POSITIVE, path_field, ranged

ALL_SIB200_LANGUAGES = [
    "eng_Latn", "hau_Latn", "swh_Latn", "amh_Ethi", "xho_Latn", "som_Latn", "yor_Latn", "ibo_Latn",
    "kin_Latn", "wol_Latn", "lug_Latn", "quy_Latn", "grn_Latn", "fao_Latn", "mlt_Latn",
]  # fmt: skip


@dataclass(frozen=True)
class DataConfig:
    """The task's data: exactly one of `path` (local) or `hub_id`.

    task "sequence": SIB-200 topic classification (a folder of <lang>/{train,dev,test}.tsv, or the hub).
    task "token": UD part-of-speech tagging from a local folder of UD treebanks (../shared/data/ud-pos);
    a language whose treebank has only a test split is evaluated zero-shot.
    """

    task: Literal["sequence", "token"] = "sequence"
    path: str | None = path_field()
    hub_id: str | None = None
    languages: list[str] = field(default_factory=lambda: list(ALL_SIB200_LANGUAGES))
    # the languages whose labelled train (and dev) data the teacher and student learn from; null: all of
    # `languages`. The others are scored zero-shot (their unlabelled train text still trains the tokenizer).
    train_languages: list[str] | None = None
    max_length: int = ranged(128, 4)  # tokens, special ones included; at most the teacher's positions
    # seeded samples stratified by label (polydistill.data.stratified_indices); null: every row
    max_train_per_language: int | None = ranged(None, 1)
    max_eval_per_language: int | None = ranged(None, 1)  # dev and test
    max_dev_per_language: int | None = ranged(None, 1)  # dev alone (the per-epoch score), overriding the line above


@dataclass(frozen=True)
class ScratchConfig:
    """An XLM-R-architecture teacher with random weights and a tokenizer trained on the recipe's text."""

    vocab_size: int = ranged(8000, 16)
    hidden_size: int = ranged(256, 1)
    num_layers: int = ranged(4, 1)
    num_heads: int = ranged(4, 1)
    intermediate_size: int = ranged(1024, 1)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = ranged(3, 1)
    batch_size: int = ranged(32, 1)
    lr: float = ranged(5e-4, 0, **POSITIVE)
    weight_decay: float = ranged(0.01, 0)
    warmup_ratio: float = ranged(0.1, 0, 1)
    max_grad_norm: float = ranged(1.0, 0, **POSITIVE)  # gradients are clipped to this norm
    # batches with a NaN/inf loss or gradient to skip (counted) before the run stops
    skip_nonfinite: int = ranged(0, 0)
    # batch_size is the global batch of one optimizer step: split over the processes of a data-parallel run,
    # then into grad_accum_steps micro-batches each, whose gradients add up to the whole batch's
    grad_accum_steps: int = ranged(1, 1)
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast matmuls to bfloat16 (AMX CPUs, GPUs)
    # every dropout while training; null keeps the model's own (0.1 for XLM-R)
    dropout: float | None = ranged(None, 0, 1, **BELOW_ONE)


@dataclass(frozen=True)
class TeacherConfig:
    """`model` is a hub id or local dir; when null, a `scratch` teacher is built and trained."""

    model: str | None = path_field()
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # fine-tune only the top N encoder layers and the head (embeddings and lower layers frozen; 0: the head
    # alone, on the pretrained features); null: every weight
    train_layers: int | None = ranged(None, 0)
    trust_remote_code: bool = False


@dataclass(frozen=True)
class StudentConfig:
    """Keep a subset of the teacher's layers (`num_layers` spread uniformly, or an explicit list),
    optionally narrower: `hidden_size` (heads keep the teacher's head size) and `intermediate_size`
    sliced from the teacher by importance. `init: random` builds the same shape untrained."""

    num_layers: int | None = ranged(None, 1)  # at most the teacher's
    layers: list[int] | None = ranged(None, 0)  # teacher layer indices
    hidden_size: int | None = ranged(None, 1)  # null: the teacher's
    intermediate_size: int | None = ranged(None, 1)  # null: the teacher's
    init: Literal["teacher", "random"] = "teacher"
    # keep the word embedding the student starts with (the teacher's) fixed while it trains: a pretrained
    # 250k-piece table is most of a small student, and its optimizer update then dominates every step
    freeze_word_embeddings: bool = False


@dataclass(frozen=True)
class AugmentConfig:
    """Cropped, word-dropped copies of the training sentences, labelled by the teacher (distill.augment)."""

    copies: int = ranged(0, 0)  # copies of each training sentence; 0: none
    keep: float = ranged(0.6, 0, 1, **POSITIVE)  # a copy is a contiguous run of at least this share of the words
    word_dropout: float = ranged(0.1, 0, 1, **BELOW_ONE)  # then each word is dropped with this probability


@dataclass(frozen=True)
class DistillConfig:
    """Task-specific distillation on the labelled training data."""

    train: TrainConfig = field(default_factory=TrainConfig)
    # loss name (see distill.losses.LOSSES) -> {"weight": w, **constructor arguments}
    losses: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "logit_kl": {"weight": 1.0, "temperature": 2.0},
            "cross_entropy": {"weight": 0.5},
        }
    )
    # which teacher layer each student layer learns from, for the per-layer losses:
    # "uniform", "last" (last to last only) or one teacher layer index per student layer
    layer_map: str | list[int] = "uniform"
    # a parallel corpus (SIB-200: the same sentences, index_id, in every language): each training sentence's
    # teacher logits and <s> vector are the mean over its translations in the training languages, not its own
    parallel_targets: bool = False
    # more sentences for the teacher to label (sentence tasks): see distill.augment
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class AgnosticConfig:
    """Task-agnostic distillation: the student imitates the teacher's internals on unlabelled text
    (the training sentences of every language, labels unused) before it sees the task."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, lr=1e-3))
    losses: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"minilm_relations": {"weight": 1.0, "relation_heads": 2}}
    )
    layer_map: str | list[int] = "last"
    # plain-text files (one sentence a line) streamed instead of the recipe's training text (distill.stream):
    # a corpus of any size, read through a shuffle buffer of `shuffle_buffer` sentences; the teacher runs live
    corpus: list[str] = field(default_factory=list, metadata={"path": True})
    shuffle_buffer: int = ranged(10_000, 1)


@dataclass(frozen=True)
class PruneStageConfig(PruneConfig):
    """Structured pruning of the student (stage `prune`: `PruneConfig`'s keys), then distillation to recover."""

    calibration_batches: int = ranged(8, 1)  # batches of training data for taylor importance
    recover: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2))


@dataclass(frozen=True)
class TrimStageConfig(TrimConfig):
    """Vocabulary trimming of the student (stage `trim`: `TrimConfig`'s keys): keep the pieces its tokenizer
    produces on the recipe languages' training text, slice the embedding to them. No training; the teacher is
    untouched."""

    # more unlabelled text of the deployment languages to count pieces on (plain text, SIB-200 .tsv or CoNLL-U),
    # besides the recipe's (possibly subsampled) training sentences
    corpus: list[str] = field(default_factory=list, metadata={"path": True})


@dataclass(frozen=True)
class AdaptStageConfig:
    """Language-adaptive pretraining (stage `adapt`, see distill.adapt): continued masked-LM training of the
    teacher (before it is fine-tuned on the task) or of the student (as soon as it is built, before it is
    distilled) on raw text: the recipe languages' training sentences and/or plain-text `corpus` files."""

    target: Literal["teacher", "student"] = "teacher"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, lr=1e-4))
    mask_prob: float = ranged(0.15, 0, 1, low_open=True, high_open=True)
    texts: Literal["train", "none"] = "train"  # "train": the recipe languages' train text (labels unused)
    corpus: list[str] = field(default_factory=list, metadata={"path": True})  # one sentence per line


@dataclass(frozen=True)
class ExportConfig(ExportSettings):
    """Each variant becomes onnx/student-<variant>/, parity-gated, optimized, evaluated per language."""

    variants: list[ExportVariant] = field(default_factory=lambda: ["int8-dynamic"])
    max_drop_points: float = ranged(1.0, 0)  # a variant losing more accuracy points in any language is flagged


@dataclass(frozen=True)
class BenchConfig:
    batch: int = ranged(1, 1)
    seq: int = ranged(128, 1)
    runs: int = ranged(50, 1)  # at least this many timed runs per variant
    warmup: int = ranged(10, 0)
    threads: int | None = ranged(None, 1)  # null: all cores
    max_seconds: float = ranged(30.0, 0, **POSITIVE)  # timing budget; rows whose median has not settled by then say so
    length_mix: bool = True  # also time batches drawn from the dev sentences' real lengths


STAGES = ("adapt", "teacher", "agnostic", "distill", "prune", "trim", "export", "bench")


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: Literal["distill"] = "distill"  # the other kind of recipe is EmbedRecipe's "embedding-kd"
    seed: int = ranged(0, 0)
    output_dir: str = path_field("runs")
    checkpoint_every: int = ranged(50, 1)  # optimizer steps between resume points (and one at each epoch's end)
    stages: list[str] = field(default_factory=lambda: ["teacher", "distill", "export", "bench"])
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    agnostic: AgnosticConfig = field(default_factory=AgnosticConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneStageConfig = field(default_factory=PruneStageConfig)
    trim: TrimStageConfig = field(default_factory=TrimStageConfig)
    adapt: AdaptStageConfig = field(default_factory=AdaptStageConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
