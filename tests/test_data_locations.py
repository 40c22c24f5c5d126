"""Data wherever a cluster keeps it: every source reads a local folder and a bucket alike (an S3
server on loopback), the decoded cache keeps its key, and a file that cannot be read is a bad
file, named, not a traceback."""

import hashlib
import os

import numpy as np
import pandas as pd
import pytest

from conftest import s3_server, upload
from leuktune import uris
from leuktune.config import load
from leuktune.data import cache, files, placement, synthetic
from leuktune.data.prepare import prepare
from leuktune.data.sources import DataError, allidb, cnmc, imagefolder, table


def cell(label, i):
    return synthetic.render(label, 0, i, 32)


def write_layouts(root):
    """One small set in each layout the sources read."""
    for split, n in (("TRAIN", 3), ("TEST", 2)):
        for label in ("ALL", "healthy"):
            (root / "kaggle" / split / label).mkdir(parents=True)
            for i in range(n):
                cell(label, i).save(root / "kaggle" / split / label / f"{label} {i}.png")  # a space in the name
    for fold in range(2):
        for label, patients in (("all", ["11", "12"]), ("hem", ["H1", "H2"])):
            folder = root / "cnmc" / f"fold_{fold}" / label
            folder.mkdir(parents=True)
            for p in patients:
                cell("ALL" if label == "all" else "healthy", fold).save(folder / f"UID_{p}_{fold + 1}_1_{label}.bmp")
    (root / "cnmc" / "prelim" / "images").mkdir(parents=True)
    cell("MM", 7).save(root / "cnmc" / "prelim" / "images" / "1.bmp")
    pd.DataFrame([{"Patient_ID": "UID_57_1_1_all.bmp", "new_names": "1.bmp", "labels": 1}]).to_csv(
        root / "cnmc" / "prelim" / "prelim_labels.csv", index=False)
    (root / "idb").mkdir()
    cell("ALL", 1).save(root / "idb" / "Im001_1.tif")
    cell("healthy", 2).save(root / "idb" / "Im002_0.jpg")
    (root / "idb" / "._Im001_1.tif").write_bytes(b"macOS")  # hidden companions are not images of the set
    (root / "listed").mkdir()
    for i in range(4):
        cell("CLL", i).save(root / "listed" / f"{i}.png")
    pd.DataFrame({"path": [f"listed/{i}.png" for i in range(4)], "label": ["a", "b"] * 2,
                  "group": ["p1", "p1", "p2", "p2"]}).to_parquet(root / "manifest.parquet")


READERS = {"kaggle": imagefolder, "cnmc": cnmc, "idb": allidb, "manifest.parquet": table}


def test_every_source_reads_a_bucket_as_it_reads_a_folder(tmp_path):
    write_layouts(tmp_path)
    with s3_server("cells") as (client, uri):
        upload(client, "cells", tmp_path, "sets")
        for name, reader in READERS.items():
            local, remote = reader(tmp_path / name), reader(uri(f"sets/{name}"))
            assert len(local) and remote.columns.tolist() == local.columns.tolist(), name
            # the same rows, groups, sizes: only where the files are differs
            assert remote.drop(columns=["path", "mtime_ns"]).equals(local.drop(columns=["path", "mtime_ns"])), name
            assert remote["path"].str.startswith("s3://testing:testing@cells/sets/").all(), name
            for path in remote["path"].head(2):  # each path reads back, from wherever it is
                assert files.read_bytes(path) == files.read_bytes(local["path"][remote["path"].tolist().index(path)])
        with pytest.raises(DataError, match=r"cells/nowhere.*dataset folder not found \(data\.root\)"):
            imagefolder(uri("nowhere"))
    assert sorted(remote["group"]) == ["p1", "p1", "p2", "p2"]


def test_the_cache_keeps_its_key_and_a_bucket_key_ignores_credentials(tmp_path):
    synthetic.generate(tmp_path / "set", classes=("ALL", "MM"), images_per_class=3, image_size=32)
    manifest = imagefolder(tmp_path / "set")
    # the key of earlier leuktune versions: the files as they are on disk
    old = hashlib.sha256(b"24\0pad\n")
    for path in manifest["path"]:
        stat = os.stat(path)
        old.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    assert cache.files_key(manifest, 24, "pad") == old.hexdigest()[:16]
    other_keys = manifest.assign(path="s3://other:keys@b/" + manifest["path"].str.lstrip("/") + "?region=x")
    same_files = manifest.assign(path="s3://b/" + manifest["path"].str.lstrip("/"))
    assert cache.files_key(other_keys, 24, "pad") == cache.files_key(same_files, 24, "pad")


def test_uris_escape_what_a_uri_cannot_carry_and_read_it_back():
    base = "s3://k:s@bucket/runs?endpoint_override=h:9000&scheme=http"
    location = uris.child(base, "bucket/cells/Early Pre-B #2.png")
    assert location == "s3://k:s@bucket/cells/Early%20Pre-B%20%232.png?endpoint_override=h:9000&scheme=http"
    assert uris.resolve(location)[1] == "bucket/cells/Early Pre-B #2.png"
    assert uris.child(base, "bucket/tune/run_trial_1_lr=0.01,backbone=x") .endswith("lr=0.01,backbone=x?"
                                                                                    "endpoint_override=h:9000&scheme=http")
    assert uris.identity(location) == "s3://bucket/cells/Early%20Pre-B%20%232.png"
    assert uris.identity("/data/cells/a.png") == "/data/cells/a.png"


def test_a_folder_linked_into_itself_is_walked_once(tmp_path):
    (tmp_path / "set" / "ALL").mkdir(parents=True)
    cell("ALL", 0).save(tmp_path / "store.png")
    (tmp_path / "set" / "ALL" / "a.png").symlink_to(tmp_path / "store.png")
    (tmp_path / "set" / "ALL" / "loop").symlink_to(tmp_path / "set")
    listing = files.walk(str(tmp_path / "set"), "a folder")
    assert [e.rel for e in listing.images()] == ["ALL/a.png"]
    assert listing.files["ALL/a.png"].location == str(tmp_path / "store.png")  # symlinks resolved


@pytest.mark.slow
def test_a_file_that_cannot_be_read_is_a_bad_file_named_with_the_node(tmp_path, ray_runtime):
    root = tmp_path / "set"
    for label in ("ALL", "healthy"):
        (root / label).mkdir(parents=True)
        for i in range(5):
            cell(label, i).save(root / label / f"{i}.png")
    cfg = load(None, [f"storage.path={tmp_path / 'runs'}", "name=t", "data.image_size=24",
                      "data.source=imagefolder", f"data.root={root}"])
    listed = imagefolder(root)
    (root / "ALL" / "3.png").unlink()  # gone between the listing and the decoding
    decoded = placement.decode(listed["path"].tolist(), listed["bytes"].tolist(), listed["mtime_ns"].tolist(),
                               24, "pad", progress=lambda m: None)
    errors = {p: r[2] for p, r in zip(listed["path"], decoded.results) if r[2]}
    assert list(errors) == [str(root / "ALL" / "3.png")]
    assert errors[str(root / "ALL" / "3.png")].startswith("cannot be read on ") and "FileNotFoundError" in \
        errors[str(root / "ALL" / "3.png")]
    assert np.count_nonzero(decoded.pixels.reshape(len(listed), -1).any(axis=1)) == 9
    (root / "ALL" / "3.png").write_bytes(b"")  # and in a search: named, on_bad_image applies
    with pytest.raises(DataError, match=r"3\.png: zero-byte file"):
        prepare(cfg, progress=lambda m: None)
