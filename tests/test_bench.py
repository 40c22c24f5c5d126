"""The benchmarks' arithmetic and command lines (their timings belong in notes, never here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from leuktune.cli.bench import BENCHES, Bench, main
from leuktune.bench.occupancy import busy_by_slots
from leuktune.bench.overhead import overhead_per_trial, per_trial


def _events(trial: str, start: float, epochs: list[tuple[float, float]], end: float, *, ended="end") -> list[dict]:
    """Tune clock events for one trial: start, one result per (time, epoch_seconds), end."""
    out = [{"trial": trial, "event": "start", "t": start}]
    for n, (t, seconds) in enumerate(epochs, 1):
        out.append({"trial": trial, "event": "result", "t": t, "epoch": n, "epoch_seconds": seconds,
                    "loop_started_at": start + 1.5, "launched_at": start + 0.5, "time_train_s": 2.0 * n})
    return out + [{"trial": trial, "event": ended, "t": end}]


def test_per_trial_splits_wall_time_into_epochs_and_overhead():
    events = _events("a", 100.0, [(104.0, 2.0), (106.5, 2.5)], 107.0)
    events += _events("b", 100.0, [(110.0, 3.0)], 111.0, ended="error")
    events += [{"trial": "c", "event": "start", "t": 100.0}]  # never ended: left out
    rows = {r["trial"]: r for r in per_trial(events)}

    assert set(rows) == {"a", "b"}
    a = rows["a"]
    assert a["wall"] == pytest.approx(7.0)
    assert a["inside_epochs"] == pytest.approx(4.5)
    assert a["overhead"] == pytest.approx(2.5)
    assert a["start_to_loop"] == pytest.approx(1.5)
    assert a["of_which_launch"] == pytest.approx(1.0)
    assert a["train"] == pytest.approx(4.0)  # the phase total reported with the last epoch
    assert a["last_report_to_end"] == pytest.approx(0.5)
    assert not a["failed"] and rows["b"]["failed"]


def test_overhead_per_trial_charges_each_trial_its_share_of_the_search():
    rows = [{"inside_epochs": 4.0}, {"inside_epochs": 6.0}, {"inside_epochs": 2.0}, {"inside_epochs": 8.0}]
    # 4 trials, 2 slots for 15 s: 30 slot-seconds, 20 of them inside epochs.
    assert overhead_per_trial(rows, wall=15.0, concurrent=2) == pytest.approx(2.5)


def test_gpu_busy_is_split_by_whether_every_trial_slot_was_taken():
    rows = [{"start": 10.0, "end": 20.0}, {"start": 10.0, "end": 14.0}, {"start": 14.5, "end": 18.0}]
    samples = [(9.0, 0), (11.0, 80), (13.0, 90), (14.2, 10), (15.0, 70), (19.0, 30)]
    split = busy_by_slots(samples, rows, since=10.0, slots=2)
    # two trials at 11, 13 and 15; one at 14.2 (between trials) and 19 (the last one finishing)
    assert split["share_of_time_all_slots_taken"] == pytest.approx(0.6)
    assert split["gpu_busy_while_all_slots_taken"] == pytest.approx(0.8)
    assert split["gpu_busy_while_slots_idle"] == pytest.approx(0.2)


@pytest.mark.parametrize("command", sorted(BENCHES))
def test_each_benchmark_help_shows_a_runnable_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert f"examples:\n  python -m leuktune.bench {command}" in help_text
    assert "(default:" in help_text


def test_models_benchmark_measures_a_tiny_backbone(capsys):
    assert main(["models", "--backbones", "test_resnet", "--image-size", "32", "--batch", "2", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "test_resnet" in out and "fwd_bwd_img_per_s" in out


def test_the_benchmarks_list_names_each_with_an_example():
    result = subprocess.run([sys.executable, "-m", "leuktune.bench", "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name, bench in BENCHES.items():
        assert f"\n    {name}" in result.stdout
        assert f"\n  python -m leuktune.bench {name} {bench.examples[0]}".rstrip() + "\n" in result.stdout


def test_a_benchmark_is_one_entry_of_the_list(monkeypatch, capsys):
    def arguments(parser):
        parser.add_argument("--count", type=int, default=3, help="how many")

    monkeypatch.setitem(BENCHES, "count", Bench("counts to --count", ("--count 2",), arguments,
                                                lambda args: {"counted": args.count}))
    assert main(["count", "--count", "2"]) == 0
    assert capsys.readouterr().out == "counted: 2\n"
    with pytest.raises(SystemExit):
        main(["count", "--help"])
    assert "examples:\n  python -m leuktune.bench count --count 2\n" in capsys.readouterr().out
