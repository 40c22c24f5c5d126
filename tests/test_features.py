"""Foundation-model backbones from their authors' files, a frozen backbone's features computed
once and shared, and the probes (logistic, kNN) fitted on them: real timm ViTs with random
weights saved by the test, the real loop driven by test_loop's session fake (and through Ray
in the slow test at the end), real ONNX exports."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import leuktune
from leuktune.config import ConfigError, load
from leuktune.data.cache import SPLITS, CachedDataset
from leuktune.exporting import export
from leuktune.models.backbones import BackboneError, WeightsError, create_backbone
from leuktune.models.classifier import build_model
from leuktune.models.space_check import check_model_space
from leuktune.training import features as frozen
from leuktune.training.device import DeviceSetup
from leuktune.training.loop import run_loop
from conftest import tiny_overrides
from test_loop import FakeSession

VIT = "vit_small_patch14_dinov2"


def _dinobloom_file(path, image_size=224, seed=0):
    """A ViT-S/14 with random weights saved as DinoBloom's authors publish theirs: the DINOv2
    teacher's state under "teacher", the backbone's keys prefixed "backbone.", its mask token,
    and the projection heads of self-supervised training beside it. Returns the model saved."""
    torch.manual_seed(seed)
    import timm

    source = timm.create_model(VIT, num_classes=0, img_size=image_size).eval()
    teacher = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    teacher["backbone.mask_token"] = torch.zeros(1, source.embed_dim)
    teacher["dino_head.mlp.0.weight"] = torch.randn(8, source.embed_dim)
    teacher["ibot_head.mlp.0.weight"] = torch.randn(8, source.embed_dim)
    torch.save({"teacher": teacher}, path)
    return source


def test_a_dinobloom_checkpoint_loads_by_name_and_file_with_the_features_it_was_saved_with(tmp_path):
    source = _dinobloom_file(tmp_path / "DinoBloom-S.pth")
    backbone = create_backbone(VIT, image_size=224, pretrained=True, pretrained_path=tmp_path / "DinoBloom-S.pth")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(backbone.eval()(x), source.forward_features(x), atol=1e-5)
        # a ViT pools by its class token: the features a head sees
        assert torch.allclose(backbone.pool(backbone(x)), source.forward_head(source.forward_features(x),
                                                                                  pre_logits=True), atol=1e-5)
    # another size: the position embeddings resampled to its grid (8 x 8 patches + the class token)
    small = create_backbone(VIT, image_size=112, pretrained=True, pretrained_path=tmp_path / "DinoBloom-S.pth")
    assert small.model.pos_embed.shape == (1, 65, 384)
    assert torch.equal(small.model.blocks[3].mlp.fc1.weight, source.blocks[3].mlp.fc1.weight)
    # a folder of per-backbone files finds it under the backbone's name
    (tmp_path / "weights").mkdir()
    (tmp_path / "DinoBloom-S.pth").rename(tmp_path / "weights" / f"{VIT}.pth")
    again = create_backbone(VIT, image_size=224, pretrained=True, pretrained_path=tmp_path / "weights")
    assert torch.equal(again.model.pos_embed, source.pos_embed)
    # ViT blocks are the stage groups: unfreeze depth counts blocks from the top
    assert len(backbone.groups) >= 12


def test_a_checkpoint_of_another_architecture_is_refused_naming_the_file(tmp_path):
    _dinobloom_file(tmp_path / "DinoBloom-S.pth")
    with pytest.raises(WeightsError, match="DinoBloom-S.pth"):
        create_backbone("vit_base_patch14_dinov2", image_size=224, pretrained=True,
                        pretrained_path=tmp_path / "DinoBloom-S.pth")


def test_an_image_size_the_patch_does_not_divide_is_refused_before_ray_with_the_nearest_sizes(tmp_path):
    cfg = load(None, [f"model.backbone={VIT}", "data.image_size=100", f"storage.path={tmp_path}"])
    with pytest.raises(ConfigError, match="not a multiple of .*patch size 14; the nearest sizes .* 98 or 112"):
        check_model_space(cfg)
    with pytest.raises(ConfigError, match="98 or 112"):  # the search's first check: before Ray, before data
        leuktune.search(overrides=[f"model.backbone={VIT}", "data.image_size=100", f"storage.path={tmp_path}"])
    assert not (tmp_path / "default").exists()
    with pytest.raises(BackboneError, match="98 or 112"):
        create_backbone(VIT, image_size=100)
    check_model_space(cfg.model_copy(update={"data": cfg.data.model_copy(update={"image_size": 112})}))


def test_a_hub_model_in_timms_form_builds_from_the_local_hugging_face_cache(tmp_path, monkeypatch):
    # the layout huggingface_hub keeps: a snapshot per revision, refs/main naming the current one
    from huggingface_hub import constants
    from safetensors.torch import save_file

    repo = tmp_path / "hub" / "models--lab--vit_small_patch14_224.dinobloom"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    (snapshot / "config.json").write_text(json.dumps({
        "architecture": VIT, "num_classes": 0, "model_args": {"img_size": 224},
        "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406],
                           "std": [0.229, 0.224, 0.225], "num_classes": 0}}))
    torch.manual_seed(1)
    import timm

    source = timm.create_model(VIT, num_classes=0, img_size=224).eval()
    save_file(source.state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    name = "hf-hub:lab/vit_small_patch14_224.dinobloom"
    assert load(None, [f"model.backbone={name}"]).model.backbone == name
    backbone = create_backbone(name, image_size=112, pretrained=True)  # offline: the cache only
    assert torch.equal(backbone.model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert backbone.model.pos_embed.shape == (1, 65, 384)
    with pytest.raises(ValueError, match="unknown backbone"):
        load(None, ["model.backbone=hf-hub:no-owner"])


def _cells(count: int = 48, size: int = 32, seed: int = 0) -> CachedDataset:
    """Two classes a frozen random backbone tells apart (one has a bright top half), none of
    them symmetric under a turn or a mirror."""
    rng = np.random.default_rng(seed)
    labels = np.tile([0, 1], count // 2)
    images = rng.integers(0, 200, (count, size, size, 3), dtype=np.uint8)
    images[labels == 1, : size // 2] = 255
    splits = np.array([SPLITS.index(s) for s in ["train"] * (count * 2 // 3) + ["val"] * (count - count * 2 // 3)],
                      dtype=np.int8)
    return CachedDataset(images=images, labels=labels, splits=splits, class_names=("ALL", "healthy"),
                         fingerprint=f"cells{seed}")


def _cfg(tmp_path, *more):
    return load(None, ["model.backbone=test_resnet", "model.head=linear", "model.unfreeze_depth=0",
                       "data.image_size=32", "train.batch_size=8", "train.epochs=3", "train.lr=0.01",
                       "resources.cpus_per_worker=1", f"data.cache_dir={tmp_path / 'cache'}", *more])


def _trial(cfg, data, store):
    store.mkdir(parents=True, exist_ok=True)
    session = FakeSession(store)
    run_loop(cfg, data, session)
    return session


def _trial_in_a_process(cfg, data, store) -> list[tuple]:
    """A trial in a process of its own, as Tune runs each: (views it computed, train loss, score) per report."""
    session = _trial(cfg, data, store)
    return [(r.facts.feature_views_computed, r.train_loss, r.val["balanced_accuracy"]) for r in session.reports]


def test_two_concurrent_frozen_trials_compute_each_view_once_and_train_alike(tmp_path):
    cfg, data = _cfg(tmp_path), _cells()
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=spawn) as pool:
        runs = [f.result() for f in [pool.submit(_trial_in_a_process, cfg, data, tmp_path / f"t{i}") for i in range(2)]]
    # the eight views computed once between them (whoever started first computed the most)
    assert runs[0][-1][0] + runs[1][-1][0] == 8
    assert len(list((tmp_path / "cache").rglob("view*.npy"))) == 8
    # the same features, so the same trial twice: the same losses and scores
    assert [r[1:] for r in runs[0]] == [r[1:] for r in runs[1]]
    # later trials read them: another head on the eight views, a kNN probe on the first
    for head, views in (("mlp", 8), ("knn", 1)):
        later = _trial(_cfg(tmp_path, f"model.head={head}"), data, tmp_path / head).reports[-1].facts
        assert (later.frozen_features, later.feature_views, later.feature_views_computed) == ("loaded", views, 0)


def test_a_view_whose_trial_died_is_computed_by_the_next(tmp_path):
    cfg, data = _cfg(tmp_path), _cells()
    torch.manual_seed(0)
    network = build_model(cfg.model, 2, 32)
    setup = DeviceSetup.create(torch.device("cpu"), network.backbone.mean, network.backbone.std, cfg.train)
    plan = frozen.plan(cfg, network, data, setup, echo=lambda line: None)
    name = frozen.key(plan, network, data, setup)
    calls = []

    def compute(view):
        calls.append(view)
        if view == 3 and len(calls) == 4:
            raise RuntimeError("the trial died")
        return frozen.compute(plan, network, data.pixels(), setup, 8, view)

    with pytest.raises(RuntimeError):
        frozen.shared(plan, name, compute)
    again = frozen.shared(plan, name, compute)  # views 0-2 were kept; 3 is free again
    assert calls == [0, 1, 2, 3, 3, 4, 5, 6, 7] and again.computed == 5
    assert len(again.views) == 8 and not list((tmp_path / "cache").rglob("*.tmp*"))


def _key(cfg, data, seed=0, pretrained_path=None):
    torch.manual_seed(seed)
    model = cfg.model if pretrained_path is None else cfg.model.model_copy(
        update={"pretrained": True, "pretrained_path": pretrained_path})
    network = build_model(model, data.num_classes, data.pixels().shape[1])
    setup = DeviceSetup.create(torch.device("cpu"), network.backbone.mean, network.backbone.std, cfg.train)
    plan = frozen.plan(cfg, network, data, setup, echo=lambda line: None)
    return frozen.key(plan, network, data, setup)


def test_another_weights_file_image_size_or_data_makes_another_key(tmp_path):
    cfg, data = _cfg(tmp_path), _cells()
    assert _key(cfg, data) == _key(cfg, _cells())  # the same backbone, weights and data: one key
    tested = data.splits.copy()
    tested[-4:] = SPLITS.index("test")
    keys = {_key(cfg, data), _key(cfg, data, seed=1), _key(cfg, _cells(seed=1)), _key(cfg, _cells(size=40)),
            _key(cfg, CachedDataset(**{**data.__dict__, "splits": tested}))}
    assert len(keys) == 5  # random weights of another seed, other data, another size, other rows
    # which of the rows train and which validate does not change their features: the folds of a
    # cross-validated trial (search.cv) share one computation
    swapped = CachedDataset(**{**data.__dict__, "splits": data.splits[::-1].copy()})
    assert _key(cfg, swapped) == _key(cfg, data)
    for seed in (0, 10, 11):
        torch.manual_seed(seed)
        torch.save(build_model(cfg.model, 2, 32).backbone.model.state_dict(), tmp_path / f"w{seed}.pth")
    files = {_key(cfg, data, pretrained_path=tmp_path / f"w{seed}.pth") for seed in (10, 11)}
    assert len(files) == 2 and not files & keys  # two weights files: two keys
    # the key follows the weights themselves: a file of the same weights as a random init is that init
    assert _key(cfg, data, pretrained_path=tmp_path / "w0.pth") == _key(cfg, data)


def test_the_flips_and_quarter_turns_are_eight_distinct_cached_views(tmp_path):
    cfg, data = _cfg(tmp_path), _cells(count=6)
    torch.manual_seed(0)
    network = build_model(cfg.model, 2, 32)
    setup = DeviceSetup.create(torch.device("cpu"), network.backbone.mean, network.backbone.std, cfg.train)
    plan = frozen.plan(cfg, network, data, setup, echo=lambda line: None)
    cached = np.stack([frozen.compute(plan, network, data.pixels(), setup, 4, view) for view in range(8)], axis=1)
    assert cached.shape == (6, 8, network.backbone.num_features) and cached.dtype == np.float16
    flat = cached[0].reshape(8, -1)
    assert len({row.tobytes() for row in flat}) == 8
    # view 0 is the image as it is; each view is the backbone on that turn and mirror of the pixels
    image = setup.model_input(setup.to_unit(torch.from_numpy(data.pixels()[:1])))
    with torch.no_grad():
        network.eval()
        for view in (0, 3, 6):
            expected = network.backbone.pool(network.backbone(frozen.oriented(image, view)))[0].numpy()
            assert np.allclose(cached[0, view], expected, atol=2e-2, rtol=1e-2)
    # the eight are the symmetries of the square: each a distinct rearrangement of the pixels
    pixels = torch.arange(16.0).view(1, 1, 4, 4)
    assert len({frozen.oriented(pixels, v).numpy().tobytes() for v in range(8)}) == 8


def test_past_the_bound_fewer_views_then_none_and_a_probe_is_refused(tmp_path):
    data = _cells()
    session = _trial(_cfg(tmp_path, "model.feature_cache_gb=3.0e-5"), data, tmp_path / "two")
    assert session.reports[-1].facts.feature_views == 2  # 48 images x 4 views x 96 x 2 bytes > 30 kB
    session = _trial(_cfg(tmp_path, "model.feature_cache_gb=1.0e-6"), data, tmp_path / "none")
    assert session.reports[-1].facts.frozen_features is None  # the backbone ran every epoch
    with pytest.raises(frozen.FeatureCacheError, match="feature_cache_gb"):
        _trial(_cfg(tmp_path, "model.feature_cache_gb=1.0e-6", "model.head=logistic"), data, tmp_path / "probe")


def test_an_unfrozen_trial_is_unchanged(tmp_path):
    data = _cells()
    runs = [_trial(_cfg(tmp_path, "model.unfreeze_depth=all", f"model.feature_cache={mode}"), data, tmp_path / mode)
            for mode in ("auto", "off")]
    assert all(r.facts.frozen_features is None for s in runs for r in s.reports)
    assert [(r.train_loss, r.val["loss"]) for r in runs[0].reports] == \
        [(r.train_loss, r.val["loss"]) for r in runs[1].reports]
    # a frozen trial with the cache off runs its backbone each epoch, as before
    off = _trial(_cfg(tmp_path, "model.feature_cache=off"), data, tmp_path / "frozen-off")
    assert off.reports[-1].facts.frozen_features is None and len(off.reports) == 3


@pytest.mark.parametrize("head, option", [("logistic", "model.probe_l2=0.01"), ("knn", "model.knn_k=5")])
def test_a_probe_is_fitted_once_then_predicts_and_exports_as_pytorch_does(tmp_path, head, option):
    data = _cells()
    session = _trial(_cfg(tmp_path, f"model.head={head}", option, "model.unfreeze_depth=all"), data, tmp_path / head)
    (report,) = session.reports  # fitted once: one report, as the trial's last epoch
    assert report.epoch == 3 and report.finished and report.facts.unfreeze_depth_effective == 0
    assert report.val["balanced_accuracy"] >= 0.75
    model = leuktune.load_model(session.checkpoints[3])
    images = []
    for i in range(6):
        images.append(tmp_path / f"{i}.png")
        Image.fromarray(data.pixels()[i]).save(images[-1])
    predicted = model.predict([str(p) for p in images])
    # the loaded probe is the fitted one: its predictions follow the labels it was fitted to
    assert (predicted["class"] == pd.Series(data.class_names)[data.labels[:6]].to_numpy()).mean() >= 0.8
    onnx_file = export(model, tmp_path / f"{head}-onnx", images=[str(p) for p in images])
    import onnxruntime

    x = model.model_input(data.pixels()[:6]).cpu().numpy()
    session_ = onnxruntime.InferenceSession(str(onnx_file))
    from_onnx = session_.run(None, {session_.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        from_torch = torch.softmax(model.module(torch.from_numpy(x)) / model.temperature, 1).numpy()
    assert np.abs(from_onnx - from_torch).max() < 1e-4
    assert np.allclose(predicted["probability"], from_torch.max(1), atol=1e-4)


@pytest.mark.slow
def test_a_search_of_heads_over_one_frozen_backbone_computes_each_features_once(tmp_path, ray_runtime):
    # Through Ray: trials in their own processes, two at a time; the three heads that learn from
    # views share one key, the kNN probe (one view) another.
    overrides = tiny_overrides(tmp_path / "runs") + [
        "name=frozen", "model.backbone=test_resnet", "model.unfreeze_depth=0", "model.pretrained=false",
        "model.head={choice: [linear, mlp, logistic, knn]}", "search.searcher.optuna.sampler=grid",
        "search.num_samples=4", "search.max_concurrent=2", "search.scheduler.asha=null", "train.lr=0.01",
        "evaluate.top_k=4"]
    board = leuktune.search(overrides=overrides, echo=lambda message: None).set_index("head")
    assert sorted(board.index) == ["knn", "linear", "logistic", "mlp"] and (board["status"] == "completed").all()
    # eight views computed once between the trials; the kNN probe's one view is the first of them
    assert board["feature_views_computed"].sum() == 8
    assert board.loc["knn", "feature_views"] == 1 and (board.drop("knn")["feature_views"] == 8).all()
    assert (board["unfreeze_depth_effective"] == 0).all()
    # the probes are ranked, scored on the test split and calibrated like any trial
    assert board[["test_balanced_accuracy", "temperature"]].notna().all().all()
    assert (board.loc[["logistic", "knn"], "epochs_run"] == 2).all()  # fitted once, reported as the last epoch
    model = leuktune.load_model(board.loc["knn", "checkpoint_uri"])
    assert model.module.head.bank.shape[0] == (pd.read_parquet(tmp_path / "runs" / "frozen" / "split.parquet")
                                               ["split"] == "train").sum()


@pytest.mark.parametrize("head", ["linear", "knn"])
def test_the_folds_of_a_cross_validated_frozen_trial_share_one_computation(tmp_path, head):
    from leuktune.training.folds import run_folds

    cfg = _cfg(tmp_path, f"model.head={head}")
    cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"cv": 3})})
    session = FakeSession(tmp_path / "trial")
    (tmp_path / "trial").mkdir()
    run_folds(cfg, _cells(), session)
    last = session.reports[-1]
    assert last.finished and last.val_folds == 3 and last.epoch == 3
    # the folds deal the same training and validation rows: the first fold computed, the others read
    views = 1 if head == "knn" else 8
    assert len(list((tmp_path / "cache").rglob("view*.npy"))) == views
    model = leuktune.load_model(session.checkpoints[3])
    assert len(model.members) == 3 and all(m.module.head.fitted == (head == "knn") for m in model.members)
