"""The documentation cannot rot: the configuration reference is every key of the schema with its
help, the API and error pages name every public name, the README's links lead somewhere, and every
block of the getting-started page runs as written. (The site itself is built strictly by .ci/run.)"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pydantic import Field

import leuktune
from leuktune.config import ExperimentConfig
from leuktune.config.distributions import Strict, searchable
from leuktune.config.keys import keys, reference_markdown
from leuktune.config.schema import SEARCHABLE_FIELDS, VALUE_TYPES

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# A fenced block of a page; the line before it may say it is not run (and why).
BLOCK = re.compile(r"(?:<!-- (not run[^>]*)-->\n)?```(bash|python)\n(.*?)```", re.S)


def _dotted(raw: dict, prefix: str = "") -> set[str]:
    """Every key of a dumped config, dotted (a section's keys under its name)."""
    found = set()
    for key, value in raw.items():
        found.add(prefix + key)
        if isinstance(value, dict) and key not in SEARCHABLE_FIELDS:  # a distribution is one value
            found |= _dotted(value, f"{prefix}{key}.")
    return found


def test_the_configuration_reference_lists_every_key_with_one_help_and_its_searchability():
    listed = {key.name: key for key in keys()}
    dumped = _dotted(ExperimentConfig().to_dict())
    assert dumped <= set(listed), f"keys missing from the reference: {sorted(dumped - set(listed))}"
    assert {"data.sites.<name>.source", "data.sites.<name>.synthetic.site"} <= set(listed)  # inside a mapping too
    helpless = [name for name, key in listed.items() if not key.help]
    two_owners = [f"{name}: {key.helped_by}" for name, key in listed.items() if len(key.helped_by) > 1]
    assert not helpless, f"keys without help (a comment above the field in leuktune/config): {helpless}"
    assert not two_owners, f"keys whose help is written twice: {two_owners}"
    searchable_keys = {name.rsplit(".", 1)[1] for name, key in listed.items() if key.searchable}
    assert searchable_keys == set(VALUE_TYPES)  # every field made with searchable(), and only those
    assert listed["model.mlp_hidden"].searchable == "choice, int (drawn when head is mlp)"
    assert listed["train.lr"].default == "{loguniform: [0.001, 0.01]}" and listed["train.lr"].type == "number > 0"
    page = reference_markdown()
    assert all(f"`{name}`" in page for name in listed)


class _Sample(Strict):
    """A section to read the help of."""

    # The help of a, above it.
    a: int = 1
    b: int = 2
    c: float = Field(0.5, ge=0, description="c's help")  # and a second owner
    d: searchable(int, "choice") = 3  # d's help


def test_help_is_read_from_the_comment_the_line_or_the_description_and_a_missing_one_shows():
    found = {key.name: key for key in keys(_Sample)}
    assert found["a"].help == "The help of a, above it." and found["a"].helped_by == ("comment",)
    assert found["b"].help == "" and found["b"].helped_by == ()
    assert found["c"].helped_by == ("trailing comment", "description") and found["c"].type == "number ≥ 0"
    assert found["d"].help == "d's help" and found["d"].searchable == "choice" and found["d"].type == "integer"


def test_the_error_page_names_every_member_of_the_family():
    family = set()
    for path in (REPO / "leuktune").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", "") == "LeuktuneError" for b in node.bases):
                module = ".".join(path.relative_to(REPO).with_suffix("").parts)
                family.add(f"::: {module}.{node.name}")
    page = (DOCS / "reference" / "errors.md").read_text()
    assert len(family) > 10 and not family - set(page.splitlines()), sorted(family - set(page.splitlines()))


def test_the_api_page_documents_every_public_name_where_it_is_defined():
    page = set((DOCS / "reference" / "api.md").read_text().splitlines())
    for name in leuktune.__all__:
        if name.startswith("__"):
            continue
        found = getattr(leuktune, name)
        assert f"::: {found.__module__}.{found.__qualname__}" in page, name


def test_the_readme_fits_on_a_screen_and_its_links_lead_to_files():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 150
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert targets and all((REPO / t).exists() for t in targets), [t for t in targets if not (REPO / t).exists()]


def getting_started_blocks() -> list[tuple[str, str]]:
    """The getting-started page's runnable blocks, in order: (bash or python, code)."""
    return [(lang, code) for skip, lang, code in BLOCK.findall((DOCS / "getting-started.md").read_text()) if not skip]


@pytest.mark.slow
def test_every_block_of_the_getting_started_page_runs_as_written(tmp_path, ray_runtime):
    import ray

    # As a newcomer's shell: `python` is this environment's, in an empty folder; the commands join
    # this session's Ray (RAY_ADDRESS) rather than each starting one.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    blocks, printed = getting_started_blocks(), []
    assert [lang for lang, _ in blocks] == ["bash", "bash", "bash", "bash", "python", "python", "bash"]
    for lang, code in blocks:
        command = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{code}\n{proc.stderr[-3000:]}"
        printed.append(proc.stdout)
    board = leuktune.load_leaderboard(tmp_path / "runs" / "my-cells")
    assert (tmp_path / "runs" / "synthetic-default" / "leaderboard.parquet").exists()
    trials = board[board["trial_id"] != "ensemble"]
    assert len(trials) == 2 and set(trials["backbone"]) <= {"test_resnet", "test_efficientnet"}
    assert "90 images, 3 classes" in printed[2]  # the check of the folder
    # the leaderboard as printed is the run's, best first; the test figures are the best trial's
    assert [line.split()[1] for line in printed[4].strip().splitlines()[1:]] == list(board["trial_id"])
    scores = dict(re.findall(r"'(test_\w+)': ([0-9.e-]+)", printed[5]))
    assert float(scores["test_balanced_accuracy"]) == pytest.approx(trials.iloc[0]["test_balanced_accuracy"], abs=1e-6)
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == 30 and set(predictions["class"]) <= {"ALL", "CLL", "healthy"}
    assert printed[6].splitlines()[0] == "input,class,probability,error,p_ALL,p_CLL,p_healthy"
