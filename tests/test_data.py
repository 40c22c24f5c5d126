import numpy as np
import pandas as pd
import pytest
import ray
from PIL import Image

from leuktune.config import DataConfig, SplitConfig
from leuktune.data import cache, synthetic
from leuktune.data.sources import DataError, imagefolder
from leuktune.data.split import assign_splits
from leuktune.data.stain import StainNormalizer, from_config


def test_synthetic_set_is_real_pngs_in_class_folders_and_deterministic(tmp_path):
    a = synthetic.generate(tmp_path / "a", classes=("ALL", "MM"), images_per_class=3, image_size=40, seed=7)
    b = synthetic.generate(tmp_path / "b", classes=("ALL", "MM"), images_per_class=3, image_size=40, seed=7)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert [str(f) for f in files] == [f"{c}/{c}_{i:04d}.png" for c in ("ALL", "MM") for i in range(3)]
    for f in files:
        with Image.open(a / f) as img:
            assert img.format == "PNG" and img.size == (40, 40) and img.mode == "RGB"
        assert (a / f).read_bytes() == (b / f).read_bytes()
    other_seed = synthetic.render("ALL", 8, 0, 40)
    assert not np.array_equal(np.asarray(other_seed), np.asarray(Image.open(a / "ALL/ALL_0000.png")))


def test_synthetic_classes_differ_in_what_a_smear_shows():
    # The white cell stains blue-dominant, red cells and plasma red-dominant, so the
    # blue-dominant area is the white cell's size: a large myeloblast vs a small CLL lymphocyte.
    def cell_area(label):
        imgs = [np.asarray(synthetic.render(label, 0, i, 64), dtype=float) for i in range(12)]
        return np.mean([(im[..., 2] > im[..., 0] + 10).mean() for im in imgs])
    assert cell_area("AML") > 2 * cell_area("CLL")


def test_a_harder_synthetic_set_has_closer_classes_own_stains_and_label_noise(tmp_path):
    def cells(label, difficulty):
        return [np.asarray(synthetic.render(label, 0, i, 64, difficulty), dtype=float) for i in range(12)]

    def cell_area(images):
        return np.mean([(im[..., 2] > im[..., 0] + 10).mean() for im in images])

    easy, hard = {c: cells(c, 0.0) for c in ("AML", "CLL")}, {c: cells(c, 1.0) for c in ("AML", "CLL")}
    # finer differences: the large myeloblast and the small lymphocyte closer in size
    assert cell_area(hard["AML"]) / cell_area(hard["CLL"]) < 0.8 * cell_area(easy["AML"]) / cell_area(easy["CLL"])
    # each image its own stain: mean colours spread more between images
    spread = lambda images: np.std([im.mean(axis=(0, 1)) for im in images], axis=0).mean()  # noqa: E731
    assert spread(hard["CLL"]) > 2 * spread(easy["CLL"])
    # label noise: a tenth at difficulty 1, none at 0, the same draws every time
    shows = [synthetic.drawn_as("ALL", 0, i, 1.0) for i in range(2000)]
    assert 0.08 < np.mean([s != "ALL" for s in shows]) < 0.12
    assert {synthetic.drawn_as("ALL", 0, i, 0.0) for i in range(200)} == {"ALL"}
    root = synthetic.generate(tmp_path / "hard", classes=("ALL", "CLL"), images_per_class=30, image_size=40,
                              difficulty=1.0)
    noisy = next(i for i in range(30) if synthetic.drawn_as("ALL", 0, i, 1.0, ("ALL", "CLL")) == "CLL")
    # filed under its label, drawn as the other class
    assert np.array_equal(np.asarray(Image.open(root / f"ALL/ALL_{noisy:04d}.png")),
                          np.asarray(synthetic.render("ALL", 0, noisy, 40, 1.0, shows="CLL")))
    assert np.array_equal(np.asarray(synthetic.render("MM", 3, 1, 40, 0.0)), np.asarray(synthetic.render("MM", 3, 1, 40)))


def test_imagefolder_manifest_and_errors(tmp_path):
    synthetic.generate(tmp_path / "set", classes=("ALL", "CLL"), images_per_class=2, image_size=32)
    m = imagefolder(tmp_path / "set")
    assert list(m.columns) == ["path", "label", "group", "bytes", "mtime_ns"]  # size and time key the cache
    assert sorted(m["label"].unique()) == ["ALL", "CLL"] and len(m) == 4
    with pytest.raises(DataError, match="nowhere"):
        imagefolder(tmp_path / "nowhere")
    (tmp_path / "set" / "AML").mkdir()
    with pytest.raises(DataError, match="AML"):
        imagefolder(tmp_path / "set")


def test_split_is_stratified_and_group_disjoint():
    rows = [{"path": f"{c}/{i}.png", "label": c, "group": f"{c}-{i}"} for c, n in (("a", 50), ("b", 31)) for i in range(n)]
    # one patient with five images must land in a single split
    rows += [{"path": f"p/{i}.png", "label": "a", "group": "patient-7"} for i in range(5)]
    out = assign_splits(pd.DataFrame(rows), SplitConfig(train=0.6, val=0.2, test=0.2, seed=3))
    assert out.groupby("group")["split"].nunique().max() == 1
    for label, n in (("b", 31),):
        counts = out[out.label == label]["split"].value_counts()
        for split, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
            assert abs(counts[split] - frac * n) <= 1
    again = assign_splits(pd.DataFrame(rows), SplitConfig(train=0.6, val=0.2, test=0.2, seed=3))
    assert again["split"].tolist() == out["split"].tolist()


def test_split_refuses_a_class_too_small_to_split():
    rows = [{"path": f"{c}{i}", "label": c, "group": f"{c}{i}"} for c, n in (("a", 10), ("rare", 2)) for i in range(n)]
    with pytest.raises(DataError, match="'rare' has 2"):
        assign_splits(pd.DataFrame(rows), SplitConfig())


@pytest.mark.slow
def test_cache_decodes_once_and_second_scan_reads_the_file(tmp_path, ray_runtime):
    synthetic.generate(tmp_path / "set", classes=("ALL", "MM"), images_per_class=4, image_size=50)
    m = assign_splits(imagefolder(tmp_path / "set"), SplitConfig(train=0.5, val=0.25, test=0.25))
    first = cache.scan(m, 24, "pad", tmp_path / "cache", progress=lambda msg: None)
    assert first.pixels.shape == (8, 24, 24, 3) and first.pixels.dtype == np.uint8
    assert first.info["error"].isna().all() and first.info["content_hash"].nunique() == 8
    (cached_file,) = (tmp_path / "cache").glob("*.npy")
    stamp = cached_file.stat().st_mtime_ns
    second = cache.scan(m, 24, "pad", tmp_path / "cache", progress=lambda msg: None)
    assert isinstance(second.pixels, np.memmap)  # read from disk, not decoded again
    assert cached_file.stat().st_mtime_ns == stamp
    assert np.array_equal(first.pixels, second.pixels)
    data = cache.dataset(m, second.pixels, ("ALL", "MM"))
    assert data.class_names == ("ALL", "MM") and len(data.indices("train")) == 4
    shared = data.shared()  # in the object store once, for every trial
    assert isinstance(shared.images, ray.ObjectRef) and np.array_equal(shared.pixels(), data.pixels())
    # another size is another cache entry, decoded afresh
    assert cache.scan(m, 16, "pad", tmp_path / "cache", progress=lambda msg: None).pixels.shape[1] == 16


@pytest.mark.slow
def test_stain_normalisation_at_decode_moves_another_labs_colours_to_the_reference(tmp_path, ray_runtime):
    home = synthetic.generate(tmp_path / "home", classes=("ALL", "MM"), images_per_class=3, image_size=48)
    other = synthetic.generate(tmp_path / "other", classes=("ALL", "MM"), images_per_class=3, image_size=48,
                               seed=5, site=1)
    reference = home / "MM" / "MM_0000.png"
    m = assign_splits(imagefolder(other), SplitConfig(train=0.5, val=0.25, test=0.25))
    def settings(reference):
        return DataConfig(source="imagefolder", root=str(other), image_size=32, resize="pad",
                          stain_normalize="reinhard", stain_reference=str(reference))

    normalizer = from_config(settings(reference))
    plain = cache.scan(m, 32, "pad", tmp_path / "cache", progress=lambda msg: None)
    normalized = cache.scan(m, 32, "pad", tmp_path / "cache", progress=lambda msg: None, stain=normalizer)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # its own cache entry
    # the hashes are of the files' own images; the pixels are in the reference's stain
    assert normalized.info["content_hash"].tolist() == plain.info["content_hash"].tolist()
    ref = np.asarray(Image.open(reference).resize((32, 32)), dtype=float).mean(axis=(0, 1))
    before = np.abs(plain.pixels.reshape(-1, 3).mean(axis=0) - ref).sum()
    after = np.abs(np.asarray(normalized.pixels).reshape(-1, 3).mean(axis=0) - ref).sum()
    assert after < before / 2
    blank = np.full((32, 32, 3), 255, np.uint8)
    assert np.array_equal(normalizer(blank), blank)  # nothing to normalise: kept as it is
    # fitted again from the pixels a checkpoint keeps, without the file: the same normaliser
    again = StainNormalizer("reinhard", normalizer.pixels.copy(), "a checkpoint")
    assert again.key == normalizer.key and np.array_equal(again(plain.pixels[0]), normalizer(plain.pixels[0]))
    with pytest.raises(DataError, match="data.stain_reference .*nope.png"):
        from_config(settings(tmp_path / "nope.png"))
