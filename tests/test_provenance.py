"""Which weights a trial loaded: named on the leaderboard and in the trial's first line (a file by
name and digest, hashed once), and a DINOv2 backbone's missing weights explained with both of the
weights that fit it (DINOv2's general ones and DinoBloom's hematology ones)."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest
import torch

from leuktune.config import ConfigError, load
from leuktune.models import provenance, weights
from leuktune.models.backbones import create_backbone
from leuktune.results import EpochReport, TrialFacts
from leuktune.runfolder import RunFolder
from leuktune.tuning.callback import LeaderboardCallback


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """The digests' cache in the test's folder, and none remembered from another test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    provenance._remembered.clear()


def test_a_backbone_names_the_weights_it_loaded_by_file_name_and_digest(tmp_path):
    path = tmp_path / "DinoBloom-like.pth"
    torch.save(create_backbone("test_resnet").model.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = create_backbone("test_resnet", pretrained=True, pretrained_path=path)
    assert loaded.weights == f"DinoBloom-like.pth sha256:{digest[:12]}"
    assert create_backbone("test_resnet").weights == "none (random init)"
    assert provenance.of_hub({"hf_hub_id": "timm/vit_small_patch14_dinov2.lvd142m"}, "vit_small_patch14_dinov2") \
        == "hf-hub:timm/vit_small_patch14_dinov2.lvd142m"


def test_a_weights_file_is_hashed_once_and_its_digest_read_back_after(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"weights")
    assert provenance.of_file(path) == "w.pth sha256:9a129038d9a0"
    cache = tmp_path / "cache" / "leuktune" / "weights-sha256.json"
    entries = json.loads(cache.read_text())
    assert list(entries.values()) == [hashlib.sha256(b"weights").hexdigest()]
    # another process (nothing remembered) reads the cache instead of the file: what the cache says, it says
    provenance._remembered.clear()
    cache.write_text(json.dumps({key: "0" * 64 for key in entries}))
    assert provenance.of_file(path) == "w.pth sha256:000000000000"
    # a file changed in place is hashed again
    path.write_bytes(b"other weights")
    assert provenance.of_file(path) == f"w.pth sha256:{hashlib.sha256(b'other weights').hexdigest()[:12]}"


def test_the_trials_first_line_and_its_record_say_which_weights_it_loaded(tmp_path):
    cfg = load(None, ["train.epochs=2"])
    lines: list[str] = []
    callback = LeaderboardCallback(cfg, RunFolder.at(tmp_path / "run"), "f" * 16, echo=lines.append)
    facts = TrialFacts(params=1, trainable_params=1, unfreeze_depth_effective=0, stage_groups=1,
                       backbone_activation="default", workers=1, device="cpu", precision="fp32",
                       backbone_weights="vit_small_patch14_dinov2.pth sha256:c2f7990b003e")
    trial = SimpleNamespace(trial_id="t1", path=str(tmp_path))
    for epoch in (1, 2):
        report = EpochReport(epoch=epoch, train_loss=0.5, train_images_per_s=10.0,
                             val={"balanced_accuracy": 0.9}, facts=facts)
        callback.on_trial_result(epoch, [], trial, report.to_result())
    assert lines[0].endswith("weights: vit_small_patch14_dinov2.pth sha256:c2f7990b003e")
    assert "weights" not in lines[1]  # said once, at the trial's start
    assert EpochReport.from_result(report.to_result()).facts.backbone_weights == facts.backbone_weights


def test_a_dinov2_backbones_missing_weights_name_dinov2s_and_dinoblooms_files(tmp_path):
    cfg = load(None, ["model.backbone={choice: [vit_small_patch14_dinov2, vit_large_patch14_dinov2]}",
                      "model.pretrained=true", f"model.pretrained_path={tmp_path}", "data.image_size=224"])
    with pytest.raises(ConfigError) as raised:
        weights.check(cfg)
    message = str(raised.value)
    for expected in ("https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m/resolve/main/model.safetensors",
                     "https://zenodo.org/records/10908163/files/DinoBloom-S.pth -> save as vit_small_patch14_dinov2.pth",
                     "https://huggingface.co/1aurent/vit_large_patch14_224.dinobloom/resolve/main/model.safetensors",
                     "DinoBloom-L.pth -> save as vit_large_patch14_dinov2.pth"):
        assert expected in message, expected
    # the Hugging Face cache holds DINOv2's general weights only: no hint that passes them off as DinoBloom's
    assert "timm.create_model" not in message
    # the name it says to save under is the one leuktune looks for
    torch.save({"teacher": {}}, tmp_path / "vit_small_patch14_dinov2.pth")
    assert weights.locate("vit_small_patch14_dinov2", tmp_path) == str(tmp_path / "vit_small_patch14_dinov2.pth")
