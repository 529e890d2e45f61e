"""Teacher outputs cached on disk equal the live forward, are reused, and are keyed by teacher and data."""

import torch
from transformers import XLMRobertaForTokenClassification

from polydistill.cache import CacheSpec, teacher_cache
from polydistill.data import collate
from polydistill.features import forward_features
from polydistill.ud import encode_words


def _tiny_token_teacher(tiny_xlmr_config, vocab_size: int):
    torch.manual_seed(0)
    config = tiny_xlmr_config(vocab_size, num_labels=5, attn_implementation="eager")
    return XLMRobertaForTokenClassification(config).eval()


def _words(small_texts, n=10):
    return [text.split()[:12] for text in small_texts[:n]]


def test_cached_outputs_equal_the_live_forward_and_are_reused(tmp_path, tiny_tokenizer, tiny_xlmr_config):
    teacher = _tiny_token_teacher(tiny_xlmr_config, len(tiny_tokenizer))
    words = _words(["alpha beta gamma delta", "one two", "x y z w v u t", "a b c"] * 3)
    enc = encode_words(tiny_tokenizer, words, [[i % 5 for i, _ in enumerate(w)] for w in words], max_length=32)
    spec = CacheSpec(features=("hidden", "logits", "qkv"), layers=(1,))
    cache = teacher_cache(teacher, enc, spec, tmp_path, pad_id=1, batch_size=4)
    indices = [5, 0, 2]
    batch = collate(enc, indices, pad_id=1)
    longest = batch["input_ids"].shape[1]
    cached = cache.batch(torch.tensor(indices), longest)
    with torch.no_grad():
        live = forward_features(teacher, batch["input_ids"], batch["attention_mask"], {"logits", "hidden", "qkv"})
    mask = batch["attention_mask"].bool()
    assert torch.allclose(cached["logits"][mask], live["logits"][mask], atol=1e-5)
    # per-token features are kept in float16: equal to the live ones up to that rounding
    assert torch.allclose(cached["hidden"][1][mask], live["hidden"][1][mask], rtol=2e-3, atol=2e-3)
    for got, want in zip(cached["qkv"][1], live["qkv"][1], strict=True):
        assert torch.allclose(got[mask], want[mask], rtol=2e-3, atol=2e-3)
        assert got.dtype == torch.float32
    assert set(cached["hidden"]) == {1}  # only the layer asked for
    assert (cached["logits"][~mask] == 0).all()  # padding is zeros, not another sentence's values

    again = teacher_cache(teacher, enc, spec, tmp_path, pad_id=1)
    assert again.path == cache.path and len(list(tmp_path.iterdir())) == 1  # read back, not rewritten
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind


def test_a_changed_teacher_or_data_gets_its_own_cache(tmp_path, tiny_tokenizer, tiny_xlmr_config, small_texts):
    teacher = _tiny_token_teacher(tiny_xlmr_config, len(tiny_tokenizer))
    words = _words(small_texts)
    enc = encode_words(tiny_tokenizer, words, [[0] * len(w) for w in words], max_length=32)
    spec = CacheSpec(features=("logits",))
    first = teacher_cache(teacher, enc, spec, tmp_path, pad_id=1)
    with torch.no_grad():
        teacher.classifier.bias.add_(1.0)
    second = teacher_cache(teacher, enc, spec, tmp_path, pad_id=1)
    third = teacher_cache(teacher, encode_words(tiny_tokenizer, words[:5], [[0] * len(w) for w in words[:5]], 32),
                          spec, tmp_path, pad_id=1)  # fmt: skip
    assert len({first.path, second.path, third.path}) == 3
    batch = collate(enc, [0], pad_id=1)
    shift = (
        second.batch([0], batch["input_ids"].shape[1])["logits"]
        - first.batch([0], batch["input_ids"].shape[1])["logits"]
    )
    assert torch.allclose(shift[batch["attention_mask"].bool()], torch.ones(1))
