"""Reading a bucket run's study from another machine than its driver (a real S3 server on
loopback): each read works from a copy taken down for it, and leaves nothing behind."""

from __future__ import annotations

import tempfile

import optuna

import leuktune
from conftest import s3_server
from leuktune import runfolder
from leuktune.config import load
from leuktune.runfolder import RunFolder
from leuktune.study import readable


def _left(scratch) -> list[str]:
    """leuktune's temporary folders in ``scratch`` (torch keeps a cache of its own there)."""
    return [p.name for p in scratch.iterdir() if p.name.startswith("leuktune-")]


def test_reading_a_bucket_runs_study_leaves_no_temporary_folder(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where this process's temporary folders go
    made = optuna.create_study(study_name="cnmc", storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    for value in (0.5, 0.75):
        made.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value,
                                                 user_attrs={"trial_id": f"t{value}"}))
    with s3_server("studies") as (_, uri):
        cfg = load(None, [f"storage.path={uri('runs')}", "name=cnmc", f"data.cache_dir={tmp_path / 'cache'}"])
        folder = RunFolder.of(cfg)
        folder.write_text(runfolder.CONFIG, cfg.to_yaml())
        folder.write_bytes(runfolder.STUDY, (tmp_path / "study.db").read_bytes())
        for _ in range(3):
            study = leuktune.Run.open(folder.uri()).study()
            assert [t.value for t in study.trials] == [0.5, 0.75] and study.best_trial.user_attrs["trial_id"] == "t0.75"
        assert _left(scratch) == [], "a read of the study left temporary files behind"
        with readable(RunFolder.existing(folder.uri())) as place:  # the dashboard's way: open while it serves
            assert place.exists()
        assert _left(scratch) == [], "a read of the study left temporary files behind"
        assert not folder.study_file.exists()  # nor a driver's copy: a read writes nothing
