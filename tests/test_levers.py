"""The levers that decide whether a model holds at another lab (stain normalisation, colour and
stain jitter, scale, grey, blur): each changes the pixels as documented, each is off by default
(the pixels a run without them always saw), each is a search key Optuna draws, and a trial's
drawn stain method is the one its model trains, is scored and predicts with."""

from __future__ import annotations

import json
import shutil

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import leuktune
from leuktune.config import AugmentConfig, ConfigError, TrainConfig, load
from leuktune.data import augment as aug
from leuktune.data import cache, synthetic
from leuktune.data.decode import resize
from leuktune.data.stain import from_config
from leuktune.data.split import SPLITS
from leuktune.training.levers import drawn_line
from leuktune.training.loop import run_loop
from leuktune.tuning.dryrun import dry_run
from leuktune.tuning.optuna_space import DefineByRun

STILL = AugmentConfig(flip=False, rotate=0, zoom=0, shear=0, color=0, stain=0)


def _cell_batch(n: int, size: int = 48) -> torch.Tensor:
    """``n`` copies of one dark round cell on a light smear."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cell = ((yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2) < (size / 6) ** 2
    image = torch.where(cell, torch.tensor([0.3, 0.1, 0.5])[:, None, None], torch.tensor([0.9, 0.8, 0.85])[:, None, None])
    return image[None].repeat(n, 1, 1, 1)


def test_the_defaults_draw_nothing_new_and_give_the_pixels_of_before(monkeypatch):
    for name in ("_rescale", "_blur", "_grey"):
        monkeypatch.setattr(aug, name, lambda *a, name=name: pytest.fail(f"{name} ran at its default"))
    train = TrainConfig(augment=AugmentConfig(color=0.1, stain=0.3))
    x = torch.rand(8, 3, 32, 32)
    torch.manual_seed(3)
    before = aug.augment_batch(x, train.augment, train.augment_strength)
    torch.manual_seed(3)
    assert torch.equal(aug.augment_train(x, train), before)
    assert drawn_line(load(None), {"lr": 0.01}) is None  # no lever searched: no new line


def test_scale_makes_cells_larger_and_smaller_and_pads_with_the_mean_colour():
    torch.manual_seed(0)
    batch = _cell_batch(64)
    out = aug.augment_batch(batch, STILL, scale=2.0)
    area = (batch[0].mean(0) < 0.5).sum().item()
    areas = (out.mean(1) < 0.5).flatten(1).sum(1).float() / area
    assert areas.max() > 2.5 and areas.min() < 0.4  # up to 2x the diameter either way: 4x the area
    assert ((areas > 0.2) & (areas < 5)).all()
    smallest = out[areas.argmin()]
    assert torch.allclose(smallest[:, 0, 0], batch[0].mean(dim=(1, 2)), atol=1e-5)  # padded, not mirrored
    assert torch.equal(aug.augment_batch(batch, STILL, scale=1.0), batch)  # 1: off


def test_grayscale_makes_the_channels_equal_with_its_chance():
    torch.manual_seed(0)
    x = torch.rand(200, 3, 8, 8)
    grey = aug.augment_batch(x, STILL, grayscale=1.0)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    half = aug.augment_batch(x, STILL, grayscale=0.5)
    made_grey = (half[:, 0] == half[:, 2]).flatten(1).all(1).float().mean()
    assert 0.35 < made_grey < 0.65


def test_blur_lowers_high_frequency_energy_by_a_sigma_of_each_image():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    laplace = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float32).repeat(3, 1, 1, 1)

    def energy(images):
        return F.conv2d(images, laplace, groups=3).pow(2).mean(dim=(1, 2, 3))

    out = aug.augment_batch(x, STILL, blur=2.0)
    ratio = energy(out) / energy(x)
    assert out.shape == x.shape and (ratio <= 1 + 1e-4).all() and ratio.median() < 0.1
    assert ratio.max() > 10 * ratio.min()  # each image its own sigma in [0, 2]
    assert torch.allclose(out.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02)  # blurred, not darkened


def test_color_strength_scales_the_colour_and_stain_jitter():
    cell = synthetic.render("MM", 0, 1, 32)
    batch = torch.from_numpy(np.asarray(cell, dtype=np.float32) / 255).permute(2, 0, 1)[None].repeat(32, 1, 1, 1)
    jitter = STILL.model_copy(update={"color": 0.1, "stain": 0.3})
    assert torch.equal(aug.augment_batch(batch, jitter, color_strength=0.0), batch)

    def spread(strength):
        torch.manual_seed(0)
        return (aug.augment_batch(batch, jitter, color_strength=strength) - batch).abs().mean()

    assert spread(2.0) > 1.5 * spread(1.0) > 0


def test_the_levers_are_search_keys_that_optuna_draws_and_the_dry_run_lists(tmp_path):
    reference = synthetic.generate(tmp_path / "set", classes=("ALL", "MM"), images_per_class=1, image_size=32)
    overrides = ["data.stain_normalize={choice: [none, reinhard, macenko]}",
                 f"data.stain_reference={reference / 'MM' / 'MM_0000.png'}",
                 "train.color_strength={uniform: [0.0, 3.0]}", "train.scale_augment={uniform: [1.0, 2.0]}",
                 "train.grayscale={choice: [0.0, 0.2]}", "train.blur={uniform: [0.0, 1.5]}",
                 f"storage.path={tmp_path / 'runs'}", "search.num_samples=8"]
    cfg = load(None, overrides)
    assert cfg.data.stain_normalize.choice == ["off", "reinhard", "macenko"]  # none is off
    levers = {"stain_normalize", "color_strength", "scale_augment", "grayscale", "blur"}
    assert levers <= set(cfg.searched())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: DefineByRun(cfg)(trial) or 0.0, n_trials=8)
    drawn = [t.params for t in study.trials]
    assert {p["stain_normalize"] for p in drawn} >= {"reinhard", "macenko"}
    assert all(1.0 <= p["scale_augment"] <= 2.0 and 0 <= p["blur"] <= 1.5 for p in drawn)
    trial = cfg.with_params(drawn[0])
    assert trial.data.stain_normalize == drawn[0]["stain_normalize"] and trial.train.blur == drawn[0]["blur"]
    line = drawn_line(trial, drawn[0])
    assert line.startswith("[leuktune] levers drawn: stain_normalize ") and "blur" in line
    assert "data.stain_normalize" not in cfg.starts()[0] and cfg.starts()[0]["stain_normalize"] == "off"
    text = dry_run(None, overrides)
    assert "stain_normalize: off, reinhard, macenko" in text and "scale_augment: uniform [1.0, 2.0]" in text
    with pytest.raises(ConfigError, match="data.stain_normalize.*stain_reference"):
        load(None, ["data.stain_normalize={choice: [off, macenko]}"])
    with pytest.raises(ConfigError, match="train.scale_augment"):
        load(None, ["train.scale_augment={uniform: [0.5, 2.0]}"])  # a factor's largest: at least 1


def _two_methods(reference) -> tuple[cache.CachedDataset, np.ndarray]:
    """A run's data decoded with and without Reinhard's normalisation (as prepare makes it for a
    search that draws the method), and the normalised pixels."""
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 24)
    plain = np.asarray(rng.integers(40, 255, (len(labels), 32, 32, 3)), np.uint8)
    plain[labels == 1, :16] = 60
    normalizer = from_config(load(None, ["data.stain_normalize=reinhard", f"data.stain_reference={reference}",
                                         "data.image_size=32"]).data)
    stained = np.stack([normalizer(p) for p in plain])
    splits = np.array([SPLITS.index(s) for s in ["train"] * 32 + ["val"] * 16], np.int8)
    data = cache.CachedDataset(images=plain, labels=labels, splits=splits, class_names=("ALL", "healthy"),
                               fingerprint="f" * 16, stain_method="off",
                               restained={"reinhard": (stained, normalizer.pixels)})
    return data, stained


def test_a_trial_trains_scores_and_predicts_with_the_stain_method_it_drew(tmp_path):
    from test_loop import FakeSession

    home = synthetic.generate(tmp_path / "home", classes=("ALL", "healthy"), images_per_class=2, image_size=48)
    reference = tmp_path / "reference.png"
    shutil.copy(home / "ALL" / "ALL_0000.png", reference)
    cfg = load(None, ["model.backbone=test_resnet", "model.head=linear", "data.image_size=32", "train.batch_size=8",
                      "resources.cpus_per_worker=1", "train.epochs=1", "train.lr=0.01",
                      "data.stain_normalize={choice: [off, reinhard]}", f"data.stain_reference={reference}"])
    data, stained = _two_methods(reference)
    trial_cfg = cfg.with_params({"stain_normalize": "reinhard"})
    picked = data.for_stain("reinhard")
    assert picked.pixels() is stained and picked.stain_reference is not None
    assert data.for_stain("off") is data and picked.for_stain("off").pixels() is data.pixels()
    with pytest.raises(ValueError, match="macenko.*not decoded"):
        data.for_stain("macenko")
    (tmp_path / "store").mkdir()
    session = FakeSession(tmp_path / "store")
    run_loop(trial_cfg, picked, session)
    reference.unlink()  # the checkpoint keeps the reference: predicting needs no file
    model = leuktune.load_model(session.checkpoints[1], device="cpu")
    assert model.stain_normalizer.method == "reinhard"
    # scored on the run's data, the model reads the pixels of its own method, not the run's first
    val = data.indices("val")
    assert np.allclose(model.split_probabilities(data, "val"), model.probabilities(stained, rows=val))
    assert not np.allclose(model.split_probabilities(data, "val"), model.probabilities(data.pixels(), rows=val))
    files = sorted(str(p) for p in home.rglob("*.png"))
    pixels, rows = model.load_images(files)
    for path, got in zip(files, pixels):
        assert np.array_equal(got, model.stain_normalizer(resize(Image.open(path).convert("RGB"), 32, "pad")))
    assert model.config.data.stain_normalize == "reinhard"
    assert json.loads(json.dumps(model.describe()))["kind"] == "network"


@pytest.mark.slow
def test_each_stain_method_is_decoded_once_and_no_trial_decodes_again(tmp_path, ray_runtime):
    from leuktune.data.prepare import prepare

    root = synthetic.generate(tmp_path / "set", classes=("ALL", "MM"), images_per_class=4, image_size=40)
    base = ["data.source=imagefolder", f"data.root={root}", "data.image_size=32", f"storage.path={tmp_path / 'runs'}",
            f"data.stain_reference={root / 'MM' / 'MM_0000.png'}"]
    cfg = load(None, [*base, "data.stain_normalize={choice: [off, reinhard, macenko]}"])
    said: list[str] = []
    data, _ = prepare(cfg, progress=said.append)
    assert sum(line.startswith("[leuktune] decoded 8 images") for line in said) == 3  # one per method
    assert data.stain_method == "off" and set(data.restained) == {"reinhard", "macenko"}
    shared = data.shared()  # each method's pixels in the object store once, for every trial
    for method in ("reinhard", "macenko"):
        said.clear()
        alone, _ = prepare(load(None, [*base, f"data.stain_normalize={method}"]), progress=said.append, record=False)
        assert not any(line.startswith("[leuktune] decoded 8") for line in said)  # the method's copy, reused
        assert any(line.startswith("[leuktune] decoded images reused") for line in said)
        assert np.array_equal(shared.for_stain(method).pixels(), alone.pixels())
        assert not np.array_equal(alone.pixels(), data.pixels())
