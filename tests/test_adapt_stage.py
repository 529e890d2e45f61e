"""Recipe stage `adapt`: continued masked-LM training of the teacher (before fine-tuning) or the student
(before distillation) on raw text, with the MLM loss per epoch in metrics.json and the report."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import QUICKSTART, TINY_RECIPE
from transformers import AutoModelForMaskedLM, AutoTokenizer

from polydistill.adapt import IGNORE_INDEX, MLMStep, copy_encoder, mask_tokens, masked_lm_for
from polydistill.batch_shares import WHOLE_BATCH
from polydistill.errors import RecipeError
from polydistill.metrics_schema import metrics_problems
from polydistill.recipe import load_recipe

TINY = [
    "data.languages=[eng_Latn, hau_Latn]",
    "data.max_train_per_language=32",
    "data.max_eval_per_language=8",
    "teacher.train.epochs=1",
    "student.num_layers=2",
    "distill.train.epochs=1",
    "adapt.train.epochs=2",
    "adapt.train.lr=1e-3",
    "adapt.train.batch_size=8",
]


def _special_and_pad_batch(tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def test_masking_skips_special_and_pad_tokens_and_masks_about_mask_prob(tiny_tokenizer, small_texts):
    ids, attention = _special_and_pad_batch(tiny_tokenizer, small_texts[:200])
    special = list(tiny_tokenizer.all_special_ids)
    inputs, labels = mask_tokens(
        ids, attention, special_ids=special, mask_id=tiny_tokenizer.mask_token_id, vocab_size=len(tiny_tokenizer),
        prob=0.15, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    chosen = labels != IGNORE_INDEX
    eligible = attention.bool() & ~torch.isin(ids, torch.tensor(special))
    assert not (chosen & ~eligible).any()  # never a special or pad position
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # everything else untouched
    share = chosen.sum() / eligible.sum()
    assert 0.13 < share < 0.17
    masked = (inputs[chosen] == tiny_tokenizer.mask_token_id).float().mean()
    assert 0.75 < masked < 0.85  # 80% [mask]; the rest random or kept


def test_masking_always_scores_at_least_one_token(tiny_tokenizer):
    ids, attention = _special_and_pad_batch(tiny_tokenizer, ["a"])
    _, labels = mask_tokens(
        ids, attention, special_ids=list(tiny_tokenizer.all_special_ids), mask_id=tiny_tokenizer.mask_token_id,
        vocab_size=len(tiny_tokenizer), prob=1e-9, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert (labels != IGNORE_INDEX).sum() == 1


def test_masked_lm_shares_the_encoder_and_a_few_steps_lower_the_loss(tiny_teacher, tiny_tokenizer, small_texts):
    mlm = masked_lm_for(tiny_teacher)
    key = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(mlm.base_model.state_dict()[key], tiny_teacher.base_model.state_dict()[key])
    ids, attention = _special_and_pad_batch(tiny_tokenizer, small_texts[:16])
    batch = {"input_ids": ids, "attention_mask": attention}
    optimizer = torch.optim.AdamW(mlm.parameters(), lr=3e-3)
    mlm.train()

    def loss_on_fixed_masks() -> float:
        with torch.no_grad():
            return float(MLMStep(tiny_tokenizer, len(tiny_tokenizer), 0.15, seed=1)(mlm, batch, WHOLE_BATCH)[0])

    before = loss_on_fixed_masks()
    step = MLMStep(tiny_tokenizer, len(tiny_tokenizer), 0.15, seed=0)
    for _ in range(15):
        loss, _ = step(mlm, batch, WHOLE_BATCH)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_on_fixed_masks() < before - 0.5
    copy_encoder(mlm, tiny_teacher)
    assert torch.equal(mlm.base_model.state_dict()[key], tiny_teacher.base_model.state_dict()[key])


def test_masked_lm_reuses_a_pretrained_checkpoints_lm_head(tiny_teacher, tmp_path):
    pretrained = masked_lm_for(tiny_teacher)
    torch.nn.init.normal_(pretrained.lm_head.dense.weight)
    pretrained.save_pretrained(tmp_path)
    assert torch.equal(masked_lm_for(tiny_teacher, str(tmp_path)).lm_head.dense.weight, pretrained.lm_head.dense.weight)
    assert not torch.equal(masked_lm_for(tiny_teacher).lm_head.dense.weight, pretrained.lm_head.dense.weight)


@pytest.fixture(scope="module")
def adapt_run(tiny_run):
    """The tiny recipe (a 4 x 32 scratch teacher with a 300-piece vocabulary) with two adaptation epochs."""
    return tiny_run(TINY_RECIPE, *TINY)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, adapt_run) -> Path:
    return adapt_run.run(tmp_path_factory.mktemp("runs"), "stages=[adapt, teacher, distill]")


@pytest.mark.slow
def test_adapt_teacher_records_mlm_loss_per_epoch_and_lowers_dev_loss(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    assert metrics_problems(m) == []
    adapt = m["adapt"]
    assert adapt["target"] == "teacher" and adapt["sentences"] == 64
    history = adapt["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(h["train_mlm_loss"] > 0 and h["dev_mlm_loss"] > 0 for h in history)
    assert min(h["dev_mlm_loss"] for h in history) < adapt["dev_mlm_loss_before"]
    assert (run_dir / adapt["plot"]).is_file()
    report = (run_dir / "report.md").read_text()
    assert "## Language-adaptive pretraining" in report and "adapt_mlm_loss.png" in report
    assert "teacher" in m["mean"]  # fine-tuned and scored after adaptation


@pytest.mark.slow
def test_adapted_checkpoint_reloads_and_its_encoder_is_the_one_the_teacher_fine_tuned_from(run_dir):
    path = run_dir / "checkpoints" / "adapted"
    mlm = AutoModelForMaskedLM.from_pretrained(path)
    assert type(mlm).__name__ == "XLMRobertaForMaskedLM"
    assert AutoTokenizer.from_pretrained(path).pad_token_id == 1
    adapted = load_file(path / "model.safetensors")
    assert "roberta.embeddings.word_embeddings.weight" in adapted
    teacher = load_file(run_dir / "checkpoints" / "teacher" / "model.safetensors")
    key = "embeddings.word_embeddings.weight"
    assert adapted[f"roberta.{key}"].shape == teacher[f"roberta.{key}"].shape


@pytest.mark.slow
def test_teacher_stage_receives_the_adapted_encoder(tmp_path, adapt_run, monkeypatch):
    """With the task's fine-tuning at lr 0, the teacher checkpoint's encoder is exactly the adapted one."""
    import polydistill.stages.teacher as teacher_stages

    seen = {}
    original = teacher_stages.fit

    def spy(model, train, step_loss, cfg, setup, **kwargs):
        if setup.desc == "teacher":
            seen["query"] = model.base_model.encoder.layer[0].attention.self.query.weight.detach().clone()
        return original(model, train, step_loss, cfg, setup, **kwargs)

    monkeypatch.setattr(teacher_stages, "fit", spy)
    run_dir = adapt_run.run(tmp_path, "adapt.train.epochs=1", "stages=[adapt, teacher]")
    adapted = load_file(run_dir / "checkpoints" / "adapted" / "model.safetensors")
    assert torch.equal(seen["query"], adapted["roberta.encoder.layer.0.attention.self.query.weight"])


@pytest.mark.slow
def test_adapt_student_runs_when_the_student_is_built(tmp_path, adapt_run, capsys):
    corpus = tmp_path / "hau.txt"
    corpus.write_text("Ina kwana?\n\nLafiya lau.\n", encoding="utf-8")
    run_dir = adapt_run.run(tmp_path / "runs", "adapt.target=student", "adapt.train.epochs=1",
                            f"adapt.corpus=[{corpus}]", "stages=[adapt, teacher, distill]")  # fmt: skip
    adapt = json.loads((run_dir / "metrics.json").read_text())["adapt"]
    assert adapt["target"] == "student" and adapt["sentences"] == 64 + 2
    mlm = AutoModelForMaskedLM.from_pretrained(run_dir / "checkpoints" / "adapted")
    assert mlm.config.num_hidden_layers == 2  # the student's depth


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("adapt.mask_prob=1.5", "'adapt.mask_prob' must be in (0, 1), got 1.5"),
        ("adapt.target=studnet", "'adapt.target' must be one of 'teacher', 'student', got 'studnet'"),
        ("adapt.train.epochs=0", "'adapt.train.epochs' must be at least 1"),
        ("adapt.corpus=[/no/such/file.txt]", "'adapt.corpus[0]' is not a file: /no/such/file.txt"),
        ("adapt.mask=0.2", "unknown key 'adapt.mask'"),
        ("adapt.texts=none", "'adapt.texts' is 'none' and 'adapt.corpus' is empty"),
    ],
)
def test_bad_adapt_keys_are_one_line_errors_naming_the_key(override, message, sib200_path):
    with pytest.raises(RecipeError) as exc:
        load_recipe(QUICKSTART, [f"data.path={sib200_path}", "stages=[adapt, teacher, distill]", override])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_adapt_must_come_before_teacher(sib200_path):
    with pytest.raises(RecipeError, match="must keep the order \\['adapt', 'teacher'"):
        load_recipe(QUICKSTART, [f"data.path={sib200_path}", "stages=[teacher, adapt, distill]"])
    with pytest.raises(RecipeError, match="add 'distill'"):
        load_recipe(QUICKSTART, [f"data.path={sib200_path}", "stages=[adapt, teacher]", "adapt.target=student"])


def test_corpus_paths_expand_environment_variables(tmp_path, sib200_path, monkeypatch):
    (tmp_path / "x.txt").write_text("hello\n")
    monkeypatch.setenv("ADAPT_DIR", str(tmp_path))
    recipe = load_recipe(
        QUICKSTART,
        [f"data.path={sib200_path}", "stages=[adapt, teacher]", "adapt.corpus=['${ADAPT_DIR}/x.txt']"],
    )
    assert recipe.adapt.corpus == [str(tmp_path / "x.txt")]
