"""The experiments library: every file dry-runs; real data never falls back to the demo's networks;
missing pretrained weights stop a run before Ray, saying how to get them."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import leuktune
from leuktune.config import ConfigError, load
from leuktune.models import weights
from leuktune.models.backbones import create_backbone
from leuktune.tuning.dryrun import dry_run

REPO = Path(__file__).resolve().parents[1]
FILES = sorted((REPO / "experiments").glob("*.yaml"))


def test_the_library_has_every_published_setup():
    assert {f.stem for f in FILES} >= {"default", "cnmc", "six_class", "aria_all", "allidb2", "blood_cells", "pbc",
                                       "published_grid"}


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_experiment_file_dry_runs(path):
    text = dry_run(path)
    assert f"({path}): valid" in text and "searched (" in text and "per trial:" in text and "at once:" in text
    header = path.read_text().split("\nname:")[0]
    if path.stem not in ("default",):  # each says where its data comes from, its layout, what it costs
        assert "Data:" in header and "Layout" in header and "Cost:" in header, path.name
    if path.stem not in ("default", "sites_synthetic"):  # the built-in set's experiments keep tiny networks
        cfg = load(path)
        assert cfg.model.pretrained and not any(b.startswith("test_") for b in weights.representatives(cfg.model.backbone))


@pytest.mark.slow
def test_the_published_grid_runs_every_combination_once():
    text = dry_run(REPO / "experiments" / "published_grid.yaml")
    assert "searched (grid, 108 trials" in text and "ASHA" not in text.split("at most")[1].splitlines()[0]


def test_real_data_with_no_model_space_searches_real_pretrained_networks():
    cfg = load(None, ["data.source=imagefolder", "data.root=/data/cells"])
    assert cfg.model.pretrained and set(weights.representatives(cfg.model.backbone)) == {
        "resnet50", "efficientnet_b0", "densenet121"}
    assert load(None).model.backbone.choice[0] == "test_resnet"  # the built-in demo keeps its tiny networks


@pytest.mark.slow
def test_missing_weights_stop_the_run_before_ray_saying_how_to_get_them(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "leuktune.search", "--set", f"storage.path={tmp_path}",
                           "--set", "model.pretrained=true", "--set", "model.backbone={choice: [test_resnet, alexnet]}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, env={
                              "HF_HOME": str(tmp_path / "empty-hf"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "Ray" not in proc.stdout + proc.stderr
    assert "pretrained weights of test_resnet, alexnet are not on this machine" in proc.stderr
    assert "https://huggingface.co/timm/test_resnet" in proc.stderr and "alexnet-owt-7be5be79.pth" in proc.stderr
    assert not list(tmp_path.glob("*/leaderboard.parquet"))


def test_weights_in_the_pretrained_folder_are_found(tmp_path):
    folder = tmp_path / "imagenet"
    folder.mkdir()
    for name in ("test_resnet", "test_efficientnet"):
        save_file(create_backbone(name).model.state_dict(), str(folder / f"{name}.safetensors"))
    cfg = load(None, ["model.pretrained=true", f"model.pretrained_path={folder}",
                      "model.backbone={choice: [test_resnet, test_efficientnet]}"])
    weights.check(cfg)  # nothing missing
    with pytest.raises(ConfigError, match="test_vit"):
        weights.check(cfg.model_copy(update={"model": cfg.model.model_copy(update={"backbone": "test_vit"})}))
    assert "pretrained weights: found for every backbone" in dry_run(cfg)
    assert torch.is_tensor(next(iter(create_backbone("test_resnet", pretrained=True, pretrained_path=folder)
                                     .model.state_dict().values())))
    assert leuktune.load_config(cfg) is cfg
