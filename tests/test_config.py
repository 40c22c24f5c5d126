import subprocess
import sys
from pathlib import Path

import pytest

from leuktune.config import CONDITIONS, Choice, ConfigError, ExperimentConfig, LogUniform, load

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_default_yaml_is_the_built_in_default():
    assert load(REPO / "experiments" / "default.yaml") == ExperimentConfig() == load(None)


def test_search_space_forms_parse_into_distributions(tmp_path):
    cfg = load(write(tmp_path, """
model: {backbone: {choice: [resnet18, test_vit]}, dropout: {uniform: [0.0, 0.5]}}
train: {lr: {loguniform: [1.0e-5, 1.0e-2]}, batch_size: {int: [8, 64]}}
"""))
    searched = cfg.searched()
    assert searched["backbone"] == Choice(choice=["resnet18", "test_vit"])
    assert searched["lr"] == LogUniform(loguniform=(1e-5, 1e-2))
    assert searched["batch_size"].int_ == (8, 64)
    assert searched["dropout"].uniform == (0.0, 0.5)
    trial = cfg.with_params({"backbone": "test_vit", "lr": 3e-4, "batch_size": 16, "dropout": 0.1})
    assert (trial.model.backbone, trial.train.lr, trial.train.batch_size) == ("test_vit", 3e-4, 16)
    assert trial.searched() == {}


@pytest.mark.parametrize("text, key, expected", [
    ("model: {backbon: resnet18}", "model.backbon", "did you mean 'backbone'"),
    ("model: {backbone: resnet5000}", "model.backbone", "unknown backbone 'resnet5000'"),
    ("model: {backbone: {choice: [resnet18, nope_net]}}", "model.backbone", "unknown backbone 'nope_net'"),
    ("train: {lr: -0.1}", "train.lr", "greater than 0"),
    ("train: {lr: {loguniform: [-1.0, 0.1]}}", "train.lr", "greater than 0"),
    ("train: {lr: {loguniform: [0.1, 0.01]}}", "train.lr", "lower bound must be below"),
    ("model: {backbone: {choice: []}}", "model.backbone", "non-empty list"),
    ("train: {lr: {logunifrom: [0.001, 0.1]}}", "train.lr", "expected a plain value or one of"),
    ("train: {epochs: many}", "train.epochs", "valid integer"),
    ("data: {split: {train: 0.5, val: 0.2, test: 0.2}}", "data.split", "must be 1.0"),
    ("data: {source: imagefolder}", "data", "data.root is required"),
    ("serach: {num_samples: 3}", "serach", "did you mean 'search'"),
    ("search: {max_concurrent: some}", "search.max_concurrent", "'auto'"),
    ("resources: {launcher: tune, workers_per_trial: 2}", "resources", "launcher 'train'"),
    ("search: {metric: val_speed}", "search.metric", "val_balanced_accuracy"),
])
def test_bad_config_names_file_key_and_expectation(tmp_path, text, key, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    message = str(err.value)
    assert str(path) in message and f"{key}:" in message and expected in message


def test_search_direction_follows_the_metric_unless_given():
    assert load(None).search.mode == "max"
    assert load(None, ["search.metric=val_loss"]).search.mode == "min"
    assert load(None, ["search.metric=val_loss", "search.mode=max"]).search.mode == "max"


def test_conditional_fields_are_declared_in_the_schema():
    cfg = load(None, ["model.head={choice: [linear, mlp]}", "model.mlp_hidden={choice: [64, 128]}",
                      "model.unfreeze_depth={choice: [0, all]}", "train.backbone_lr_mult={loguniform: [0.01, 1.0]}"])
    assert CONDITIONS["mlp_hidden"].parent == "head" and CONDITIONS["mlp_hidden"].holds("mlp")
    assert not CONDITIONS["backbone_lr_mult"].holds(0) and CONDITIONS["backbone_lr_mult"].holds("all")
    # an undrawn conditional parameter takes a representative value, so the trial's config is concrete
    trial = cfg.with_params({"backbone": "test_resnet", "lr": 0.005, "head": "linear", "unfreeze_depth": 0})
    assert trial.searched() == {} and trial.model.mlp_hidden == 64 and trial.train.backbone_lr_mult == 0.01


def test_an_experiment_config_is_taken_as_it_is_and_overrides_apply_to_it():
    cfg = load(None, ["name=first"])
    assert load(cfg) is cfg
    assert load(cfg, ["train.epochs=2"]).train.epochs == 2 and load(cfg, ["train.epochs=2"]).name == "first"


def test_overrides_apply_and_are_validated():
    cfg = load(None, ["train.epochs=3", "model.backbone=resnet18", "train.lr={loguniform: [0.001, 0.01]}"])
    assert cfg.train.epochs == 3 and cfg.model.backbone == "resnet18"
    with pytest.raises(ConfigError, match="train.lr"):
        load(None, ["train.lr=0"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load(None, ["train.epochs"])


@pytest.mark.slow
def test_cli_rejects_bad_config_before_starting_ray(tmp_path):
    path = write(tmp_path, "model: {backbone: resnet5000}\ntrain: {lr: -1}\n")
    proc = subprocess.run([sys.executable, "-m", "leuktune.search", "--config", str(path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "model.backbone" in proc.stderr and "train.lr" in proc.stderr and str(path) in proc.stderr
    assert "Ray" not in proc.stdout + proc.stderr  # no runtime was started
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_cli_help_shows_a_working_example():
    proc = subprocess.run([sys.executable, "-m", "leuktune.search", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "python -m leuktune.search --config experiments/default.yaml" in proc.stdout
    assert "ray job submit" in proc.stdout
