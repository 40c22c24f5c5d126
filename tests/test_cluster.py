"""The cluster configs in cluster/ are ones Ray and KubeRay accept, and ask for what leuktune needs.

- cluster/aws.yaml, cluster/gcp.yaml (`ray up`): pass Ray's own checks (`prepare_config` then
  `validate_config`, the ones `ray up` runs before it touches a cloud), with a CPU head,
  GPU workers that autoscale from 0, token authentication and a setup that installs leuktune.
- cluster/onprem.yaml (`ray up` with Ray's `local` provider: servers reached by SSH): the same
  checks, a head that offers no CPUs or GPUs, and the list of servers.
- cluster/kuberay/*.yaml: the fields the KubeRay operator requires (its CRDs), an autoscaled
  GPU worker group, token authentication, and a RayJob that runs a search.

Nothing here reaches a cloud, a network or a cluster: files are read and checked.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
CLOUD = ["aws.yaml", "gcp.yaml"]
LAUNCHER = [*CLOUD, "onprem.yaml"]
COMMAND_LISTS = ["initialization_commands", "setup_commands", "head_setup_commands",
                 "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"]


def read(path: str) -> dict:
    """Fresh from the file each time: prepare_config changes the dict it is given."""
    return yaml.safe_load((CLUSTER / path).read_text())


def ray_checked(config: dict) -> None:
    validate_config(prepare_config(config))


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_passes_rays_own_checks(name):
    ray_checked(read(name))


@pytest.mark.parametrize("name", CLOUD)
@pytest.mark.parametrize("mistake, message", [
    (lambda c: c.update(max_worker=4), "Additional properties are not allowed"),
    (lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.5), "is not of type 'integer'"),
    (lambda c: c["available_node_types"]["gpu_worker"].pop("resources"), "'resources' is a required property"),
], ids=["unknown-key", "half-a-gpu", "no-resources"])
def test_rays_checks_catch_a_mistake(name, mistake, message):
    config = read(name)
    mistake(config)
    with pytest.raises(Exception, match=message):
        ray_checked(config)


@pytest.mark.parametrize("name", CLOUD)
def test_launcher_config_has_a_cpu_head_and_gpu_workers_from_zero(name):
    config = read(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu = [t for n, t in types.items() if n != config["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert gpu, "no GPU worker node type"
    for node_type in gpu:
        assert node_type["min_workers"] == 0 and 1 <= node_type["max_workers"] <= config["max_workers"]
    assert "2.60.0" in config["docker"]["image"]  # the Ray the project is tested with


def test_onprem_config_lists_its_servers_and_keeps_the_head_off_the_trials():
    config = read("onprem.yaml")
    prepared = prepare_config(read("onprem.yaml"))  # what `ray up` turns it into: one node type, every server
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(config["provider"]["worker_ips"]) >= 1
    (start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--num-cpus=0" in start and "--num-gpus=0" in start
    del config["provider"]["worker_ips"]
    with pytest.raises(Exception):  # Ray aborts: a local cluster names its machines
        prepare_config(config)


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_sets_every_command_list_and_starts_ray_with_a_mounted_token(name):
    config = read(name)
    # Ray fills a command list left out with its own defaults (other software), key by key.
    assert all(isinstance(config.get(key), list) for key in COMMAND_LISTS)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in config[key] if "ray start" in c]
        assert "RAY_AUTH_MODE=token" in start
        token_path = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+?);?\s", start).group(1)
        assert config["file_mounts"].get(token_path, "").endswith("auth_token"), key


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_installs_leuktune(name):
    config = read(name)
    assert any("pip install" in c and "leuktune" in c for c in config["setup_commands"])
    local = [p for p in config["file_mounts"].values() if not p.startswith("~")]
    assert all((REPO / p).exists() for p in local)  # `ray up` runs from the repository root


# --- KubeRay -------------------------------------------------------------------------------------

def containers(group: dict) -> list:
    return ((group.get("template") or {}).get("spec") or {}).get("containers") or []


def cluster_spec_problems(spec: dict, where: str) -> list[str]:
    """What a RayCluster spec lacks that the operator (or leuktune's use of it) needs."""
    problems = []

    def need(ok, what):
        if not ok:
            problems.append(f"{where}: {what}")

    version = tuple(int(p) for p in re.findall(r"\d+", str(spec.get("rayVersion", "")))[:3])
    need(version >= (2, 52, 0), "rayVersion >= 2.52.0 (token authentication)")
    need(spec.get("enableInTreeAutoscaling") is True, "enableInTreeAutoscaling: true")
    need((spec.get("authOptions") or {}).get("mode") == "token", "authOptions.mode: token")
    need(containers(spec.get("headGroupSpec") or {}), "headGroupSpec.template with a container")
    groups = spec.get("workerGroupSpecs") or []
    need(groups, "workerGroupSpecs")
    for i, group in enumerate(groups):
        for key in ("groupName", "minReplicas", "maxReplicas"):
            need(key in group, f"workerGroupSpecs[{i}].{key}")
        need(any("nvidia.com/gpu" in ((c.get("resources") or {}).get("limits") or {}) for c in containers(group)),
             f"workerGroupSpecs[{i}]: a container with an nvidia.com/gpu limit")
    return problems


def manifest_problems(doc: dict) -> list[str]:
    if doc.get("apiVersion") != "ray.io/v1":
        return ["apiVersion: ray.io/v1"]
    spec = doc.get("spec") or {}
    if doc.get("kind") == "RayCluster":
        return cluster_spec_problems(spec, "spec")
    if doc.get("kind") == "RayJob":
        problems = cluster_spec_problems(spec.get("rayClusterSpec") or {}, "spec.rayClusterSpec")
        if "python -m leuktune.search" not in spec.get("entrypoint", ""):
            problems.append("spec.entrypoint: python -m leuktune.search")
        if spec.get("shutdownAfterJobFinishes") is not True:
            problems.append("spec.shutdownAfterJobFinishes: true")
        return problems
    return [f"kind: {doc.get('kind')!r} is neither RayCluster nor RayJob"]


KUBERAY = {"kuberay/raycluster.yaml": "spec", "kuberay/rayjob.yaml": "spec.rayClusterSpec"}


def cluster_spec(doc: dict) -> dict:
    return doc["spec"].get("rayClusterSpec") or doc["spec"]


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_manifest_has_what_the_operator_needs(name):
    doc = read(name)
    assert manifest_problems(doc) == []
    spec = cluster_spec(doc)
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert all(g["minReplicas"] == 0 and g["maxReplicas"] >= 1 for g in spec["workerGroupSpecs"])


@pytest.mark.parametrize("name", KUBERAY)
def test_the_manifest_check_can_fail(name):
    doc = read(name)
    del cluster_spec(doc)["workerGroupSpecs"][0]["minReplicas"]
    assert manifest_problems(doc) == [f"{KUBERAY[name]}: workerGroupSpecs[0].minReplicas"]
    assert manifest_problems({**doc, "apiVersion": "ray.io/v1alpha1"}) == ["apiVersion: ray.io/v1"]


def test_rayjob_installs_leuktune_and_runs_a_valid_search():
    spec = read("kuberay/rayjob.yaml")["spec"]
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert any("leuktune" in p for p in runtime_env["pip"])
    assert spec["ttlSecondsAfterFinished"] > 0
    args = shlex.split(spec["entrypoint"])
    assert args[:3] == ["python", "-m", "leuktune.search"]
    experiment = yaml.safe_load((REPO / args[args.index("--config") + 1]).read_text())
    overrides = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--set")
    for key in overrides:  # each names a setting the experiment has
        section, _, field = key.partition(".")
        assert field in experiment[section], key
    assert overrides["storage.path"].startswith(("s3://", "gs://"))
