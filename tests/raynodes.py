"""Ray nodes of their own for the tests, on this one machine, shaped like a cloud cluster.

A head is started with ``ray start --head --block`` (token authentication on, as every head of
Ray 2.60), and worker nodes with ``ray start --block --address ...``, each with ports and a
temporary folder of its own. A worker node can run in a mount namespace of its own where some
folders are empty (a tmpfs over each): it cannot see the head's disk there, as a cloud worker
cannot. Every node is its own process group, stopped by killing that group; ``ray stop`` would
end every Ray process of the machine, other tests' included.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
# A killed raylet refuses the head's health checks at once: noticed after 5 checks 2 s apart rather
# than Ray's half a minute. The timeout stays Ray's 10 s: a raylet slow to answer on a busy 2-core
# machine must not be declared dead (it then ends itself).
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 2000,
                      "health_check_timeout_ms": 10000, "health_check_failure_threshold": 5}


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _worker_ports() -> range:
    """100 ports for a node's worker processes, free when chosen (nodes on one machine that share
    Ray's default range wait on each other's ports)."""
    while True:
        low = secrets.randbelow(200) * 100 + 30000
        with contextlib.ExitStack() as stack:
            try:
                for port in (low, low + 50, low + 99):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return range(low, low + 100)


def _node_ports() -> list[str]:
    workers = _worker_ports()
    ports = [p for p in free_ports(12) if p not in workers][:6]
    manager, objects, agent, agent_grpc, metrics, runtime_env = ports
    return [f"--node-manager-port={manager}", f"--object-manager-port={objects}",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
            f"--min-worker-port={workers.start}", f"--max-worker-port={workers.stop - 1}"]


@dataclass
class Node:
    """One ``ray start --block`` process group."""

    process: subprocess.Popen
    temp: Path
    log: Path

    def pids(self) -> list[tuple[int, str]]:
        """(pid, command line) of every process of this node (-ww: whole lines, which ps otherwise
        cuts at 80 columns, before a long virtual environment's path reaches ``raylet``)."""
        out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "-g", str(self.process.pid)], capture_output=True,
                             text=True).stdout
        return [(int(pid), cmd) for pid, _, cmd in (line.strip().partition(" ") for line in out.splitlines())]

    def kill_raylet(self) -> int:
        """SIGKILL this node's raylet, as a lost machine: its workers and the node go with it."""
        raylets = [pid for pid, cmd in self.pids() if "/raylet" in cmd.split(" ")[0]]
        assert len(raylets) == 1, f"no raylet of this node to kill: {self.pids()}\n{self.log.read_text()[-2000:]}"
        os.kill(raylets[0], signal.SIGKILL)
        return raylets[0]

    def terminate(self) -> None:
        """SIGTERM to the node's group, without waiting for it to end."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, grace: float = 5) -> None:
        """SIGTERM, ``grace`` seconds to end, then SIGKILL: the group and what names its folder."""
        self.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        # Processes of this node outside its group (nodes an autoscaler started) name its folder.
        for pid in processes_under(self.temp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp, ignore_errors=True)


def processes_under(folder: Path) -> list[int]:
    """The processes whose command line names ``folder`` (a node's temporary folder)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(pid) for pid, _, cmd in (line.strip().partition(" ") for line in out.splitlines())
            if str(folder) in cmd and int(pid) != os.getpid()]


def _temp() -> Path:
    return Path(tempfile.mkdtemp(prefix="lk", dir="/tmp"))  # unix socket paths must stay short


@dataclass
class Cluster:
    """A head and its worker nodes; ``env`` is what a client (``ray job``, a driver) needs."""

    head: Node
    gcs: str  # host:port
    dashboard: str  # http://host:port
    env: dict
    workers: list[Node] = field(default_factory=list)

    def add_worker(self, num_cpus: int = 1, hide: tuple[Path, ...] = (), num_gpus: int = 0,
                   extra: tuple[str, ...] = ()) -> Node:
        """A worker node; ``hide``: folders it sees empty (its own mount namespace)."""
        temp = _temp()
        start = [RAY, "start", "--block", f"--address={self.gcs}", f"--num-cpus={num_cpus}",
                 f"--num-gpus={num_gpus}", "--object-store-memory=200000000", f"--temp-dir={temp}",
                 *_node_ports(), *extra]
        mounts = "".join(f"mount -t tmpfs none {shlex.quote(str(p))} && " for p in hide)
        command = ["unshare", "-m", "bash", "-c", f"{mounts}exec {shlex.join(start)}"] if hide else start
        log = temp.with_suffix(".log")
        node = Node(subprocess.Popen(command, env=self.env, start_new_session=True, stdout=log.open("w"),
                                     stderr=subprocess.STDOUT), temp, log)
        self.workers.append(node)
        return node

    def nodes(self) -> list[dict]:
        """The cluster's nodes as Ray's state API lists them (node_id, state, is_head_node,
        resources_total), asked of the dashboard over HTTP with the token."""
        request = urllib.request.Request(f"{self.dashboard}/api/v0/nodes?detail=1",
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["data"]["result"]["result"]

    def alive_workers(self) -> int:
        return sum(n["state"] == "ALIVE" and not n["is_head_node"] for n in self.nodes())

    def wait_for_workers(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_workers() != count:
            dead = [w.log for w in self.workers if w.process.poll() is not None]
            assert not dead, f"a worker node exited: {dead[0].read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{count} worker node(s) did not join"
            time.sleep(1)

    def submit(self, *args: str, cwd: Path, working_dir: bool = True) -> subprocess.Popen:
        """``ray job submit`` of a command to this cluster, as README says (``--working-dir`` the
        project, unless ``working_dir`` is False: then the job runs the installed leuktune), started:
        its client's process (what the job prints on its stdout; stderr apart)."""
        sent = ["--working-dir", str(cwd)] if working_dir else []
        return subprocess.Popen([RAY, "job", "submit", "--address", self.dashboard, *sent, "--", *args], env=self.env,
                                cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def job(self, *args: str, cwd: Path, timeout: float = 900, working_dir: bool = True) -> subprocess.CompletedProcess:
        """``submit``, then its end: what it printed and its exit status."""
        return finished(self.submit(*args, cwd=cwd, working_dir=working_dir), timeout)

    def stop(self) -> None:
        nodes = [*self.workers, self.head]
        for node in nodes:  # told all at once: each takes up to seconds to end, and they end together
            node.terminate()
        deadline = time.monotonic() + 5  # one grace for all: nothing of a test's cluster is kept
        for node in nodes:
            node.stop(grace=max(0.0, deadline - time.monotonic()))


def finished(process: subprocess.Popen, timeout: float = 900) -> subprocess.CompletedProcess:
    """A started command's end (it is killed past ``timeout``): its output and exit status."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def start_head(num_cpus: int = 0, system_config: dict | None = None, env: dict | None = None,
               extra: tuple[str, ...] = (), port: int | None = None, tries: int = 3) -> Cluster:
    """A head node (token authentication on) and its client environment, once ``ray job`` answers.
    A head that exits while starting is started again on fresh ports (``tries`` in all): the ports
    are free when chosen, but another process on the machine may take one before the head binds
    it (seen once in a full run: every test of a module failed on one head)."""
    for attempt in range(1, tries + 1):
        try:
            return _start_head(num_cpus, system_config, env, extra, port)
        except HeadExited:
            if attempt == tries:
                raise
    raise AssertionError("unreachable")


class HeadExited(AssertionError):
    """The head's process ended before it answered."""


def _start_head(num_cpus: int, system_config: dict | None, env: dict | None, extra: tuple[str, ...],
                port: int | None) -> Cluster:
    gcs, dashboard, client = free_ports(3)
    gcs = port or gcs
    temp = _temp()
    # As in an activated environment: a job's `python` is the one with leuktune's requirements.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    # Every process of this cluster (the head's and the workers' Ray workers inherit it) names this
    # cluster: Ray Train's controller looks its actors up through the state API, which, with no
    # address, refuses when it finds two Ray instances on the machine (the suite's own and this one)
    # and the trial waited forever.
    env["RAY_ADDRESS"] = f"127.0.0.1:{gcs}"
    command = [RAY, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
               "--dashboard-host=127.0.0.1", f"--ray-client-server-port={client}", f"--num-cpus={num_cpus}",
               "--object-store-memory=300000000", f"--temp-dir={temp}", *_node_ports(), *extra]
    if system_config:
        command.append(f"--system-config={json.dumps(system_config)}")
    log = temp.with_suffix(".log")
    head = Node(subprocess.Popen(command, env=env, start_new_session=True, stdout=log.open("w"),
                                 stderr=subprocess.STDOUT), temp, log)
    cluster = Cluster(head, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", env)
    deadline = time.monotonic() + 120
    while subprocess.run([RAY, "job", "list", "--address", cluster.dashboard], env=env, capture_output=True).returncode:
        if head.process.poll() is not None or time.monotonic() > deadline:
            cluster.stop()
            error = HeadExited if head.process.poll() is not None else AssertionError
            raise error(f"the head did not start: {log.read_text()[-3000:]}")
        time.sleep(1)
    return cluster
