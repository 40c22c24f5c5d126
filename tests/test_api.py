"""The public API as a researcher uses it from Python: README's example as written, and each name."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import leuktune
from leuktune.config import ConfigError
from leuktune.data.sources import DataError

REPO = Path(__file__).resolve().parents[1]


def readme_python_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_is_short_and_starts_with_the_run():
    lines = readme_python_example().strip().splitlines()
    assert len(lines) <= 6 and "leuktune.Run.open(" in lines[2]


@pytest.mark.slow
def test_the_readme_notebook_example_runs_as_written(tmp_path):
    # A fresh interpreter in an empty folder, as a new notebook would be.
    proc = subprocess.run([sys.executable, "-c", readme_python_example()], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = pd.read_parquet(tmp_path / "runs" / "synthetic-default" / "leaderboard.parquet")
    # two trials, and the ensemble of the two (a row of its own)
    assert (board["status"] != "ensemble").sum() == 2 and (board["trial_id"] == "ensemble").sum() == 1
    board = leuktune.load_leaderboard(tmp_path / "runs" / "synthetic-default")
    best = board[board["trial_id"] != "ensemble"].iloc[0]  # run.model(): the best trial
    # the printed table is the top of the leaderboard, and the test scores are the best model's
    assert best["trial_id"] in proc.stdout.split("test_balanced_accuracy")[0]
    scores = dict(re.findall(r"'(test_\w+)': ([0-9.e-]+)", proc.stdout))
    assert 0 <= float(scores["test_balanced_accuracy"]) <= 1 and "test_confusion_matrix" in proc.stdout
    assert float(scores["test_balanced_accuracy"]) == pytest.approx(best["test_balanced_accuracy"], abs=1e-6)
    assert f"'epoch': {int(best['kept_epoch'])}" in proc.stdout  # a trial's model also says which epoch it is


@pytest.mark.slow
def test_import_is_light_and_names_the_api():
    proc = subprocess.run([sys.executable, "-c", "import sys, leuktune; print(sorted(m for m in "
                           "('torch', 'ray', 'timm', 'optuna', 'pandas') if m in sys.modules))"],
                          capture_output=True, text=True)
    assert proc.stdout.strip() == "[]"
    assert {"Run", "search", "check_data", "load_config", "load_leaderboard", "load_model"} <= set(dir(leuktune))
    with pytest.raises(AttributeError, match="the API is Run, search, check_data"):
        leuktune.serach


def test_search_rejects_a_bad_config_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs"):
        leuktune.search(overrides=[f"storage.path={tmp_path}", "train.epochs=0"])
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_check_data_reports_what_the_cli_prints(tmp_path, capsys, ray_runtime):
    from leuktune.cli.data import main

    overrides = [f"storage.path={tmp_path}", "name=check", "data.synthetic.classes=[ALL, MM]",
                 "data.synthetic.images_per_class=10", "data.synthetic.image_size=40", "data.image_size=24"]
    report = leuktune.check_data(overrides=overrides, echo=lambda message: None)
    assert report.images == 20 and report.classes == ["ALL", "MM"] and report.groups == 20
    assert list(report.counts.columns) == ["train", "val", "test"]
    assert main([a for o in overrides for a in ("--set", o)]) == 0
    assert str(report) in capsys.readouterr().out
    with pytest.raises(DataError, match="nowhere"):
        leuktune.check_data(overrides=[*overrides, "data.source=imagefolder", f"data.root={tmp_path / 'nowhere'}"])
