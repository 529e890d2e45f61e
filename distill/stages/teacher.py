"""Stages `teacher` and `adapt`: load or build the teacher and fine-tune it; language-adaptive masked-LM
pretraining of the teacher or the student.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from polydistill.adapt import MLMStep, as_unlabelled, checkpoint_path, copy_encoder, dev_mlm_loss, masked_lm_for
from polydistill.config import (
    check_against_teacher,
    shape_of_config,
)
from polydistill.data import (
    read_corpus,
)
from polydistill.io import (
    save_pretrained_atomic,
)
from polydistill.logits import dev_accuracy
from polydistill.models import build_scratch_teacher, count_parameters, freeze_below_top_layers, load_pretrained
from polydistill.run_state import TEACHER, TEACHER_ADAPTED, Run, encode_all, resume_point
from polydistill.scoring import evaluate_torch
from polydistill.tokenizer import train_unigram_tokenizer
from polydistill.train import FitSetup, fit


def stage_teacher(run: Run) -> None:
    """Load or build the teacher; fine-tune it on the task unless it is already a task classifier."""
    recipe, say = run.recipe, run.say
    if run.teacher is None:
        needs_training = load_teacher_for(run)
        run.encoded = encode_all(run, run.tokenizer)
    else:  # stage adapt built it and continued its masked-LM training: the task head still needs training
        needs_training = True
        say("teacher: the encoder adapted by stage 'adapt'")
    run.models[TEACHER] = run.teacher
    params = count_parameters(run.teacher)
    say(f"teacher: {params['total'] / 1e6:.2f}M parameters ({params['non_embedding'] / 1e6:.2f}M outside embeddings)")
    if needs_training:
        if recipe.teacher.train_layers is not None:
            trainable = freeze_below_top_layers(run.teacher, recipe.teacher.train_layers)
            say(f"teacher: fine-tuning the top {recipe.teacher.train_layers} layer(s) and the head "
                f"({trainable / 1e6:.2f}M parameters); embeddings and lower layers frozen")  # fmt: skip
        result = fit(
            run.teacher,
            run.joined("train"),
            cross_entropy_step,
            recipe.teacher.train,
            FitSetup(desc="teacher", pad_id=run.pad_id, seed=recipe.seed, resume=resume_point(run, TEACHER), say=say),
            evaluate=dev_accuracy(run.joined("dev"), run.pad_id),
            on_best=lambda m: save_pretrained_atomic(m, run.tokenizer, run.directory / "checkpoints" / TEACHER),
        )
        run.teacher.requires_grad_(True)  # students are built from its weights: they must all train
        run.metrics.setdefault("training", {})[TEACHER] = vars(result)
    else:
        say("teacher is already a classifier for these labels: no fine-tuning")
        save_pretrained_atomic(run.teacher, run.tokenizer, run.directory / "checkpoints" / TEACHER)
    run.teacher_checkpoint = TEACHER
    evaluate_torch(run, TEACHER, run.teacher, run.encoded["test"], run.pad_id)


def load_teacher_for(run: Run) -> bool:
    """Set `run.tokenizer` and `run.teacher` (built from scratch or loaded); returns whether it needs fine-tuning."""
    recipe = run.recipe
    labels = run.data.labels
    if recipe.teacher.model is None:
        cfg = recipe.teacher.scratch
        run.say(
            f"training a {cfg.vocab_size}-piece Unigram tokenizer on {len(run.data.texts('train'))} train sentences"
        )
        run.tokenizer = train_unigram_tokenizer(run.data.texts("train"), cfg.vocab_size)
        run.teacher = build_scratch_teacher(cfg, len(run.tokenizer), labels, task=run.task)
        run.teacher_from_scratch = True
        return True
    run.teacher, run.tokenizer, is_classifier = load_pretrained(
        recipe.teacher.model, labels, task=run.task, trust_remote_code=recipe.teacher.trust_remote_code
    )
    # `distill validate` checked these when it could read the teacher's config; a hub id is known only now
    check_against_teacher(recipe, shape_of_config(run.teacher.config.to_dict()))
    return not is_classifier


def stage_adapt(run: Run) -> None:
    """Language-adaptive pretraining (distill.adapt): continued masked-LM training on raw text.

    Target teacher: this stage comes first; it loads or builds the teacher, trains its encoder as a masked LM,
    and hands it to stage `teacher`, which then fine-tunes it on the task as usual. Target student: the
    student is adapted the same way as soon as it is built (stage agnostic or distill), before it learns
    from the teacher; this stage only says so.
    """
    cfg = run.recipe.adapt
    if cfg.target == "student":
        run.say("the student is adapted (masked LM) when it is built, before it is distilled")
        return
    load_teacher_for(run)
    run.encoded = encode_all(run, run.tokenizer)
    adapt_model(run, run.teacher, TEACHER, pretrained=run.recipe.teacher.model)
    # the adapted encoder under the still untrained task head: what stage teacher starts from, also on --resume
    save_pretrained_atomic(run.teacher, run.tokenizer, run.directory / "checkpoints" / TEACHER_ADAPTED)
    run.teacher_checkpoint = TEACHER_ADAPTED


def adapt_model(run: Run, model: torch.nn.Module, target: str, *, pretrained: str | None = None) -> None:
    """Masked-LM training of `model`'s encoder on the adapt texts; the best dev epoch's encoder is copied back
    into `model`, the masked-LM model saved as checkpoints/adapted, the losses put in `run.metrics["adapt"]`.
    `pretrained`: the checkpoint `model` came from, whose LM head is reused when it has one."""
    cfg, seed = run.recipe.adapt, run.recipe.seed
    corpus = [t for path in cfg.corpus for t in read_corpus(path, "adapt.corpus file")]
    texts = (run.data.texts("train") if cfg.texts == "train" else []) + corpus
    max_length = run.recipe.data.max_length
    train = as_unlabelled(run.tokenizer, texts, max_length)
    dev = as_unlabelled(run.tokenizer, run.data.texts("dev"), max_length)
    mlm = masked_lm_for(model, pretrained, trust_remote_code=run.recipe.teacher.trust_remote_code)
    vocab_size = mlm.get_input_embeddings().num_embeddings
    evaluate = dev_mlm_loss(run.tokenizer, dev, run.pad_id, vocab_size, cfg.mask_prob, seed)
    before = evaluate(mlm)
    run.say(f"adapting the {target} (masked LM) on {len(train)} sentences; dev MLM loss before {before:.4f}")
    directory = checkpoint_path(run.directory)
    result = fit(
        mlm,
        train,
        MLMStep(run.tokenizer, vocab_size, cfg.mask_prob, seed),
        cfg.train,
        FitSetup(desc="adapt", pad_id=run.pad_id, seed=seed, resume=resume_point(run, directory.name), say=run.say),
        evaluate=lambda m: -evaluate(m),
        on_best=lambda m: save_pretrained_atomic(m, run.tokenizer, directory),
    )
    copy_encoder(mlm, model)
    history = [
        {"epoch": h["epoch"], "train_mlm_loss": h["train_loss"], "dev_mlm_loss": -h["dev_score"]}
        for h in result.history
    ]
    run.metrics["adapt"] = {
        "target": target,
        "sentences": len(train),
        "corpus_files": list(cfg.corpus),
        "train_text": cfg.texts,
        "mask_prob": cfg.mask_prob,
        "dev_sentences": len(dev),
        "dev_mlm_loss_before": before,
        "best_epoch": result.best_epoch,
        "history": history,
        "checkpoint": str(directory.relative_to(run.directory)),
    }
    run.say(f"dev MLM loss {before:.4f} -> {-result.best_dev_score:.4f} (best epoch {result.best_epoch})")


def cross_entropy_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], share: dict[str, float]):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # [B, labels] or, for a token task, [B, T, labels] with IGNORE_INDEX (cross_entropy's default) unscored
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1))
    return loss * share["logits"], {"cross_entropy": float(loss.detach())}
