import os
from pathlib import Path

import datasets
import pytest
from tiny import REPO, TinyRun

DATA_ROOT = Path(os.environ.get("POLYDISTILL_DATA", REPO.parent / "shared" / "data"))
SIB200 = DATA_ROOT / "sib-200"

datasets.disable_progress_bars()


@pytest.fixture(scope="session")
def sib200_path() -> Path:
    if not SIB200.is_dir():
        pytest.fail(f"shared data not found at {SIB200}; set POLYDISTILL_DATA")
    return SIB200


@pytest.fixture(scope="session")
def ud_path() -> Path:
    if not (DATA_ROOT / "ud-pos").is_dir():
        pytest.fail(f"shared data not found at {DATA_ROOT / 'ud-pos'}; set POLYDISTILL_DATA")
    return DATA_ROOT / "ud-pos"


@pytest.fixture(scope="session")
def small_texts(sib200_path) -> list[str]:
    import csv

    texts = []
    for lang in ("eng_Latn", "yor_Latn", "amh_Ethi"):
        with open(sib200_path / "data" / lang / "train.tsv", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))[1:200]
        texts += [row[2] for row in rows]
    return texts


@pytest.fixture(scope="session")
def tiny_tokenizer(small_texts):
    from polydistill.tokenizer import train_unigram_tokenizer

    return train_unigram_tokenizer(small_texts, vocab_size=600)


@pytest.fixture(scope="session")
def tiny_xlmr_config():
    """`make(vocab_size, **overrides)`: the 2-layer × 32-wide XLM-R config the export tests share."""
    from transformers import XLMRobertaConfig

    def make(vocab_size: int, **overrides) -> XLMRobertaConfig:
        settings = dict(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=514, pad_token_id=1,
        )  # fmt: skip
        return XLMRobertaConfig(**{**settings, **overrides})

    return make


@pytest.fixture()
def tiny_teacher(tiny_tokenizer):
    import torch

    from polydistill.config import ScratchConfig
    from polydistill.models import build_scratch_teacher

    torch.manual_seed(0)
    cfg = ScratchConfig(vocab_size=600, hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64)
    return build_scratch_teacher(cfg, len(tiny_tokenizer), ["a", "b", "c"]).eval()


@pytest.fixture(scope="session")
def tiny_run(sib200_path):
    """`make(recipe, *overrides, data=sib200_path)`: a `tiny.TinyRun` of `recipe` shrunk by `overrides`, whose
    `run(out, *extra)` runs it in this process and returns its run directory, `start(...)` as a subprocess."""

    def make(recipe: Path, *overrides: str, data: Path | None = None) -> TinyRun:
        return TinyRun(recipe, data or sib200_path, overrides)

    return make
