"""Which way of choosing a model holds at a lab no trial ever saw? Leave-one-lab-out over the labs
given: each lab in turn is held out of the whole search (its cells are the test split, whole,
``data.test_sites``), and the same trial budget is spent three ways on the others:

- ``home``: one lab's cells (``--home``) split train/val: the search rewards what fits one lab;
- ``pooled``: every other lab's cells pooled, validation drawn from the same labs (in-distribution);
- ``sites``: the same pool, each trial trained once per training lab left out and judged on the
  lab it did not see (``search.cv: sites``).

Each with the cross-site levers fixed off and searched (``LEVERS``). The figure is the balanced
accuracy of the search's pick (its leaderboard's top trial) on the held-out lab, over the classes
that lab has; a table gives it per held-out lab, and the mean and worst over them, with the
search's trial-seconds. Without ``--labs``, the built-in set's four labs (each its own stain,
magnification and focus).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd

from leuktune.bench.selection import located, pick
from leuktune.runtime import ray_session
from leuktune.tuning.driver import search

MODES = {"home": "one lab, its own validation split", "pooled": "other labs pooled, in-distribution validation",
         "sites": "other labs pooled, search.cv: sites"}
# The cross-site levers as the search draws them (#39); "off" leaves each at its default.
LEVERS = {"off": [], "on": ["train.scale_augment={uniform: [1.0, 2.0]}", "train.color_strength={uniform: [0.5, 2.0]}",
                            "train.blur={uniform: [0.0, 1.5]}", "train.grayscale={uniform: [0.0, 0.3]}"]}
BUILTIN_LABS = {"home": 0, "tehran": 1, "bogota": 2, "far": 3}  # the built-in set's labs (synthetic.site)


def _site(root: str) -> str:
    source, path = located(root)
    return f"{{source: {source}, root: '{path}'}}"


def lab_entries(labs: dict[str, str]) -> dict[str, str]:
    """Each lab's ``data.sites`` entry (YAML flow text): a folder or manifest, or with no labs given the
    built-in set's four labs."""
    if labs:
        return {name: _site(root) for name, root in labs.items()}
    return {name: f"{{source: synthetic, synthetic: {{site: {site}, seed: {site}}}}}"
            for name, site in BUILTIN_LABS.items()}


def search_settings(entries: dict[str, str], held_out: str, mode: str, home: str, classes: list[str]) -> list[str]:
    """The overrides of one search: which labs it reads, the held-out one its test split."""
    training = [home] if mode == "home" else [name for name in entries if name != held_out]
    sites = ", ".join(f"{name}: {entries[name]}" for name in [*training, held_out])
    settings = [f"data.sites={{{sites}}}", f"data.test_sites=[{held_out}]"]
    if classes:  # one set of class names over the labs; a lab's other classes are left out, and said
        settings += ["data.classes={" + ", ".join(f"{c}: []" for c in classes) + "}", "data.unmapped=skip"]
    if mode == "sites":
        settings.append("search.cv=sites")
    return settings


def _summary(rows: pd.DataFrame) -> pd.DataFrame:
    figure = "held-out balanced accuracy"
    grouped = rows.groupby(["mode", "levers"], sort=False)
    return pd.DataFrame({"mean": grouped[figure].mean().round(3), "worst": grouped[figure].min().round(3),
                         "labs": grouped[figure].count(),
                         "trial-seconds": grouped["trial-seconds"].sum().round(0)}).reset_index()


def bench_sites(labs: dict[str, str], home: str | None, held_out: list[str], modes: list[str], levers: list[str],
                classes: list[str], trials: int, workdir: str, overrides: list[str]) -> pd.DataFrame:
    entries = lab_entries(labs)
    home = home or next(iter(entries))
    unknown = sorted({home, *held_out} - set(entries))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not among the labs ({', '.join(entries)})")
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    with ray_session(logging_level="ERROR"):
        for lab in held_out or list(entries):
            for mode in modes:
                if mode == "home" and lab == home:
                    continue  # nothing to train on: the home lab is the one held out
                for lever in levers:
                    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"sites-{lab}-{mode}-levers-{lever}-{time.strftime('%H%M%S')}")
                    started = time.time()
                    search(overrides=[f"storage.path={work}", f"name={name}", f"search.num_samples={trials}",
                                      *overrides, *search_settings(entries, lab, mode, home, classes),
                                      *LEVERS[lever]], echo=lambda message: None)
                    chosen = pick(work / name)
                    rows.append({"held-out lab": lab, "mode": mode, "levers": lever,
                                 "held-out balanced accuracy": round(float(chosen["test balanced accuracy"]), 4),
                                 "val": round(float(chosen["val"]), 4), "trial-seconds": round(chosen["trial-seconds"]),
                                 "wall seconds": round(time.time() - started), "run": name})
                    print(f"{lab} {mode} levers {lever}: {rows[-1]}", flush=True)
                    pd.DataFrame(rows).to_csv(work / "bench-sites.csv", index=False)  # kept as it goes
    out = pd.DataFrame(rows)
    print("\nthe pick's balanced accuracy on the held-out lab, per lab\n")
    print(out.drop(columns=["run"]).to_string(index=False))
    print(f"\nover the held-out labs ({', '.join(MODES[m] for m in modes)}), {trials} trials a search\n")
    print(_summary(out).to_string(index=False))
    return out
