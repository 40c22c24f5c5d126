"""Which Ray an entry point uses, decided at once: a head that died must not hang a command.

`ray start --head` records its address in a file of the machine (/tmp/ray/ray_current_cluster);
a head killed with SIGKILL leaves it behind, and a plain `ray.init()` would wait ten minutes for it.
The tests put such a file in place (a closed port on loopback) and restore the machine's own after.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from ray._common.utils import get_ray_address_file

from conftest import tiny_overrides
from leuktune.runtime import ClusterUnreachable, choose_address


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture()
def cluster_file():
    """Writes the machine's latest-cluster file for one test; the original (or its absence) comes back."""
    path = Path(get_ray_address_file(None))
    before = path.read_bytes() if path.exists() else None

    def write(address: str) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(address)
        return address

    yield write
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(before)


def start(*args: str, env: dict | None = None, cwd=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd)


def ended(*started: subprocess.Popen) -> list[subprocess.CompletedProcess]:
    """Commands started together (most of each one's time is its start: imports, Ray), once all end."""
    results = []
    for process in started:
        stdout, stderr = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def test_a_dead_recorded_cluster_is_ignored_and_a_live_one_is_used(cluster_file, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    said = []
    dead = cluster_file(f"127.0.0.1:{closed_port()}")
    assert choose_address(None, said.append) == "local"
    assert said == [f"[leuktune] {get_ray_address_file(None)} names a Ray cluster at {dead} that does not answer "
                    "(its head is gone): ignored; starting a new local Ray"]
    with pytest.raises(ClusterUnreachable, match="address 'auto': no running Ray cluster"):
        choose_address("auto")
    with socket.socket() as listening:  # something answers at the recorded address
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        alive = cluster_file(f"127.0.0.1:{listening.getsockname()[1]}")
        said.clear()
        assert choose_address(None, said.append) == alive and "using the local Ray cluster at" in said[0]
    with pytest.raises(ClusterUnreachable, match=f"the Ray cluster at {dead} .* does not answer"):
        choose_address(dead)


@pytest.mark.slow
def test_with_a_dead_cluster_recorded_a_search_and_a_benchmark_start_their_own_ray(cluster_file, tmp_path):
    dead = cluster_file(f"127.0.0.1:{closed_port()}")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    overrides = tiny_overrides(tmp_path / "runs") + ["search.num_samples=1", "train.epochs=1", "evaluate.top_k=0"]
    # each starts a Ray of its own: the two at once
    searched, bench = ended(
        start("leuktune.search", *[a for o in overrides for a in ("--set", o)], env=env, cwd=tmp_path),
        start("leuktune.bench", "cache", "--images", "24", "--source-size", "32", "--image-size", "16",
              "--workdir", str(tmp_path / "bench"), env=env, cwd=tmp_path))
    assert searched.returncode == 0, searched.stderr[-3000:]
    assert f"names a Ray cluster at {dead} that does not answer" in searched.stdout
    assert "Failed to connect to GCS" not in searched.stdout + searched.stderr
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert f"names a Ray cluster at {dead} that does not answer" in bench.stdout


@pytest.mark.slow  # two commands that import torch
def test_an_explicit_address_that_does_not_answer_is_one_error_naming_it(tmp_path):
    dead = f"127.0.0.1:{closed_port()}"
    overrides = [a for o in tiny_overrides(tmp_path / "runs") for a in ("--set", o)]
    searched, checked = ended(start("leuktune.search", "--address", dead, *overrides, cwd=tmp_path),
                              start("leuktune.data", *overrides, env={**os.environ, "RAY_ADDRESS": dead}, cwd=tmp_path))
    for result in (searched, checked):
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: the Ray cluster at {dead} (--address or "
                                                                 "RAY_ADDRESS) does not answer within 5 s")
        assert "Traceback" not in result.stderr
