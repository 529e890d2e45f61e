"""The scratch teacher's Unigram tokenizer gives the same ids every time it is trained on the same text."""

import json
import subprocess
import sys

import pytest

from polydistill.tokenizer import SPECIAL_TOKENS, train_unigram_tokenizer

# the trainer's nondeterminism shows across processes (hash seeds), so each training runs in its own
TRAIN = """
import json, sys
from polydistill.tokenizer import train_unigram_tokenizer
texts = json.load(sys.stdin)
tok = train_unigram_tokenizer(texts, 1500)
print(json.dumps(tok.convert_ids_to_tokens(list(range(len(tok))))))
"""


def _pieces_in_a_new_process(texts: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", TRAIN], input=json.dumps(texts), capture_output=True, text=True,
                         check=True)  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.slow
def test_two_trainings_in_separate_processes_give_the_same_piece_for_every_id(small_texts):
    assert _pieces_in_a_new_process(small_texts) == _pieces_in_a_new_process(small_texts)


def test_pieces_after_the_special_tokens_are_ordered_by_text_with_mask_last(small_texts):
    tok = train_unigram_tokenizer(small_texts, 1500)
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    assert pieces[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS and pieces[-1] == "<mask>"
    assert pieces[len(SPECIAL_TOKENS) : -1] == sorted(pieces[len(SPECIAL_TOKENS) : -1])


def test_lowercase_tokenizer_case_folds_and_still_does_after_reloading_and_trimming(small_texts, tmp_path):
    from transformers import AutoTokenizer

    from polydistill.students.vocab import always_kept_ids, trim_tokenizer

    folded = train_unigram_tokenizer(small_texts, 600, lowercase=True)
    upper = " ".join(small_texts[:3]).upper()
    assert folded(upper)["input_ids"] == folded(upper.lower())["input_ids"]
    folded.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(upper)["input_ids"] == folded(upper)["input_ids"]
    ids = reloaded(upper)["input_ids"]
    trimmed = trim_tokenizer(reloaded, sorted(set(ids) | set(always_kept_ids(reloaded))))
    assert trimmed.convert_ids_to_tokens(trimmed(upper)["input_ids"]) == reloaded.convert_ids_to_tokens(ids)
    cased = train_unigram_tokenizer(small_texts, 600)
    assert cased(upper)["input_ids"] != cased(upper.lower())["input_ids"]  # the default keeps case
