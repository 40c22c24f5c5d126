"""Several labs in one experiment (data.sites): the site column, one set of class names, splits by
site, groups that span sites, and what the data check says per site. Real files on disk; the split
and mapping rules on real manifests; one check through Ray."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leuktune.cli.data import main as data_main
from leuktune.config import ConfigError, SplitConfig, load
from leuktune.data import sites, synthetic
from leuktune.data.cache import files_key
from leuktune.data.prepare import prepare
from leuktune.data.sources import DataError, manifest, table
from leuktune.data.split import assign_splits, check_test_sites, leaving_test_groups

REPO = Path(__file__).resolve().parents[1]
SMALL = ["data.synthetic.classes=[ALL, healthy]", "data.synthetic.images_per_class=5", "data.synthetic.image_size=32"]


def cfg(tmp_path, *extra):
    return load(None, [f"storage.path={tmp_path / 'runs'}", "name=t", "data.image_size=24", *SMALL, *extra])


def lab_folder(root: Path, folders: dict[str, str], n=4, site=2) -> Path:
    """A lab's class folders under its own names (folder -> the synthetic class drawn in it)."""
    for folder, drawn in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            synthetic.render(drawn, 7, i, 32, site=site).save(root / folder / f"{folder}_{i}.png")
    return root


def test_data_sites_refuse_a_top_level_source_an_unknown_test_site_and_a_label_of_two_classes(tmp_path):
    with pytest.raises(ConfigError, match=r"data.sites \(a\) replaces data.source and data.root"):
        cfg(tmp_path, "data.sites={a: {source: synthetic}}", "data.source=imagefolder")
    with pytest.raises(ConfigError, match=r"data.test_sites: elsewhere, nowhere not among data.sites \(known: a, b\)"):
        cfg(tmp_path, "data.sites={a: {source: synthetic}, b: {source: synthetic}}", "data.test_sites=[elsewhere, nowhere]")
    with pytest.raises(ConfigError, match="names every site"):
        cfg(tmp_path, "data.sites={a: {source: synthetic}}", "data.test_sites=[a]")
    with pytest.raises(ConfigError, match="'lymp' is listed for both 'lymphocyte' and 'blast'"):
        cfg(tmp_path, "data.classes={lymphocyte: [LYMP], blast: [lymp]}")
    with pytest.raises(ConfigError, match="root is required for source 'imagefolder'"):
        cfg(tmp_path, "data.sites={a: {source: imagefolder}}")
    # a resolved configuration (a run's config.yaml) reads back as it was
    three = cfg(tmp_path, "data.sites={a: {source: synthetic, synthetic: {site: 3}}, b: {source: synthetic}}")
    assert three.data.source == "sites" and three.data.sites["a"].synthetic.images_per_class == 5
    assert type(three).model_validate(three.to_dict()) == three


def test_each_site_is_its_own_source_in_its_own_files_and_groups(tmp_path):
    lab = lab_folder(tmp_path / "lab" / "images", {"LYMPHOCYTE": "CLL", "neut": "healthy"})
    c = cfg(tmp_path, "data.sites={home: {source: synthetic}, twin: {source: synthetic}, "
                      f"far: {{source: synthetic, synthetic: {{site: 3, seed: 4}}}}, lab: {{source: imagefolder, root: {lab}}}}}")
    m = manifest(c.data, tmp_path / "datasets")
    assert sites.names(m) == ["home", "twin", "far", "lab"] and m[sites.SITE].value_counts().to_dict() == {
        "home": 10, "twin": 10, "far": 10, "lab": 8}
    # the same settings at two sites: two folders, no path in both, each site's groups its own
    assert not set(m.loc[m.site == "home", "path"]) & set(m.loc[m.site == "twin", "path"])
    assert m["group"].str.split(":").str[0].tolist() == m["site"].tolist() and m["group"].is_unique
    keys = {files_key(m[m.site == s], 24, "pad") for s in ("home", "twin")}
    assert len(keys) == 2
    # one source: one site, named after its root (the built-in set: synthetic)
    single = cfg(tmp_path, "data.source=imagefolder", f"data.root={lab}").data
    assert set(manifest(single, tmp_path / "d")["site"]) == {"images"} and sites.default_name(single) == "images"
    assert set(manifest(cfg(tmp_path).data, tmp_path / "d")["site"]) == {"synthetic"}


def test_classes_map_every_labs_folders_and_an_unmapped_folder_is_named_or_skipped(tmp_path):
    lab = lab_folder(tmp_path / "lisc", {"Lymphocytes": "CLL", "NEUT": "healthy", "Mono": "AML"})
    sites_ = f"data.sites={{home: {{source: synthetic}}, lisc: {{source: imagefolder, root: {lab}}}}}"
    mapping = "data.classes={CLL: [lymphocytes, lymp], healthy: [neut, Neutrophils]}"
    c = cfg(tmp_path, sites_, mapping, "data.synthetic.classes=[CLL, healthy, ALL]")
    m = manifest(c.data, tmp_path / "datasets")
    with pytest.raises(DataError) as err:
        sites.map_classes(m, c.data)
    assert "site 'home'" in str(err.value) and "'ALL'" in str(err.value) and "known: CLL, healthy" in str(err.value)
    assert "also unmapped: lisc/Mono" in str(err.value)
    kept, left = sites.map_classes(m, cfg(tmp_path, sites_, mapping, "data.synthetic.classes=[CLL, healthy, ALL]",
                                          "data.unmapped=skip").data)
    assert set(kept["label"]) == {"CLL", "healthy"} and len(kept) == 10 + 8
    assert kept.groupby("site")["label"].agg(set).to_dict() == {"home": {"CLL", "healthy"}, "lisc": {"CLL", "healthy"}}
    assert sorted(left["label"].unique()) == ["ALL", "Mono"] and len(left) == 5 + 4
    assert left["error"].str.contains("maps to no class of data.classes").all() and set(left["site"]) == {"home", "lisc"}


def test_a_csv_manifest_may_say_each_rows_site(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        synthetic.render("ALL", 0, i, 32).save(tmp_path / "imgs" / f"{i}.png")
    rows = {"path": [f"imgs/{i}.png" for i in range(4)], "label": ["ALL"] * 4}
    pd.DataFrame({**rows, "site": ["tehran", "tehran", "bogota", "bogota"]}).to_csv(tmp_path / "m.csv", index=False)
    assert table(tmp_path / "m.csv")["site"].tolist() == ["tehran", "tehran", "bogota", "bogota"]
    pd.DataFrame({**rows, "site": ["tehran", "", "bogota", None]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad.csv: column site is empty in 2 row\(s\), e.g. row 3"):
        table(tmp_path / "bad.csv")
    pd.DataFrame(rows).to_csv(tmp_path / "giib.csv", index=False)
    data = cfg(tmp_path, "data.source=csv", f"data.root={tmp_path / 'giib.csv'}").data
    assert set(manifest(data, tmp_path)["site"]) == {"giib"}


def _labs(counts: dict[str, dict[str, int]]) -> pd.DataFrame:
    return pd.DataFrame([{"path": f"{s}/{c}/{i}.png", "label": c, "group": f"{s}:{c}{i}", "site": s}
                         for s, per in counts.items() for c, n in per.items() for i in range(n)])


def test_without_test_sites_every_site_is_split_in_its_share_of_each_class():
    m = _labs({"home": {"a": 40, "b": 20}, "small": {"a": 10, "b": 5}, "rare": {"a": 2}})
    out = assign_splits(m, SplitConfig(train=0.6, val=0.2, test=0.2, seed=1))
    per = out.groupby(["site", "label", "split"]).size()
    for site, label, n in (("home", "a", 40), ("home", "b", 20), ("small", "a", 10), ("small", "b", 5)):
        for split, share in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
            assert abs(per[site, label, split] - share * n) <= 1, (site, label, split)
    assert per["rare", "a"].sum() == 2  # a site's class smaller than the splits is dealt, not refused
    # one site: the split is today's, row for row
    one = m[m.site == "home"]
    assert assign_splits(one, SplitConfig(seed=1))["split"].tolist() == \
        assign_splits(one.drop(columns="site"), SplitConfig(seed=1))["split"].tolist()


def test_test_sites_are_the_test_split_whole_and_a_group_they_share_stays_out_of_training():
    m = _labs({"home": {"a": 30, "b": 30}, "tehran": {"a": 20, "b": 20}, "far": {"a": 10, "b": 10}})
    # one image of far also at home and at tehran (identical pixels joined them), one home/tehran pair
    m.loc[(m.site == "home") & (m.path == "home/a/0.png"), "group"] = "far:a0"
    m.loc[(m.site == "tehran") & (m.path == "tehran/b/3.png"), "group"] = "far:a0"
    m.loc[(m.site == "tehran") & (m.path == "tehran/a/5.png"), "group"] = "home:a7"
    spanning = sites.spanning_groups(m)
    assert spanning.set_index("group")["sites"].to_dict() == {"far:a0": "home, tehran, far", "home:a7": "home, tehran"}
    with pytest.raises(ConfigError, match=r"data.test_sites: lab9 not a site of the data \(known: home, tehran, far\)"):
        check_test_sites(m, ["lab9"])
    kept, left = leaving_test_groups(m, ["far"])
    assert sorted(left["path"]) == ["home/a/0.png", "tehran/b/3.png"] and left["error"].str.contains("test site 'far'").all()
    out = assign_splits(m[kept].reset_index(drop=True), SplitConfig(train=0.6, val=0.2, test=0.2, seed=0), ["far"])
    assert (out.loc[out.site == "far", "split"] == "test").all() and len(out[out.site == "far"]) == 20
    assert set(out.loc[out.site != "far", "split"]) == {"train", "val"}
    assert not set(out.loc[out.split != "test", "group"]) & set(m.loc[m.site == "far", "group"])
    assert out.groupby("group")["split"].nunique().max() == 1  # home:a7 spans two sites, one split
    train_share = (out[out.site == "home"]["split"] == "train").mean()
    assert abs(train_share - 0.75) < 0.05  # train/val renormalised over train + val


def test_four_synthetic_labs_each_their_own_stain_size_and_focus():
    looks = [np.asarray(synthetic.render("healthy", 0, 0, 64, site=s), dtype=float) for s in range(4)]
    means = [img.reshape(-1, 3).mean(0) for img in looks]
    assert min(np.abs(a - b).sum() for i, a in enumerate(means) for b in means[i + 1:]) > 10
    looks_of = {tuple(tuple(v) if isinstance(v, tuple) else v for v in row.values()) for row in synthetic.SITES.values()}
    assert len(looks_of) == 4 and len({row["magnification"] for row in synthetic.SITES.values()}) == 4
    with pytest.raises(ConfigError, match="data.synthetic.site"):
        load(None, ["data.synthetic.site=4"])


@pytest.mark.slow
def test_the_data_check_counts_per_site_class_and_split_and_reports_spanning_groups(tmp_path, capsys, ray_runtime):
    lab = lab_folder(tmp_path / "lisc", {"ALL": "ALL", "Healthy": "healthy", "Mono": "AML"}, n=5)
    c = cfg(tmp_path, "data.sites={home: {source: synthetic}, twin: {source: synthetic}, "
                      f"lisc: {{source: imagefolder, root: {lab}}}, far: {{source: synthetic, synthetic: {{site: 3}}}}}}",
            "data.classes={ALL: [], healthy: []}", "data.unmapped=skip", "data.test_sites=[far]")
    data, report = prepare(c, progress=lambda m: None)
    text = str(report)
    assert "per site (4: home, twin, lisc, far), class and split:" in text
    assert report.site_counts.loc[("far", "ALL"), "test"] == 5 and report.site_counts.loc[("lisc", "ALL"), "total"] == 5
    assert (report.site_counts.xs("far", level="site")[["train", "val"]] == 0).all().all()
    # home and twin are the same images: ten groups span the two sites, each in one split
    assert len(report.spanning_groups) == 10 and set(report.spanning_groups["sites"]) == {"home, twin"}
    assert "10 group(s) span sites" in text
    assert report.split.groupby("group")["split"].nunique().max() == 1
    assert set(report.rejected["label"]) == {"Mono"} and data.site_names == ("home", "twin", "lisc", "far")
    assert set(data.sites[data.indices("test")]) == {3} and 3 not in set(data.sites[data.indices("train")])

    # the example experiment: three labs and a fourth as the test site, checked from the command line
    code = data_main(["--config", str(REPO / "experiments" / "sites_synthetic.yaml"),
                      "--set", f"storage.path={tmp_path / 'runs'}", "--out", str(tmp_path / "checked")])
    out = capsys.readouterr().out
    assert code == 0 and "per site (4: home, tehran, bogota, far), class and split:" in out
    split = pd.read_parquet(tmp_path / "checked" / "split.parquet")
    assert set(split.loc[split.site == "far", "split"]) == {"test"} and set(split.loc[split.site != "far", "split"]) == {
        "train", "val"}


def test_the_checks_text_has_the_per_site_table_the_classes_a_site_lacks_and_the_spanning_groups():
    from leuktune.data.report import DataReport
    from leuktune.data.split import SPLITS

    m = _labs({"home": {"a": 10, "b": 10}, "lisc": {"a": 6}})
    m.loc[m.path == "lisc/a/0.png", "group"] = "home:a0"
    split = assign_splits(m, SplitConfig(seed=0))
    report = DataReport(counts=split.groupby(["label", "split"]).size().unstack(fill_value=0), groups=0,
                        rejected=pd.DataFrame(columns=["path", "label", "error"]), duplicate_images=0,
                        near_duplicates=pd.DataFrame(), split=split, site_counts=sites.counts(split, SPLITS),
                        missing_classes=sites.missing_classes(split), spanning_groups=sites.spanning_groups(split))
    text = str(report)
    assert report.sites == ["home", "lisc"] and report.missing_classes == {"lisc": ["b"]}
    assert "site 'lisc' has no images of b" in text and "1 group(s) span sites" in text
    assert "home:a0: 2 images at home, lisc" in text
    assert report.site_counts.loc[("lisc", "a")].tolist() == [
        *(int((split[(split.site == "lisc") & (split.label == "a")].split == s).sum()) for s in SPLITS), 6]
