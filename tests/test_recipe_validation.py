"""Recipes are validated before any work: each mistake is one line naming the culprit."""

import subprocess
import sys
from pathlib import Path

import pytest

from polydistill.cli import main
from polydistill.config import apply_override, headline_int8
from polydistill.errors import RecipeError
from polydistill.recipe import load_recipe, parse_recipe

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def base(sib200_path, extra: str = "") -> str:
    return f"name: t\noutput_dir: runs\ndata:\n  path: {sib200_path}\nstudent:\n  num_layers: 1\n{extra}"


@pytest.mark.parametrize(
    ("recipe", "languages"),
    [("quickstart.yaml", 6), ("quickstart-scratch.yaml", 15), ("xlmr-base-sib200.yaml", 15),
     ("sib200-e5-small.yaml", 15), ("sib200-e5-zero-shot.yaml", 15), ("udpos-e5-small.yaml", 7)],
)  # fmt: skip
def test_shipped_recipes_validate(recipe, languages):
    loaded = load_recipe(REPO / "recipes" / recipe)
    assert loaded.stages[0] == "teacher"
    assert len(loaded.data.languages) == languages


def test_unknown_key_names_the_key_and_the_nearest_valid_one(tmp_path, sib200_path):
    path = write(tmp_path, base(sib200_path, "distill:\n  train:\n    epoch: 3\n"))
    with pytest.raises(RecipeError, match=r"unknown key 'distill\.train\.epoch' \(did you mean 'epochs'\?\)"):
        load_recipe(path)


def test_wrong_type_names_the_path_and_the_expected_type(tmp_path, sib200_path):
    path = write(tmp_path, base(sib200_path, "teacher:\n  train:\n    batch_size: large\n"))
    with pytest.raises(RecipeError, match=r"'teacher\.train\.batch_size' must be an integer, got str 'large'"):
        load_recipe(path)


def test_bool_is_not_accepted_as_an_integer(tmp_path, sib200_path):
    with pytest.raises(RecipeError, match="must be an integer"):
        load_recipe(write(tmp_path, base(sib200_path, "seed: true\n")))


def test_missing_data_path_is_reported(tmp_path):
    path = write(tmp_path, f"name: t\ndata:\n  path: {tmp_path}/nowhere\nstudent:\n  num_layers: 1\n")
    with pytest.raises(Exception, match="data path not found"):
        load_recipe(path)


def test_unknown_language_suggests_a_close_code(tmp_path, sib200_path):
    path = write(tmp_path, base(sib200_path, "").replace("data:\n", "data:\n  languages: [yor_Latm]\n"))
    with pytest.raises(Exception, match=r"unknown language code 'yor_Latm'.*did you mean 'yor_Latn'"):
        load_recipe(path)


def test_unknown_loss_and_loss_argument_are_reported(tmp_path, sib200_path):
    path = write(tmp_path, base(sib200_path, "distill:\n  losses:\n    logit_kl: {weight: 1, temprature: 2}\n"))
    with pytest.raises(RecipeError, match=r"'distill\.losses\.logit_kl\.temprature' \(did you mean 'temperature'"):
        load_recipe(path)
    path = write(tmp_path, base(sib200_path, "distill:\n  losses:\n    logit_kll: {weight: 1}\n"))
    with pytest.raises(RecipeError, match=r"unknown loss 'distill\.losses\.logit_kll' \(did you mean 'logit_kl'"):
        load_recipe(path)


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: t\ndata: [unclosed\n")
    with pytest.raises(RecipeError, match=r"malformed YAML in .*line \d+"):
        load_recipe(path)


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path, sib200_path):
    path = write(tmp_path, base(sib200_path, "distill:\n  train:\n    lr: 1.0e-3\n    lr: 5.0e-4\n"))
    with pytest.raises(RecipeError, match=r"line 10, column 5: key 'lr' appears twice \(lines 9 and 10\)"):
        load_recipe(path)


def test_yaml_merge_keys_may_still_override_what_they_merge(tmp_path, sib200_path):
    extra = "teacher:\n  train: &t {epochs: 2, lr: 1.0e-3}\ndistill:\n  train:\n    <<: *t\n    lr: 5.0e-4\n"
    recipe = load_recipe(write(tmp_path, base(sib200_path, extra)))
    assert (recipe.distill.train.epochs, recipe.distill.train.lr) == (2, 5.0e-4)


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs", "..", ".", "", "a\\b"])
def test_a_run_name_that_is_not_one_plain_folder_is_refused(tmp_path, sib200_path, name):
    text = base(sib200_path).replace("name: t", f"name: {name!r}")
    with pytest.raises(RecipeError, match="'name' .* must be a plain folder name"):
        load_recipe(write(tmp_path, text))


def test_overrides_keep_yaml_types_and_reach_nested_keys(sib200_path):
    raw = {"name": "t", "data": {"path": str(sib200_path)}, "student": {"num_layers": 1}}
    apply_override(raw, "student.layers=[0, 2]")
    apply_override(raw, "student.num_layers=null")
    apply_override(raw, "distill.train.lr=3e-4")
    recipe = parse_recipe(raw)
    assert recipe.student.layers == [0, 2] and recipe.student.num_layers is None
    assert recipe.distill.train.lr == pytest.approx(3e-4)


def test_env_variable_with_default_in_data_path(monkeypatch, sib200_path):
    monkeypatch.setenv("POLYDISTILL_TEST_ROOT", str(sib200_path.parent))
    raw = {"name": "t", "data": {"path": "${POLYDISTILL_TEST_ROOT:-/nope}/sib-200"}, "student": {"num_layers": 1}}
    assert parse_recipe(raw).data.path == f"{sib200_path.parent}/sib-200"


@pytest.mark.parametrize(
    "extra, culprit",
    [
        ("distill:\n  train:\n    epoch: 3\n", "distill.train.epoch"),
        ("teacher:\n  train:\n    lr: fast\n", "teacher.train.lr"),
    ],
)
def test_cli_prints_one_line_exits_nonzero_and_leaves_no_run_directory(tmp_path, sib200_path, capsys, extra, culprit):
    path = write(tmp_path, base(sib200_path, extra).replace("output_dir: runs", f"output_dir: {tmp_path}/runs"))
    code = main(["run", str(path)])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and culprit in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_cli_missing_data_path_in_a_real_process(tmp_path):
    path = write(tmp_path, f"name: t\noutput_dir: {tmp_path}/runs\ndata:\n  path: {tmp_path}/missing\n"
                           "student:\n  num_layers: 1\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "polydistill", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"distill: error: data path not found: {tmp_path}/missing "
                                                "(set 'data.path' or POLYDISTILL_DATA)"]  # fmt: skip
    assert not (tmp_path / "runs").exists()


def test_export_variants_are_checked_by_name_and_must_include_the_benchmarked_one(tmp_path, sib200_path):
    with pytest.raises(RecipeError, match=r"'export\.variants\[1\]' must be one of .*got 'int8-statik'.*int8-static"):
        load_recipe(write(tmp_path, base(sib200_path, "export:\n  variants: [int8-dynamic, int8-statik]\n")))
    with pytest.raises(RecipeError, match="'export.variants' lists a variant twice"):
        load_recipe(write(tmp_path, base(sib200_path, "export:\n  variants: [fp16, fp16, int8-dynamic]\n")))
    with pytest.raises(RecipeError, match="must include an int8 variant .* when 'bench' runs: the first one listed"):
        load_recipe(write(tmp_path, base(sib200_path, "export:\n  variants: [fp16, none]\n")))
    blocks = load_recipe(write(tmp_path, base(sib200_path, "export:\n  variants: [fp16, int8-blocks, int8-dynamic]\n")))
    assert headline_int8(blocks.export.variants) == "int8-blocks"  # the bench stage's and report's headline row
    recipe = load_recipe(
        write(tmp_path, base(sib200_path, "stages: [teacher, distill, export]\nexport:\n  variants: [fp16]\n"))
    )
    assert recipe.export.variants == ["fp16"]


def test_every_calibration_method_of_the_schema_maps_to_onnxruntimes():
    import typing

    from polydistill.config import CalibrationMethod
    from polydistill.export import quantize

    assert set(typing.get_args(CalibrationMethod)) == set(quantize.CALIBRATION_METHODS)


# Values the schema refuses before anything runs: each was accepted once and crashed (or misbehaved) later.
# The base recipe's teacher is the default scratch one: 4 layers, 512 positions.
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["teacher.scratch.num_heads=0"], "'teacher.scratch.num_heads' must be at least 1, got 0"),
        (["teacher.scratch.hidden_size=0"], "'teacher.scratch.hidden_size' must be at least 1, got 0"),
        (["teacher.scratch.vocab_size=0"], "'teacher.scratch.vocab_size' must be at least 16, got 0"),
        (["distill.train.lr=-1"], "'distill.train.lr' must be greater than 0, got -1.0"),
        (["distill.train.lr=.nan"], "'distill.train.lr' must be a finite number, got nan"),
        (["teacher.train.lr=.inf"], "'teacher.train.lr' must be a finite number, got inf"),
        (["distill.train.warmup_ratio=1.5"], "'distill.train.warmup_ratio' must be in [0, 1], got 1.5"),
        (["distill.train.max_grad_norm=-1"], "'distill.train.max_grad_norm' must be greater than 0, got -1.0"),
        (["student.num_layers=0"], "'student.num_layers' must be at least 1, got 0"),
        (["student.num_layers=5"], "'student.num_layers' must be at most the teacher's 4 layers, got 5"),
        (["student.num_layers=null", "student.layers=[]"], "'student.layers' is an empty list"),
        (["student.num_layers=null", "student.layers=[0, 9]"], "'student.layers[1]' is 9, but the teacher has"),
        (["student.num_layers=null", "student.layers=[-1]"], "'student.layers[0]' must be at least 0, got -1"),
        (["data.max_length=600"], "'data.max_length' 600 is more than the teacher's 512 positions"),
        (["distill.losses.logit_kl.temperature=0"], "'distill.losses.logit_kl.temperature' must be greater than 0"),
        (["distill.losses.logit_kl.weight=.nan"], "'distill.losses.logit_kl.weight' must be a finite number"),
        (["distill.losses.cross_entropy.weight=-1"], "'distill.losses.cross_entropy.weight' must be at least 0"),
        (["export.parity_tolerance=-0.1"], "'export.parity_tolerance' must be greater than 0, got -0.1"),
        (["export.opset=1"], "'export.opset' must be in [14, 20], got 1"),
        (["bench.runs=-1"], "'bench.runs' must be at least 1, got -1"),
        (["bench.max_seconds=.inf"], "'bench.max_seconds' must be a finite number, got inf"),
        (["prune.heads=1.0"], "'prune.heads' must be in [0, 1), got 1.0"),
        (["seed=-3"], "'seed' must be at least 0, got -3"),
    ],
)
def test_validate_refuses_a_value_out_of_its_range_in_one_line(tmp_path, sib200_path, capsys, overrides, message):
    code = main(["validate", str(write(tmp_path, base(sib200_path))), *overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.splitlines() == [err] and message in err and "Traceback" not in err


def test_all_loss_weights_zero_is_refused(sib200_path):
    raw = {"name": "t", "data": {"path": str(sib200_path)}, "student": {"num_layers": 1},
           "distill": {"losses": {"logit_kl": {"weight": 0}}}}  # fmt: skip
    with pytest.raises(RecipeError, match="every loss has weight 0"):
        parse_recipe(raw)


def test_a_local_teachers_config_bounds_the_student_and_the_sentence_length(tmp_path, sib200_path):
    """The teacher folder's config.json is read at validation: its depth and its position table (an XLM-R keeps
    pad_token_id + 1 slots below the first position)."""
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text(
        '{"model_type": "xlm-roberta", "num_hidden_layers": 2, "max_position_embeddings": 66, "pad_token_id": 1}'
    )
    raw = {"name": "t", "data": {"path": str(sib200_path), "max_length": 64}, "student": {"num_layers": 2},
           "teacher": {"model": str(teacher)}}  # fmt: skip
    parse_recipe(raw)  # 64 tokens and 2 layers fit
    with pytest.raises(RecipeError, match="'data.max_length' 65 is more than the teacher's 64 positions"):
        parse_recipe({**raw, "data": {**raw["data"], "max_length": 65}})
    with pytest.raises(RecipeError, match="'student.num_layers' must be at most the teacher's 2 layers, got 3"):
        parse_recipe({**raw, "student": {"num_layers": 3}})
