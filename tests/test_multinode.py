"""The search on a cluster of machines that share no disk, as cluster/aws.yaml makes one.

A head that offers Ray no CPUs (it runs the driver) and two worker nodes, each in a mount
namespace of its own where this test session's folders (the data on the head's disk, the
driver's cache) are empty, as a cloud worker sees none of the head's files. The run folder and
a copy of the images live in an S3 server on loopback (moto). Searches are submitted with
`ray job submit` to the token-authenticated head, as README says.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

import raynodes
from conftest import s3_server, upload
from leuktune.data import synthetic

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
CLASSES = ("ALL", "CLL", "healthy")


def write_images(root: Path, per_class: int) -> None:
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            synthetic.render(label, 0, i, 48).save(root / label / f"{label}_{i:03d}.png")
    # a file that no node can decode: named in rejected.parquet, never a traceback
    broken = root / "ALL" / "truncated.png"
    buffer = io.BytesIO()
    synthetic.render("ALL", 1, 999, 48).save(buffer, format="PNG")
    broken.write_bytes(buffer.getvalue()[:200])


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """(cluster, S3 URI maker, the data folder on the head's disk, a driver-local scratch folder)."""
    base = tmp_path_factory.getbasetemp()  # every folder of this test session: hidden from the workers
    scratch = tmp_path_factory.mktemp("multinode")
    images = scratch / "cells"
    write_images(images, per_class=20)
    with s3_server("lab") as (client, uri):
        upload(client, "lab", images, "cells")
        cluster = raynodes.start_head(num_cpus=0, system_config=raynodes.FAST_HEALTH_CHECKS)
        try:
            for i in range(2):
                add_worker(cluster, i, base)
            cluster.wait_for_workers(2)
            yield cluster, uri, images, scratch
        finally:
            cluster.stop()


def add_worker(cluster, i: int, hidden: Path):
    """Worker node ``i`` (a resource named ``worker<i>`` says which), which does not see ``hidden``."""
    return cluster.add_worker(num_cpus=1, hide=(hidden,), extra=(f"--resources={json.dumps({f'worker{i}': 1})}",))


def search_args(storage: str, name: str, *extra: str) -> list[str]:
    overrides = [f"storage.path={storage}", f"name={name}", "data.image_size=32", "data.near_duplicates='off'",
                 "data.on_bad_image=skip", "model.backbone=test_resnet", "train.batch_size=16",
                 "train.epochs=2", "search.num_samples=2", "search.scheduler.asha=null", "evaluate.top_k=0", *extra]
    return ["python", "-m", "leuktune.search", *[a for o in overrides for a in ("--set", o)]]


def read_run(uri, name: str, table: str) -> pd.DataFrame:
    fs, root = pafs.FileSystem.from_uri(uri("runs"))
    with fs.open_input_file(f"{root}/{name}/{table}") as f:
        return pd.read_parquet(f)


def node_ids(cluster) -> dict[str, str]:
    """Node id -> 'head', 'worker0' or 'worker1' (each worker was started with a resource of its name)."""
    return {n["node_id"]: next((k for k in n["resources_total"] if k.startswith("worker")), "head")
            for n in cluster.nodes() if n["state"] == "ALIVE"}


def test_a_search_of_a_folder_on_the_heads_disk(cloud):
    cluster, uri, images, scratch = cloud
    without_token = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    refused = subprocess.run([raynodes.RAY, "job", "list", "--address", cluster.dashboard], env=without_token,
                             capture_output=True, text=True)
    assert refused.returncode != 0  # the head wants its token
    # Each trial through a Ray Train TorchTrainer (the launcher DDP needs): its workers on the worker nodes.
    job = cluster.job(*search_args(uri("runs"), "folder", "data.source=imagefolder", f"data.root={images}",
                                   f"data.cache_dir={scratch / 'cache-folder'}", "resources.launcher=train"), cwd=REPO)
    out = job.stdout + job.stderr
    assert job.returncode == 0, out[-4000:]
    # read where the files are: on the head, though Ray gives it no CPU
    assert "decoding 61 images on the driver node" in out and "2 of 2 other node(s) do not see" in out
    board = read_run(uri, "folder", "leaderboard.parquet")
    assert len(board) == 2 and (board["status"] == "completed").all() and board["trial_id"].is_unique
    assert (board["workers"] == 1).all()
    where = node_ids(cluster)
    assert {where[n] for n in board["node_id"]} <= {"worker0", "worker1"}  # trials ran on the workers
    assert (board["cpu_seconds"] == board["train_seconds"]).all() and (board["gpu_seconds"] == 0).all()
    rejected = read_run(uri, "folder", "rejected.parquet")
    assert rejected["path"].str.endswith("truncated.png").tolist() == [True]
    assert read_run(uri, "folder", "history.parquet")["node_id"].notna().all()
    # The console a person follows: leuktune's line per epoch, not Ray Train's per report.
    assert "[leuktune] trial" in job.stdout and "epoch 2/2" in job.stdout
    assert "Reporting training result" not in out
    # what was sent: the project, not its local runs, virtual environment or offline bundles
    (package,) = [p for p in cluster.head.temp.glob("session_2*/runtime_resources/working_dir_files/_ray_pkg_*")
                  if p.is_dir()]
    sent = [p for p in package.rglob("*") if p.is_file()]
    assert {p.relative_to(REPO).as_posix() for p in (REPO / "leuktune").rglob("*.py")} <= \
        {p.relative_to(package).as_posix() for p in sent}
    assert not {".venv", "runs", ".gpu", ".git"} & {p.relative_to(package).parts[0] for p in sent}
    assert sum(p.stat().st_size for p in sent) < 5_000_000


def test_a_folder_every_node_mounts_is_decoded_by_every_node(cloud):
    cluster, uri, images, scratch = cloud
    shared = Path(tempfile.mkdtemp(prefix="lk-nfs-", dir="/tmp"))  # outside the hidden folders: every node sees it
    try:
        write_images(shared / "cells", per_class=10)
        job = cluster.job("python", "-m", "leuktune.data", "--set", "data.source=imagefolder",
                          "--set", f"data.root={shared / 'cells'}", "--set", f"storage.path={uri('runs')}",
                          "--set", "name=shared", "--set", "data.image_size=32", "--set", "data.on_bad_image=skip",
                          "--set", f"data.cache_dir={scratch / 'cache-shared'}", cwd=REPO)
    finally:
        shutil.rmtree(shared)
    out = job.stdout + job.stderr
    assert job.returncode == 0, out[-3000:]
    assert "decoding 31 images across the cluster: every node sees the files (a shared folder)" in out
    decoded = next(line for line in out.splitlines() if "[leuktune] decoded 31 images" in line)
    assert decoded.count("images,") == 2 and "30 images, 3 classes" in out


def test_a_data_root_or_run_folder_the_nodes_cannot_reach_is_one_error_before_any_trial(cloud):
    cluster, uri, images, scratch = cloud
    # submitted together: each ends before any trial, most of its time the job's start
    nothing = cluster.submit(*search_args(uri("runs"), "nothing", "data.source=imagefolder",
                                          f"data.root={uri('no-such-folder')}"), cwd=REPO)
    local = cluster.submit(*search_args(str(scratch / "runs"), "local", "data.source=imagefolder",
                                        f"data.root={uri('cells')}"), cwd=REPO)
    nothing, local = raynodes.finished(nothing), raynodes.finished(local)
    for job, message in ((nothing, "error: s3://testing:testing@lab/no-such-folder"),
                         (local, f"error: storage.path {scratch / 'runs'} is a folder of this machine that 2 of 2 "
                                 "other node(s) of the cluster do not see")):
        out = job.stdout + job.stderr
        assert job.returncode != 0 and message in out, out[-3000:]
        assert "Traceback" not in out and "[leuktune] trial" not in out
    assert "dataset folder not found (data.root)" in nothing.stdout + nothing.stderr


def test_a_search_of_images_in_a_bucket_that_loses_a_worker_node_then_evaluate_report_predict_from_the_bucket(
        cloud, tmp_path_factory):
    """One search of the bucket's images serves both: a worker node is lost mid-trial (the trial
    goes on on the other node from its checkpoint), then the driver's machine evaluates, reports and
    predicts from the bucket."""
    cluster, uri, images, scratch = cloud
    epochs = 8
    submit = subprocess.Popen(
        [raynodes.RAY, "job", "submit", "--address", cluster.dashboard, "--working-dir", str(REPO), "--",
         *search_args(uri("runs"), "lost", "data.source=imagefolder", f"data.root={uri('cells')}",
                      f"data.cache_dir={scratch / 'cache-lost'}", f"train.epochs={epochs}", "train.checkpoint_every=1",
                      "resources.max_failures=2")],
        env=cluster.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lost = None
    try:
        fs, root = pafs.FileSystem.from_uri(uri("runs"))
        deadline = time.monotonic() + 600
        seen = None
        while seen is None:
            assert submit.poll() is None and time.monotonic() < deadline, "the search ended before a trial was midway"
            for info in fs.get_file_info(pafs.FileSelector(f"{root}/lost/history", allow_not_found=True)):
                try:  # one GET, one version of the part: each epoch rewrites it, and ranged reads of a random-
                    # access file could take its footer from one version and its columns from the next
                    with fs.open_input_stream(info.path) as f:
                        part = pd.read_parquet(io.BytesIO(f.read()))
                except FileNotFoundError:  # replaced between the listing and the read: next poll
                    continue
                if len(part) >= 2:
                    seen = part
                    break
            time.sleep(0.3)
        where = node_ids(cluster)
        victim = where[seen["node_id"].iloc[-1]]
        trial, epochs_seen = seen["trial_id"].iloc[0], int(seen["epoch"].max())
        lost = int(victim.removeprefix("worker"))
        cluster.workers[lost].kill_raylet()
        output, _ = submit.communicate(timeout=900)
    finally:
        if submit.poll() is None:  # a failed check above: the job goes with the cluster, its client here
            submit.kill()
        if lost is not None:  # the tests after this one find the cluster they expect: a node in the lost one's place
            gone = cluster.workers[lost]
            cluster.workers[lost] = add_worker(cluster, lost, tmp_path_factory.getbasetemp())
            cluster.workers.pop()
            gone.stop(grace=0)  # its raylet is gone: nothing of it to end gracefully
            cluster.wait_for_workers(2)
    assert submit.returncode == 0, output[-4000:]

    board = read_run(uri, "lost", "leaderboard.parquet")
    assert len(board) == 2 and board["trial_id"].is_unique and (board["status"] == "completed").all()
    history = read_run(uri, "lost", "history.parquet")
    mine = history[history["trial_id"] == trial].sort_values("epoch")
    assert mine["epoch"].tolist() == list(range(1, epochs + 1))  # every epoch once
    # it went on on the other node, from its checkpoint: no epoch before the kill was trained again
    after = mine[mine["resumed_from_epoch"] > 0]
    assert len(after) and after["resumed_from_epoch"].min() >= epochs_seen
    assert {where.get(n) for n in after["node_id"]} == {"worker1" if victim == "worker0" else "worker0"}

    # read from the bucket by every node
    assert "decoding 61 images across the cluster: the files are in a bucket" in output
    decoded = next(line for line in output.splitlines() if "[leuktune] decoded 61 images" in line)
    assert decoded.count("images,") == 2  # both worker nodes read their share from the bucket
    assert read_run(uri, "lost", "rejected.parquet")["error"].str.contains("corrupt or truncated").all()

    # The driver's machine reads the run from the bucket: final evaluation, report, predictions.
    import leuktune
    from leuktune.cli.predict import main as predict
    from leuktune.cli.report import main as report

    run = uri("runs/lost")
    evaluated = leuktune.evaluate(run, top=1, echo=lambda message: None)
    trials = evaluated[evaluated["status"] != "ensemble"]
    assert trials["test_balanced_accuracy"].notna().sum() == 1
    # the ensemble of the two, written to the bucket and read back from it: the same test figure
    ensemble = evaluated.set_index("trial_id").loc["ensemble"]
    assert set(ensemble["members"]) <= set(trials["trial_id"]) and len(ensemble["members"]) >= 1
    again = leuktune.Run.open(run).model(trial="ensemble").evaluate("test")
    assert again["test_balanced_accuracy"] == pytest.approx(ensemble["test_balanced_accuracy"])
    assert again["test_images"] == ensemble["test_images"]
    assert report([run, "--out", str(scratch / "report")]) == 0
    text = (scratch / "report" / "report.md").read_text()
    assert "## What the search used" in text and "2 trials on 2 node(s)" in text
    assert predict(["--run", run, uri("cells/CLL"), "--out", str(scratch / "p.csv")]) == 0
    predictions = pd.read_csv(scratch / "p.csv")
    assert len(predictions) == 20 and predictions["error"].isna().all()
    assert predictions["input"].str.startswith("s3://").all()
