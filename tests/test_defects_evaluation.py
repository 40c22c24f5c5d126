"""The final evaluation with a tracking server that answers the search's connection check and
then refuses what it is sent (a real MLflow client talking HTTP to a small server on loopback):
the refusal is a warning, and the evaluation's tables are all written."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import leuktune
from conftest import tiny_overrides

pytestmark = pytest.mark.slow


class _Refusing(BaseHTTPRequestHandler):
    """Finds the experiment (the connection check passes), refuses every other request as MLflow
    refuses a bad one (HTTP 400, an MLflow error body: the client does not retry it)."""

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path.startswith("/api/2.0/mlflow/experiments/get-by-name"):
            self._answer(200, {"experiment": {"experiment_id": "1", "name": "tiny", "artifact_location": "/tmp/none",
                                              "lifecycle_stage": "active"}})
        else:
            self._refuse()

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._refuse()

    def _refuse(self):
        self._answer(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "refused by the test's server"})

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture()
def refusing_tracker():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_tracker_refusing_the_test_figures_is_a_warning_and_the_evaluation_is_whole(tmp_path, ray_runtime,
                                                                                        refusing_tracker):
    lines: list[str] = []
    board = leuktune.search(overrides=tiny_overrides(tmp_path / "runs") + [
        "search.num_samples=1", "train.epochs=1", "evaluate.top_k=1", f"tracking.mlflow={refusing_tracker}",
        "tracking.tensorboard=false"], echo=lines.append)
    run = tmp_path / "runs" / "tiny"
    assert len(board) == 1 and board["test_balanced_accuracy"].notna().all()
    for table in ("test.parquet", "evaluation.parquet", "test_predictions.parquet"):
        assert (run / table).is_file(), f"the final evaluation left {table} unwritten"
    warned = [line for line in lines if "test figures not sent to MLflow" in line]
    assert warned and "refused by the test's server" in warned[0], lines[-5:]
