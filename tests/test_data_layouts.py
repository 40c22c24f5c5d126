"""Each dataset layout built on disk with real image files, including the awkward ones."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leuktune.config import load
from leuktune.data import synthetic
from leuktune.cli.data import main as data_main
from leuktune.data.decode import load_rgb
from leuktune.data.prepare import prepare
from leuktune.data.sources import DataError, allidb, cnmc, imagefolder, table

LABELS = ("ALL", "AML", "CLL", "CML", "MM", "healthy")


def cell(label="ALL", i=0, size=40) -> Image.Image:
    return synthetic.render(label, 0, i, size)


def write_folder(root, classes=("ALL", "healthy"), n=6, size=40):
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cell(c, i, size).save(root / c / f"{c}_{i}.png")
    return root


def run_cfg(tmp_path, *extra):
    return load(None, [f"storage.path={tmp_path / 'runs'}", "name=t", "data.image_size=24", *extra])


def test_odd_image_modes_decode_to_rgb(tmp_path):
    base = cell("MM", 1)
    base.convert("RGBA").save(tmp_path / "rgba.png")
    base.convert("P", palette=Image.ADAPTIVE).save(tmp_path / "palette.png")
    base.convert("L").save(tmp_path / "grey.png")
    base.convert("CMYK").save(tmp_path / "cmyk.jpg")
    base.save(tmp_path / "cell.bmp")
    grey16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 64)  # 16-bit range, max ~16k
    Image.fromarray(grey16).save(tmp_path / "deep.tif")
    for name in ("rgba.png", "palette.png", "grey.png", "cmyk.jpg", "cell.bmp", "deep.tif"):
        img = load_rgb(str(tmp_path / name))
        assert img.mode == "RGB" and img.size == (40, 40), name
    deep = np.asarray(load_rgb(str(tmp_path / "deep.tif")))
    assert deep.max() == 255 and deep.mean() < 250  # scaled, not clipped to white


def make_bad_files(folder):
    good = folder / "ALL_0.png"
    data = (folder.parent.parent / "src.jpg")
    cell().save(data, quality=95)
    raw = data.read_bytes()
    (folder / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image")
    return good


@pytest.mark.slow
def test_bad_files_stop_the_run_listing_each_or_are_skipped_into_rejected(tmp_path, ray_runtime):
    root = write_folder(tmp_path / "set")
    make_bad_files(root / "ALL")
    with pytest.raises(DataError) as err:
        prepare(run_cfg(tmp_path, "data.source=imagefolder", f"data.root={root}"), progress=lambda m: None)
    message = str(err.value)
    for name, why in (("truncated.jpg", "truncated"), ("empty.png", "zero-byte"), ("notes.png", "not an image")):
        assert name in message and why in message
    assert "on_bad_image: skip" in message

    data, report = prepare(run_cfg(tmp_path, "data.source=imagefolder", f"data.root={root}",
                                   "data.on_bad_image=skip"), progress=lambda m: None)
    rejected = pd.read_parquet(tmp_path / "runs" / "t" / "rejected.parquet")
    assert sorted(p.split("/")[-1] for p in rejected["path"]) == ["empty.png", "notes.png", "truncated.jpg"]
    assert len(data.labels) == 12 and len(report.rejected) == 3
    assert "3 bad file(s) left out" in "\n".join(report.lines())


def test_missing_root_and_empty_class_folder_name_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "absent")):
        imagefolder(tmp_path / "absent")
    root = write_folder(tmp_path / "set")
    (root / "AML").mkdir()
    with pytest.raises(DataError, match=r"AML: class folder holds no images"):
        imagefolder(root)


@pytest.mark.slow
def test_imagefolder_with_predefined_train_test_carves_val_from_train(tmp_path, ray_runtime):
    root = tmp_path / "blood-cells"
    write_folder(root / "TRAIN", n=10)
    write_folder(root / "TEST", n=3)
    m = imagefolder(root)
    assert set(m["split"]) == {"train", "test"}
    data, report = prepare(run_cfg(tmp_path, "data.source=imagefolder", f"data.root={root}"), progress=lambda m: None)
    split = pd.read_parquet(tmp_path / "runs" / "t" / "split.parquet")
    assert (split[split.path.str.contains("/TEST/")]["split"] == "test").all()
    assert set(split[split.path.str.contains("/TRAIN/")]["split"]) == {"train", "val"}
    assert len(data.indices("val")) > 0


@pytest.mark.slow
def test_cnmc_layout_groups_by_patient_and_splits_patients_apart(tmp_path, ray_runtime):
    root = tmp_path / "C-NMC_Leukemia"
    for fold in range(3):
        for label, patients in (("all", ["11", "12", "13", "14"]), ("hem", ["H1", "H2", "H3", "H4"])):
            folder = root / "training_data" / f"fold_{fold}" / label
            folder.mkdir(parents=True, exist_ok=True)
            for p in patients:
                cell("ALL" if label == "all" else "healthy", hash((fold, p)) % 1000).save(
                    folder / f"UID_{p}_{fold + 1}_1_{label}.bmp")
    prelim = root / "validation_data"
    (prelim / "C-NMC_test_prelim_phase_data").mkdir(parents=True)
    names = []
    for i, (pid, lab) in enumerate((("UID_57_1_1_all.bmp", 1), ("UID_H50_2_1_hem.bmp", 0)), start=1):
        cell("MM", 500 + i).save(prelim / "C-NMC_test_prelim_phase_data" / f"{i}.bmp")
        names.append({"Patient_ID": pid, "new_names": f"{i}.bmp", "labels": lab})
    pd.DataFrame(names).to_csv(prelim / "C-NMC_test_prelim_phase_data_labels.csv", index=False)

    m = cnmc(root)
    assert len(m) == 26 and set(m["label"]) == {"all", "hem"}
    assert m.groupby("group").size()["patient-H1"] == 3
    assert "patient-57" in set(m["group"])
    data, _ = prepare(run_cfg(tmp_path, "data.source=cnmc", f"data.root={root}"), progress=lambda m: None)
    split = pd.read_parquet(tmp_path / "runs" / "t" / "split.parquet")
    assert split.groupby("group")["split"].nunique().max() == 1  # no patient in two splits
    assert data.class_names == ("all", "hem")


def test_allidb_and_csv_layouts(tmp_path):
    root = tmp_path / "ALL_IDB2" / "img"
    root.mkdir(parents=True)
    cell("ALL", 1).save(root / "Im001_1.tif")
    cell("healthy", 2).save(root / "Im002_0.jpg")
    (root / "readme.txt").write_text("not listed")
    m = allidb(tmp_path / "ALL_IDB2")
    assert m.sort_values("path")["label"].tolist() == ["ALL", "healthy"]

    (tmp_path / "imgs").mkdir()
    for i in range(4):
        cell(LABELS[i % 2], i).save(tmp_path / "imgs" / f"{i}.png")
    pd.DataFrame({"path": [f"imgs/{i}.png" for i in range(4)], "label": [LABELS[i % 2] for i in range(4)],
                  "group": ["p1", "p1", "p2", "p2"]}).to_csv(tmp_path / "m.csv", index=False)
    t = table(tmp_path / "m.csv")
    assert t["path"].str.startswith(str(tmp_path)).all() and t["group"].tolist() == ["p1", "p1", "p2", "p2"]
    pd.DataFrame({"path": ["imgs/0.png", "imgs/missing.png"], "label": ["a", "b"]}).to_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="missing.png"):
        table(tmp_path / "bad.csv")


@pytest.mark.slow
def test_exact_duplicates_share_a_split(tmp_path, ray_runtime):
    root = write_folder(tmp_path / "set", classes=("ALL", "CLL", "healthy"), n=12)
    # the same pixels under another name and format: must not straddle splits
    Image.open(root / "ALL" / "ALL_0.png").save(root / "ALL" / "copy_of_0.bmp")
    _, report = prepare(run_cfg(tmp_path, "data.source=imagefolder", f"data.root={root}"), progress=lambda m: None)
    split = pd.read_parquet(tmp_path / "runs" / "t" / "split.parquet").set_index("path")
    a, b = str(root / "ALL" / "ALL_0.png"), str(root / "ALL" / "copy_of_0.bmp")
    assert split.loc[a, "group"] == split.loc[b, "group"] and split.loc[a, "split"] == split.loc[b, "split"]
    assert report.duplicate_images == 2
    counts = report.counts
    for label in ("CLL", "healthy"):
        n = counts.loc[label].sum()
        for s, frac in (("train", .6), ("val", .2), ("test", .2)):
            assert abs(counts.loc[label, s] - frac * n) <= 1


@pytest.mark.slow
def test_near_duplicates_across_splits_are_reported_with_their_paths(tmp_path, ray_runtime):
    # The dataset's own split puts a cell in TRAIN and a slightly brighter copy of it in TEST:
    # the pair straddles two splits whatever the seed, and must be reported.
    root = tmp_path / "cells"
    write_folder(root / "TRAIN", classes=("ALL", "CLL"), n=8)
    write_folder(root / "TEST", classes=("ALL", "CLL"), n=3)
    original = root / "TRAIN" / "CLL" / "CLL_5.png"
    bright = np.clip(np.asarray(Image.open(original), dtype=int) + 6, 0, 255).astype(np.uint8)
    Image.fromarray(bright).save(root / "TEST" / "CLL" / "bright_copy.png")
    cfg = run_cfg(tmp_path, "data.source=imagefolder", f"data.root={root}", "data.near_duplicate_distance=10")
    _, report = prepare(cfg, progress=lambda m: None)
    pairs = {frozenset((r.path_a, r.path_b)): {r.split_a, r.split_b} for r in report.near_duplicates.itertuples()}
    pair = frozenset((str(original), str(root / "TEST" / "CLL" / "bright_copy.png")))
    assert pair in pairs and pairs[pair] <= {"train", "val", "test"} and "test" in pairs[pair]
    assert all(r.split_a != r.split_b for r in report.near_duplicates.itertuples())
    saved = pd.read_parquet(tmp_path / "runs" / "t" / "near_duplicates.parquet")
    assert len(saved) == len(report.near_duplicates)
    assert "near-duplicate image pair(s) across splits" in str(report)


@pytest.mark.slow
def test_second_run_decodes_nothing_and_reuses_the_split(tmp_path, ray_runtime):
    root = write_folder(tmp_path / "set", n=8)
    cfg = run_cfg(tmp_path, "data.source=imagefolder", f"data.root={root}")
    messages = []
    first, _ = prepare(cfg, progress=messages.append)
    assert any("decoding images" in m for m in messages)
    split_before = pd.read_parquet(tmp_path / "runs" / "t" / "split.parquet")
    messages.clear()
    second, _ = prepare(cfg, progress=messages.append)
    assert not any("decoding images" in m for m in messages) and any("reused" in m for m in messages)
    assert first.fingerprint == second.fingerprint
    assert pd.read_parquet(tmp_path / "runs" / "t" / "split.parquet").equals(split_before)


@pytest.mark.slow
def test_data_cli_reports_counts_and_fails_on_bad_files(tmp_path, capsys, ray_runtime):
    root = write_folder(tmp_path / "set", n=6)
    args = ["--set", f"storage.path={tmp_path / 'runs'}", "--set", "data.source=imagefolder",
            "--set", f"data.root={root}", "--set", "data.image_size=24"]
    assert data_main(args) == 0
    out = capsys.readouterr().out
    assert "12 images, 2 classes" in out and "healthy" in out
    (root / "ALL" / "empty.png").write_bytes(b"")
    assert data_main(args) == 2
    assert "empty.png: zero-byte file" in capsys.readouterr().err


def test_relative_roots_and_symlinked_images(tmp_path, monkeypatch):
    # data.root relative to the working directory, and images that are symlinks into a store
    # elsewhere (common on clusters): both read, and groups are named by the path under root.
    store = tmp_path / "store"
    store.mkdir()
    cell("ALL", 1).save(store / "a.png")
    for label in LABELS:
        (tmp_path / "cells" / label).mkdir(parents=True)
        cell(label, 2).save(tmp_path / "cells" / label / "own.png")
    (tmp_path / "cells" / "ALL" / "linked.png").symlink_to(store / "a.png")
    (tmp_path / "idb").mkdir()
    (tmp_path / "idb" / "Im001_1.tif").symlink_to(store / "a.png")
    monkeypatch.chdir(tmp_path)
    m = imagefolder("cells")
    assert sorted(m["group"]) == sorted([f"cells/{LABELS[0]}/linked", *(f"cells/{c}/own" for c in LABELS)])
    assert m["path"].map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()
    assert allidb("idb")["group"].tolist() == ["Im001_1"]


def shifted(image: Image.Image, dx: int) -> Image.Image:
    """The same field a few pixels over, as a second photograph of it would be."""
    return image.transform(image.size, Image.AFFINE, (1, 0, dx, 0, 1, 0), fillcolor=image.getpixel((0, 0)))


@pytest.mark.slow
def test_a_field_saved_twice_joins_one_group_and_one_split(tmp_path, ray_runtime):
    root = write_folder(tmp_path / "set", classes=("ALL", "CLL", "healthy"), n=10, size=64)
    original = Image.open(root / "CLL" / "CLL_3.png")
    shifted(original, 2).save(root / "CLL" / "CLL_3_again.jpg", quality=90)  # shifted and re-encoded
    cfg = run_cfg(tmp_path, "data.source=imagefolder", f"data.root={root}", "data.near_duplicate_distance=10")
    for seed in range(4):  # whatever the split's seed
        _, report = prepare(cfg.model_copy(update={"data": cfg.data.model_copy(update={
            "split": cfg.data.split.model_copy(update={"seed": seed})})}), progress=lambda m: None)
        split = pd.read_parquet(tmp_path / "runs" / "t" / "split.parquet").set_index("path")
        a, b = str(root / "CLL" / "CLL_3.png"), str(root / "CLL" / "CLL_3_again.jpg")
        assert split.loc[a, "group"] == split.loc[b, "group"] and split.loc[a, "split"] == split.loc[b, "split"]
        assert report.joined_images >= 2 and "joined the group of a near-duplicate" in str(report)
        (tmp_path / "runs" / "t" / "split.parquet").unlink()
    # report keeps today's behaviour: the pair is only listed when the split puts it apart
    _, listed = prepare(run_cfg(tmp_path, "data.source=imagefolder", f"data.root={root}",
                                "data.near_duplicate_distance=10", "data.near_duplicates=report"),
                        progress=lambda m: None)
    assert listed.joined_images == 0


@pytest.mark.slow
def test_look_alike_cells_never_chain_into_a_group_that_swallows_a_class(tmp_path, ray_runtime):
    root = write_folder(tmp_path / "set", classes=("ALL", "healthy"), n=6, size=64)
    base = Image.open(root / "ALL" / "ALL_0.png")
    for i in range(1, 12):  # twelve near-identical crops of one cell
        shifted(base, i % 3).save(root / "ALL" / f"look_alike_{i}.png")
    _, report = prepare(run_cfg(tmp_path, "data.source=imagefolder", f"data.root={root}",
                                "data.near_duplicate_distance=10", "data.near_duplicate_max_group=4"),
                        progress=lambda m: None)
    split = pd.read_parquet(tmp_path / "runs" / "t" / "split.parquet")
    assert split.groupby("group").size().max() <= 4
    assert report.refused_groups and max(n for _, n in report.refused_groups) > 4
    assert "would have grown past" in str(report)
    assert set(split[split["label"] == "ALL"]["split"]) == {"train", "val", "test"}  # the class still splits
