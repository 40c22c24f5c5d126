"""The package's shape, checked: layers without loops (between parts and between modules),
in-function imports that say why, thin starters of the command lines and one ``leuktune`` script
over them, package ``__init__.py`` files that only hand names on, modules of at most 300 lines,
one family of errors that every command line catches (and nothing else), the epoch report's
every field stored or excluded on purpose, and the private framework names leuktune relies on."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import logging
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

import leuktune
from leuktune import internals, leaderboard
from leuktune.config import HEAD_KINDS, PROBE_HEADS
from leuktune.errors import LeuktuneError
from leuktune.evaluation.by_site import site_figures
from leuktune.models.heads import DEFAULT_ACTIVATION, build_head
from leuktune.results import NOT_STORED, EpochReport, TestFigures, TrialFacts, TrialRecord, TrialStatus

PACKAGE = Path(leuktune.__file__).parent


def _modules() -> list[tuple[str, Path]]:
    return [(".".join(("leuktune", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"), path)
            for path in sorted(PACKAGE.rglob("*.py"))]


# What the modules that python -m runs count as: one part, above every other (each only starts a command line).
STARTERS = "starters"
# Every command line, as `leuktune <command>` and `python -m leuktune.<command>` both run it.
COMMAND_LINES = ("search", "evaluate", "predict", "export", "report", "data", "bench", "dashboard", "adapt")


@functools.cache
def _starters() -> dict[str, Path]:
    """The modules ``python -m leuktune.<command>`` runs, one per command of the ``leuktune`` script:
    ``leuktune/<command>.py`` or ``leuktune/<command>/__main__.py``."""
    found = {}
    for command in COMMAND_LINES:
        for module, path in ((f"leuktune.{command}", PACKAGE / f"{command}.py"),
                             (f"leuktune.{command}.__main__", PACKAGE / command / "__main__.py")):
            if path.exists():
                found[module] = path
    return found


def _unit(module: str) -> str | None:
    """The layer part a module belongs to: ``leuktune.tuning.tuner`` -> ``tuning``; a module
    ``python -m`` runs -> ``STARTERS``."""
    parts = module.split(".")
    if "__main__" in parts or any(module == s or module.startswith(f"{s}.") for s in _starters()):
        return STARTERS
    return parts[1] if len(parts) > 1 and parts[0] == "leuktune" else None


def _imports(tree: ast.AST):
    """(module imported, line) for every import, those inside functions, TYPE_CHECKING and
    ``__main__`` blocks too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            yield from ((f"{node.module}.{alias.name}", node.lineno) for alias in node.names)


# The layers as DESIGN.md draws them, bottom to top: a part imports its own layer's parts or lower ones.
LAYERS = [
    {"metrics", "uris", "errors", "internals"},
    {"config", "results", "runtime"},
    {"models", "runfolder"},
    {"data", "leaderboard", "study", "tracking"},
    {"training"},
    {"trained"},
    {"evaluation", "exporting"},
    {"tuning", "report", "adapting"},
    {"run"},
    {"bench"},
    {"cli"},  # every command line
    {STARTERS},  # what python -m runs (leuktune/search.py, leuktune/data/__main__.py, ...): each starts one of cli
]
LAYER = {unit: height for height, units in enumerate(LAYERS) for unit in units}


def _edges() -> dict[str, dict[str, str]]:
    """part -> part it imports -> where (the first such import). Every import counts: one inside a
    function, under TYPE_CHECKING or in an ``if __name__ == "__main__":`` block hides a loop, it
    does not remove it."""
    edges: dict[str, dict[str, str]] = {}
    for module, path in _modules():
        source = _unit(module)
        if source is None:  # leuktune/__init__.py: the public face, above every part
            continue
        for name, line in _imports(ast.parse(path.read_text())):
            target = _unit(name)
            if target and target != source:
                edges.setdefault(source, {}).setdefault(target, f"{path.relative_to(PACKAGE.parent)}:{line}")
    return edges


def _module_edges() -> dict[str, dict[str, str]]:
    """module -> leuktune module it imports -> where, every import counted as in ``_edges``: a name
    imported from a module is an edge to that module (``from leuktune.training.loop import Trial``:
    to ``leuktune.training.loop``), a module imported from its package an edge to the module alone
    (``from leuktune.training import checkpoint``), any other name of a package to its ``__init__.py``."""
    known = {module for module, _ in _modules()}

    def named(name: str) -> str | None:  # the module itself, or the one that holds the name
        parts = name.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in known), None)

    edges: dict[str, dict[str, str]] = {}
    for module, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [named(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [named(f"{node.module}.{alias.name}") for alias in node.names]
            else:
                continue
            for target in targets:
                if target and target != module:
                    edges.setdefault(module, {}).setdefault(target, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return edges


def _circles(edges: dict[str, dict[str, str]]) -> list[str]:
    """One circle of each group of nodes that reach one another, written ``a (where) -> b (where) -> a``."""

    def reach(start: str) -> dict[str, str | None]:  # node -> the node it was reached from (breadth first)
        came_from: dict[str, str | None] = {start: None}
        queue = [start]
        for node in queue:
            for target in edges.get(node, {}):
                if target not in came_from:
                    came_from[target] = node
                    queue.append(target)
        return came_from

    reached = {node: reach(node) for node in edges}
    circles, seen = [], set()
    for node in sorted(edges):
        group = {other for other in reached[node] if node in reached.get(other, {})}
        if len(group) < 2 or node in seen:
            continue
        seen |= group
        back = next(other for other in reached[node] if node in edges.get(other, {}))  # the last step home
        path, step = [], back  # the shortest way there, then home
        while step is not None:
            path.append(step)
            step = reached[node][step]
        cycle = [*reversed(path), node]
        circles.append(" -> ".join(f"{a} ({edges[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {node}")
    return circles


def test_every_part_of_the_package_has_a_layer():
    parts = {_unit(module) for module, _ in _modules()} - {None}
    assert parts == set(LAYER), f"parts without a layer: {parts - set(LAYER)}; layers without a part: " \
                                f"{set(LAYER) - parts}"


def test_every_import_goes_down_the_layers_or_stays_in_its_own():
    upward = [f"{source} ({where}) imports {target}, a higher layer"
              for source, targets in _edges().items() for target, where in targets.items()
              if LAYER[target] > LAYER[source]]
    assert not upward, "imports up the layers:\n" + "\n".join(sorted(upward))


def test_the_package_has_no_import_loop_between_its_parts():
    loops = _circles(_edges())
    assert not loops, "import loops between leuktune's parts:\n" + "\n".join(loops)


def test_no_two_modules_import_each_other_even_inside_a_part():
    loops = _circles(_module_edges())
    assert not loops, "import loops between leuktune's modules:\n" + "\n".join(loops)


def test_each_python_m_start_only_starts_its_command_line():
    starters = _starters()
    for command in COMMAND_LINES:
        found = [path for module, path in starters.items() if module.removesuffix(".__main__") == f"leuktune.{command}"]
        assert len(found) == 1, f"python -m leuktune.{command}: expected one starter, found {found}"
        tree = ast.parse(found[0].read_text())
        imported = {name for name, _ in _imports(tree)}
        assert imported == {"sys", f"leuktune.cli.{command}", f"leuktune.cli.{command}.main"}, \
            f"{found[0]} imports {sorted(imported)}: a starter imports its command line and nothing else"
        assert not [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))], \
            f"{found[0]} defines code: it belongs in leuktune/cli/{command}.py"
        assert "sys.exit(main())" in ast.unparse(tree)


def test_the_leuktune_script_runs_every_command_line(capsys):
    scripts = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["leuktune"].partition(":")
    script = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as exit_:
        script(["--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out
    assert all(f"\n              {command} " in listed for command in COMMAND_LINES), listed
    assert "examples:\n  leuktune search --dry-run " in listed
    # the example works as written: it checks the built-in experiment and starts nothing
    assert script(["search", "--dry-run"]) == 0
    assert "experiment 'synthetic-default' (built-in default): valid" in capsys.readouterr().out
    # a subcommand is the command line of its name, its options and mistakes included
    with pytest.raises(SystemExit) as exit_:
        script(["export", "--help"])
    assert exit_.value.code == 0 and "--format {onnx,torchscript}" in capsys.readouterr().out
    assert script(["export", "--run", "/nowhere/run"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit) as exit_:
        script(["train"])
    assert exit_.value.code == 2 and "invalid choice: 'train'" in capsys.readouterr().err


# A package's __init__.py hands names on. leuktune's own also holds the lazy public API (its
# names imported on first use) and sets Ray Train's API version before anything imports ray.
TOP_LEVEL_EXTRAS = {"__version__", "_API", "__getattr__", "__dir__", "os.environ.setdefault"}


def _beyond_reexports(path: Path) -> list[str]:
    """What a package's ``__init__.py`` holds besides its docstring, imports and ``__all__``: each
    name it defines (or statement it runs) with its line."""
    allowed = TOP_LEVEL_EXTRAS if path == PACKAGE / "__init__.py" else set()
    extra = []
    for index, node in enumerate(ast.parse(path.read_text()).body):
        if isinstance(node, (ast.Import, ast.ImportFrom)) or \
                (index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            name = ast.unparse(node.targets[0] if isinstance(node, ast.Assign) else node.target)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = node.name
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            name = ast.unparse(node.value.func)
        else:
            name = type(node).__name__
        if name not in {"__all__", *allowed}:
            extra.append(f"{name} (line {node.lineno})")
    return extra


def test_a_packages_init_only_hands_names_on():
    extra = [f"{path.relative_to(PACKAGE.parent)}: {', '.join(names)}" for path in sorted(PACKAGE.rglob("__init__.py"))
             if (names := _beyond_reexports(path))]
    assert not extra, "code in a package's __init__.py (move it to a module and re-export it):\n" + "\n".join(extra)


MOST_LINES = 300


def test_no_module_is_over_300_lines():
    long = [f"{path.relative_to(PACKAGE.parent)}: {lines} lines" for _, path in _modules()
            if (lines := len(path.read_text().splitlines())) > MOST_LINES]
    assert not long, f"modules over {MOST_LINES} lines (split each where its jobs part):\n" + "\n".join(long)


def test_private_names_of_ray_and_optuna_are_used_only_in_internals():
    private = []
    for module, path in _modules():
        if module == "leuktune.internals":
            continue
        tree = ast.parse(path.read_text())
        for name, line in _imports(tree):
            if name.split(".")[0] in ("ray", "optuna") and any(part.startswith("_") for part in name.split(".")):
                private.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == internals.OPTUNA_STUDY_STOPPED:
                private.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} matches Optuna's error text")
    assert not private, "private framework names outside leuktune/internals.py:\n" + "\n".join(private)


def test_every_import_inside_a_function_says_why():
    unexplained = []
    for _, path in _modules():
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                row = node.lineno - 1
                explained = "#" in lines[row]
                above = row - 1
                # a comment on the line, or above the block of imports it opens
                while not explained and above >= 0:
                    text = lines[above].strip()
                    if text.startswith("#"):
                        explained = True
                    elif text == "" or text.startswith(("import ", "from ")):
                        above -= 1
                        continue
                    break
                if not explained:
                    unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} in {function.name}()")
    assert not unexplained, "imports inside functions without a comment saying why:\n" + "\n".join(unexplained)


def _error_classes() -> list[type]:
    found = {}
    for info in pkgutil.walk_packages(leuktune.__path__, "leuktune."):
        if info.name in COMMAND_STARTS:
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__.startswith("leuktune."):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return list(found.values())


def test_every_error_leuktune_defines_belongs_to_its_family():
    errors = _error_classes()
    names = {cls.__name__ for cls in errors}
    assert {"ConfigError", "DataError", "CheckpointError", "LeaderboardError", "SearchError", "FolderInUse",
            "ClusterUnreachable", "WeightsError", "BackboneError", "BadImage", "ExportError"} <= names
    outside = [f"{cls.__module__}.{cls.__name__}" for cls in errors if not issubclass(cls, LeuktuneError)]
    assert not outside, f"errors outside the family (leuktune.errors.LeuktuneError): {outside}"
    by_name = {cls.__name__: cls for cls in errors}
    # the built-in errors callers have caught all along still catch them
    assert issubclass(by_name["ConfigError"], ValueError) and issubclass(by_name["DataError"], ValueError)
    assert issubclass(by_name["SearchError"], RuntimeError)
    assert issubclass(by_name["ClusterUnreachable"], ConnectionError)


def _image(tmp_path: Path) -> str:
    path = tmp_path / "cell.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)
    return str(path)


# The modules python -m runs that share a name with a function of the API: they refuse an import.
COMMAND_STARTS = ("leuktune.search", "leuktune.evaluate")


def test_a_command_lines_start_never_hides_the_function_of_its_name():
    for name in COMMAND_STARTS:
        with pytest.raises(ImportError, match="command line's start"):
            importlib.import_module(name)
        assert callable(getattr(leuktune, name.rpartition(".")[2]))
    for name in ("evaluate", "export"):  # export: the start of the command line, the library is leuktune.exporting
        result = subprocess.run([sys.executable, "-m", f"leuktune.{name}", "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout.startswith(f"usage: python -m leuktune.{name}"), result.stderr


# Each command line, and the function it hands the work to (module:attribute, patched to raise).
COMMANDS = {
    "search": ("leuktune.cli.search", "leuktune.tuning.driver:search", lambda tmp: []),
    "data": ("leuktune.cli.data", "leuktune.data.check:check_data", lambda tmp: []),
    "evaluate": ("leuktune.cli.evaluate", "leuktune.run:Run.open", lambda tmp: [str(tmp)]),
    "report": ("leuktune.cli.report", "leuktune.leaderboard:run_folder", lambda tmp: [str(tmp)]),
    "predict": ("leuktune.cli.predict", "leuktune.run:Run.open", lambda tmp: ["--run", str(tmp), _image(tmp)]),
    "export": ("leuktune.cli.export", "leuktune.run:Run.open", lambda tmp: ["--run", str(tmp)]),
    "bench": ("leuktune.cli.bench", "leuktune.bench.cache:bench_cache", lambda tmp: ["cache"]),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_line_reports_leuktunes_errors_and_lets_a_bug_be_a_traceback(command, tmp_path, monkeypatch,
                                                                                  capsys):
    module_name, target, argv = COMMANDS[command]
    main = importlib.import_module(module_name).main
    module, _, path = target.partition(":")
    owner = importlib.import_module(module)
    *parents, attribute = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)

    def refuse(*args, **kwargs):
        raise raised

    monkeypatch.setattr(owner, attribute, refuse)
    raised = leuktune.config.ConfigError("data.root: /nowhere does not exist")
    assert main(argv(tmp_path)) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: data.root: /nowhere does not exist"
    raised = RuntimeError("a bug in leuktune")  # not one of the family: not dressed up as the user's mistake
    with pytest.raises(RuntimeError, match="a bug in leuktune"):
        main(argv(tmp_path))


def test_each_stages_record_fills_exactly_its_tables_columns():
    report = _full_report()
    record = TrialRecord(experiment="e", trial_id="t", status=TrialStatus.COMPLETED, stopped_by=None,
                         drawn={"lr": 0.1}, kept=report, last=report, train_seconds=1.0, cpu_seconds=1.0,
                         gpu_seconds=0.0, checkpoint="tune/t/checkpoint_000001", started_at=None, finished_at="now",
                         leuktune_version="0", data_fingerprint="f")
    # the tie columns and the Pareto front are the search's, computed over every trial as each ends
    computed = {name for name, _ in leaderboard.TIE_COLUMNS} | {"pareto_front"}
    assert set(record.to_row()) | computed == set(leaderboard.trials_schema(["lr"]).names)
    metrics = {m: 0.5 for m in leuktune.metrics.METRICS}
    figures = TestFigures(model="t", scores=metrics, low=metrics, high=metrics, confusion_matrix=[[1]], images=1,
                          temperature=1.0, ece_calibrated=0.1)
    assert set(figures.to_row()) == set(leaderboard.TEST.names)
    [by_site] = site_figures("t", np.array([0, 1]), np.eye(2), np.arange(2), np.array(["a", "a"]), ("x", "y"),
                             resamples=5, seed=0)
    assert set(by_site) == set(leaderboard.SITE_FIGURES.names)
    # the derived leaderboard holds every column of the stages' tables (test_by_site's as the worst
    # site's figures), and nothing else
    stages = {*leaderboard.trials_schema(["lr"]).names, *leaderboard.TEST.names,
              *(name for name, _ in (*leaderboard.ENSEMBLE_COLUMNS, *leaderboard.REFIT_COLUMNS,
                                     *leaderboard.TEST_WORST_COLUMNS))}
    assert stages == set(leaderboard.schema(["lr"]).names)


def _full_report() -> EpochReport:
    facts = TrialFacts(params=10, trainable_params=5, unfreeze_depth_effective=1, stage_groups=2,
                       backbone_activation="relu", workers=1, device="cpu", precision="fp32",
                       node_ip="127.0.0.1", node_id="n", backbone_weights="w.pth sha256:9a129038d9a0")
    metrics = leuktune.metrics.METRICS
    return EpochReport(epoch=1, train_loss=0.5, val={m: 0.5 for m in metrics}, val_se={m: 0.05 for m in metrics},
                       val_confusion_matrix=[[1]], facts=facts, phase_seconds={"train": 1.0, "validate": 0.1})


def test_every_field_an_epoch_reports_has_a_column_or_is_excluded_on_purpose():
    columns = set(leaderboard.schema([]).names) | set(leaderboard.HISTORY.names)
    flat = _full_report().to_result()
    unstored = {key for key in flat if key not in columns
                and key not in NOT_STORED and not (key.startswith("time_") and "time_*_s" in NOT_STORED)}
    assert not unstored, f"reported but neither stored nor listed in results.NOT_STORED: {sorted(unstored)}"
    # and nothing listed as not stored has a column after all
    assert not set(NOT_STORED) & columns
    # what Tune hands back reads as what was reported
    assert EpochReport.from_result({**flat, "training_iteration": 1, "trial_id": "x"}) == _full_report()


def test_the_private_framework_names_leuktune_relies_on_still_exist():
    searcher = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="score", mode="max")
    for attribute in internals.OPTUNA_SEARCH_ATTRIBUTES:
        assert hasattr(searcher, attribute), f"OptunaSearch has no {attribute} any more (see leuktune/internals.py)"
    assert internals.optuna_study(searcher) is not None and internals.optuna_trials(searcher) == {}
    asha = ASHAScheduler(metric="val_balanced_accuracy", mode="max", time_attr="validation", max_t=4)
    for attribute in internals.ASHA_ATTRIBUTES:
        assert hasattr(asha, attribute), f"ASHAScheduler has no {attribute} any more (see leuktune/internals.py)"
    assert internals.asha_settings(asha) == ("val_balanced_accuracy", "max", "validation", 4)
    assert isinstance(internals.ray_train_worker_logger(), logging.Logger)
    importlib.import_module(internals.TUNE_STORAGE_LOGGER)  # the logger is named by this module


def test_every_head_kind_the_config_accepts_is_built_and_has_a_default_activation():
    assert set(DEFAULT_ACTIVATION) == set(HEAD_KINDS)
    options = dict(in_features=8, spatial_features=8, num_classes=3, dropout=0.0, activation="relu", mlp_hidden=4,
                   mlp_layers=1, attention_heads=2, attention_dim=8)
    heads = {kind: build_head(kind, **options) for kind in HEAD_KINDS}
    assert all(isinstance(head, torch.nn.Module) for head in heads.values())
    # the config's probes are the heads the loop fits rather than steps
    assert {kind for kind, head in heads.items() if head.fitted} == set(PROBE_HEADS)
    with pytest.raises(ValueError, match="expected one of linear, mlp, attention"):
        build_head("transformer", **options)
