"""Ray's own autoscaler adds worker nodes while a search's trials wait and removes them when idle.

Ray's fake multi-node provider (``fake_multinode``, started as Ray's docs "Testing Autoscaling
Locally" say: ``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...``) launches real
Ray nodes on this machine where a cloud provider would launch instances. The node types are
cluster/aws.yaml's: a head with no CPUs and GPU workers from zero. Its GPUs are Ray's resources
only; the trials train on the CPU.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml

import raynodes

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
HEAD_TYPE = "ray.head.default"  # the fake provider's name for the head's type


def fake_config(gcs: str) -> dict:
    """cluster/aws.yaml's node types and limits on the fake provider, idle nodes removed after 6 s."""
    aws = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    types = aws["available_node_types"]
    workers = {name: {"resources": t["resources"], "node_config": {}, "min_workers": t.get("min_workers", 0),
                      "max_workers": t["max_workers"]}
               for name, t in types.items() if name != aws["head_node_type"]}
    head = {"resources": types[aws["head_node_type"]]["resources"], "node_config": {}, "max_workers": 0}
    return {"cluster_name": "leuktune-fake", "max_workers": aws["max_workers"], "upscaling_speed": 1.0,
            "idle_timeout_minutes": 0.1,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": gcs},
            "available_node_types": {HEAD_TYPE: head, **workers}, "head_node_type": HEAD_TYPE,
            "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
            "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
            **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                                   "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")}}


def test_the_autoscaler_adds_nodes_for_waiting_trials_and_removes_them_when_idle(tmp_path):
    port = raynodes.free_ports(1)[0]
    config = tmp_path / "fake-cluster.yaml"
    config.write_text(yaml.safe_dump(fake_config(f"{ray.util.get_node_ip_address()}:{port}")))
    cluster = raynodes.start_head(num_cpus=0, port=port, env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"},
                                  extra=(f"--autoscaling-config={config}",))
    try:
        assert cluster.alive_workers() == 0
        overrides = [f"storage.path={tmp_path / 'runs'}", "name=scaled", "data.synthetic.classes=[ALL, CLL, healthy]",
                     "data.synthetic.images_per_class=20", "data.image_size=32", "model.backbone=test_resnet",
                     "train.epochs=2", "train.batch_size=16", "search.num_samples=2", "search.scheduler.asha=null",
                     "evaluate.top_k=0", "resources.gpus_per_worker=1", "resources.cpus_per_worker=1"]
        # No --working-dir: the fake nodes share the head's temporary folder, and one removed while
        # idle deletes the job's unpacked working directory with its own (a cloud node has its own disk).
        peak = []
        watching = threading.Event()

        def watch():  # the most worker nodes alive at once while the search runs
            while not watching.wait(1):
                peak.append(cluster.alive_workers())

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        job = cluster.job("python", "-m", "leuktune.search", *[a for o in overrides for a in ("--set", o)],
                          cwd=REPO, working_dir=False)
        watching.set()
        watcher.join()
        out = job.stdout + job.stderr
        assert job.returncode == 0, out[-4000:]
        assert "no trial fits the cluster as it is" in out and "1 GPU a trial, the cluster has 0" in out
        board = pd.read_parquet(tmp_path / "runs" / "scaled" / "leaderboard.parquet")
        assert len(board) == 2 and (board["status"] == "completed").all()
        # the autoscaler added a node for each waiting trial, and the trials ran on nodes it added (the
        # fake provider's ids count up from the head's); a trial that ends before the second node is
        # up leaves its warm process to the next, so both may run on one
        assert max(peak) >= 2
        head_id = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"
        assert head_id not in set(board["node_id"])
        assert (board["gpu_seconds"] == board["train_seconds"]).all()
        deadline = time.monotonic() + 180
        while cluster.alive_workers() != 0:  # removed once idle for idle_timeout_minutes
            assert time.monotonic() < deadline, "the idle worker nodes were not removed"
            time.sleep(2)
    finally:
        cluster.stop()
