"""As README says: a search submitted with `ray job submit` to a head started with `ray start --head`,
token authentication on."""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny_overrides

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture()
def token_head():
    """A head node of its own (ports and temp dir apart from the tests' Ray), token auth on."""
    gcs, dashboard, client, agent, agent_grpc, runtime_env, metrics = free_ports(7)
    temp = tempfile.mkdtemp(prefix="lk", dir="/tmp")  # unix socket paths must stay short
    # As in an activated environment: the job's `python` is the one with leuktune's requirements.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
         "--dashboard-host=127.0.0.1", f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
         f"--metrics-export-port={metrics}", "--num-cpus=2", f"--temp-dir={temp}"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True).returncode:
        assert head.poll() is None and time.monotonic() < deadline, "the head did not start"
        time.sleep(1)
    yield address, env, Path(temp)
    # Its own process group: every process of this head goes, the tests' Ray stays. A polite
    # SIGTERM first; `ray start --block` then takes about 30 s to wind down, so not waited for long.
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=30)
    shutil.rmtree(temp, ignore_errors=True)


def test_a_search_submitted_to_a_token_authenticated_head(token_head, tmp_path):
    address, env, temp = token_head
    without_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    refused = subprocess.run([RAY, "job", "list", "--address", address], env=without_token,
                             capture_output=True, text=True)
    assert refused.returncode != 0  # the head wants its token
    overrides = tiny_overrides(tmp_path / "runs") + ["search.num_samples=1", "resources.launcher=train"]
    job = subprocess.run(
        [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
         "python", "-m", "leuktune.search", *[a for o in overrides for a in ("--set", o)]],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    board = pd.read_parquet(tmp_path / "runs" / "tiny" / "leaderboard.parquet")
    assert len(board) == 1 and board["status"].iloc[0] == "completed" and board["workers"].iloc[0] == 1
    # The console a person follows: leuktune's line per epoch, not Ray Train's per report.
    assert "[leuktune] trial" in job.stdout and "epoch 2/2" in job.stdout
    assert "Reporting training result" not in job.stdout + job.stderr
    # what was sent: the project, not its local runs, virtual environment or offline bundles
    (package,) = [p for p in temp.glob("session_2*/runtime_resources/working_dir_files/_ray_pkg_*") if p.is_dir()]
    sent = [p for p in package.rglob("*") if p.is_file()]
    assert (package / "pyproject.toml").is_file()
    assert {p.relative_to(REPO).as_posix() for p in (REPO / "leuktune").rglob("*.py")} <= \
        {p.relative_to(package).as_posix() for p in sent}  # every module of the package, leuktune/data/ too
    assert not {".venv", "runs", ".gpu", ".git"} & {p.relative_to(package).parts[0] for p in sent}
    assert sum(p.stat().st_size for p in sent) < 5_000_000
