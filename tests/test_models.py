import itertools
import os
import logging

import numpy as np
import optuna
import pytest
import torch
from safetensors.torch import save_file

from leuktune.config import ConfigError, ModelConfig, load
from leuktune.models.backbones import WeightsError, create_backbone
from leuktune.models.classifier import build_model, set_unfreeze_depth
from leuktune.models.space_check import check_model_space
from leuktune.training.optim import param_groups
from leuktune.tuning.optuna_space import DefineByRun

TINY = ["test_resnet", "test_efficientnet", "test_convnext", "test_vit"]
HEADS = ["linear", "mlp", "attention"]
ACTIVATIONS = ["default", "relu", "leaky_relu", "gelu", "silu", "elu"]


def model_cfg(**kw) -> ModelConfig:
    base = {"backbone": "test_resnet", "head": "linear", "mlp_hidden": 32, "attention_heads": 4,
            "attention_dim": 32, "activation": "default", "dropout": 0.1, "unfreeze_depth": "all"}
    return ModelConfig.model_validate({**base, **kw})


@pytest.mark.parametrize("backbone", TINY)
def test_every_head_and_activation_trains_on_tiny_backbones(backbone):
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    for head, act in itertools.product(HEADS, ACTIVATIONS):
        model = build_model(model_cfg(backbone=backbone, head=head, activation=act), 5, 64).train()
        logits = model(x)
        assert logits.shape == (2, 5), (head, act)
        torch.nn.functional.cross_entropy(logits, y).backward()
        assert model.head.fc.weight.grad is not None and model.head.fc.weight.grad.abs().sum() > 0
        if act != "default" and model.backbone.activation == act:
            kinds = {type(m).__name__.lower() for m in model.backbone.modules()}
            assert any(act.replace("_", "") in k for k in kinds), (backbone, act, kinds)


def test_torchvision_alexnet_and_googlenet_build():
    for name in ("alexnet", "googlenet"):
        model = build_model(model_cfg(backbone=name, head="attention"), 3, 96)
        assert model(torch.randn(2, 3, 96, 96)).shape == (2, 3)


def test_unfreeze_depth_grows_trainable_parameters():
    model = build_model(model_cfg(backbone="test_efficientnet", head="mlp"), 4, 64)
    head_params = sum(p.numel() for p in model.head.parameters())
    counts = []
    for depth in range(len(model.backbone.groups) + 2):
        effective = set_unfreeze_depth(model, depth)
        assert effective == min(depth, len(model.backbone.groups))
        counts.append(sum(p.numel() for p in model.parameters() if p.requires_grad))
    assert counts[0] == head_params  # depth 0: only the head learns
    assert all(b >= a for a, b in zip(counts, counts[1:])) and counts[-1] > counts[1] > counts[0]
    set_unfreeze_depth(model, "all")
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_batchnorm_keeps_its_statistics():
    torch.manual_seed(0)
    model = build_model(model_cfg(backbone="test_resnet", unfreeze_depth=0), 3, 64)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = torch.optim.SGD(param_groups(model, 0.1, 1.0, 0.0), lr=0.1)
    model.train()
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64) * 3 + 1), torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a frozen backbone changed"
    # the top stage unfrozen: its BatchNorm now learns and tracks statistics
    set_unfreeze_depth(model, 1)
    model.train()
    model(torch.randn(4, 3, 64, 64) * 3 + 1)
    changed = {k.removeprefix("model.").rsplit(".", 1)[0]
               for k in before if not torch.equal(before[k], model.backbone.state_dict()[k])}
    top_stage = {name.rsplit(".", 1)[0] for name in model.backbone.groups[-1]}
    assert changed and changed <= top_stage, changed - top_stage


def test_param_groups_lower_backbone_lr_and_skip_decay_on_norms_and_biases():
    model = build_model(model_cfg(head="mlp"), 3, 64)
    groups = {g["name"]: g for g in param_groups(model, 1e-3, 0.1, 0.05)}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4) and groups["head"]["lr"] == pytest.approx(1e-3)
    assert groups["backbone_no_decay"]["weight_decay"] == 0 and groups["head"]["weight_decay"] == 0.05
    assert all(p.ndim <= 1 for p in groups["backbone_no_decay"]["params"])
    total = sum(p.numel() for g in groups.values() for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("form", ["file.safetensors", "file.pth", "folder"])
def test_weights_saved_to_a_file_load_back_through_pretrained_path(tmp_path, form):
    torch.manual_seed(1)
    source = create_backbone("test_resnet")
    state = source.model.state_dict()
    if form == "file.safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif form == "file.pth":
        path = tmp_path / "w.pth"
        torch.save(state, path)
    else:
        path = tmp_path / "weights"
        path.mkdir()
        torch.save(state, path / "test_resnet.pth")
    torch.manual_seed(2)  # a different random init, which the weights must overwrite
    loaded = create_backbone("test_resnet", pretrained=True, pretrained_path=path)
    x = torch.randn(2, 3, 64, 64)
    source.eval(), loaded.eval()
    assert torch.allclose(source.pool(source(x)), loaded.pool(loaded(x)))


def test_missing_weights_name_the_backbone_and_where_it_looked(tmp_path, monkeypatch, caplog):
    with pytest.raises(WeightsError, match=r"'test_resnet'.*nowhere"):
        create_backbone("test_resnet", pretrained=True, pretrained_path=tmp_path / "nowhere")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with caplog.at_level(logging.DEBUG), \
            pytest.raises(WeightsError, match=r"'test_resnet'.*Hugging Face cache.*allow_download"):
        create_backbone("test_resnet", pretrained=True)
    # without allow_download the Hub is never contacted: no connection, no request retried
    contacted = [r.getMessage() for r in caplog.records
                 if r.name.startswith(("httpcore", "httpx")) or "requesting" in r.getMessage()]
    assert not contacted, contacted[:3]


def test_impossible_combinations_are_rejected_before_training():
    cfg = load(None, ["model.backbone=inception_v3", "data.image_size=32"])
    with pytest.raises(ConfigError, match=r"inception_v3.*32px"):
        check_model_space(cfg)
    ok = load(None, ["model.backbone={choice: [test_vit, test_resnet, densenet121, vgg16, alexnet]}",
                     "model.head={choice: [linear, attention]}", "data.image_size=64"])
    shapes = {s.name: s for s in check_model_space(ok)}
    assert shapes["densenet121"].pooled == 1024 and shapes["densenet121"].groups >= 4
    assert shapes["vgg16"].pooled == 4096 and shapes["vgg16"].features[0] == 512


def test_conditional_parameters_are_drawn_only_for_their_head():
    cfg = load(None, ["model.head={choice: [linear, mlp, attention]}", "model.mlp_hidden={choice: [64, 128]}",
                      "model.attention_heads={choice: [4, 8]}", "model.unfreeze_depth={int: [0, 3]}"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = DefineByRun(cfg)
    seen = set()
    for _ in range(30):
        trial = study.ask()
        space(trial)
        params = trial.params
        seen.add(params["head"])
        assert ("mlp_hidden" in params) == (params["head"] == "mlp")
        assert ("attention_heads" in params) == (params["head"] == "attention")
        resolved = cfg.with_params(params)
        assert resolved.searched() == {}
        study.tell(trial, 0.0)
    assert seen == {"linear", "mlp", "attention"}


def test_a_checkpoint_that_carries_pickled_objects_is_refused(tmp_path):
    from leuktune.training import checkpoint

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    folder = tmp_path / "shared"
    folder.mkdir()
    torch.save({"model": {}, "epoch": 1, "class_names": ("a", "b"), "normalization": {}, "experiment": {},
                "extra": Payload()}, folder / "checkpoint.pt")
    with pytest.raises(checkpoint.CheckpointError, match=r"refused: it holds pickled Python objects \(posix.system\)"):
        checkpoint.load(folder)
    assert not (tmp_path / "ran").exists()  # nothing was executed
    # leuktune's own checkpoints hold only weights and plain values, numpy ones converted
    checkpoint.write_state(folder, {"model": torch.nn.Linear(2, 2).state_dict(), "epoch": np.int64(3),
                                    "class_names": ("a", "b"), "normalization": {"mean": np.array([0.5, 0.5, 0.5])},
                                    "experiment": {}})
    # what is known once the epoch is judged goes beside it, and reads back as one state
    checkpoint.write_meta(folder, {"epoch": 3, "kept": {"score": 0.5, "epoch": 2}, "metrics": {"loss": np.float32(0.25)}})
    state = checkpoint.load(folder)
    assert state["epoch"] == 3 and state["normalization"]["mean"] == [0.5, 0.5, 0.5]
    assert state["kept"] == {"score": 0.5, "epoch": 2} and state["metrics"] == {"loss": 0.25}
