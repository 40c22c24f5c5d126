"""Does adapting to a new lab pay, step by step? A home run's best trial (and its ensemble, if asked)
adapted to each other lab with 0, 5, 10, 20, 50 labelled cells a class: each step alone, the steps
chosen by cross-validation, and the plain fine-tune of issue #38 (``adapt_plain``), over seeds. For
each lab and seed, the cells left after the draw are halved (whole groups): one half is handed to
adapting as unlabelled cells, the other is scored. Nothing is written into the run."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import pandas as pd

from leuktune.adapting import MARGIN, Cells, Lab, Plan, adapt, draw
from leuktune.adapting.colour import colour_map, log_statistics
from leuktune.adapting.draw import halves
from leuktune.adapting.plan import STEPS
from leuktune.adapting.site import sources
from leuktune.bench.adapt_plain import plain_fine_tune
from leuktune.config import load as load_config
from leuktune.data import synthetic
from leuktune.data.files import DataError
from leuktune.evaluation.external import ExternalSet, read_external
from leuktune.metrics import classification_metrics
from leuktune.metrics.calibration import rescale
from leuktune.run import Run
from leuktune.runtime import ray_session
from leuktune.trained import load
from leuktune.tuning.driver import search

PLAIN = "plain fine-tune"
VARIANTS: dict[str, Plan | None] = {
    **{f"{step} alone": Plan(steps=(step,), choose=False) for step in STEPS},
    "chosen (default steps)": Plan(),
    "chosen (every step)": Plan(steps=STEPS),
    PLAIN: None,
}


def _home(run: str | None, trials: int, work: Path, overrides: list[str]) -> tuple[Run, list[str]]:
    """The home run (searched on the built-in set when none is given) and its other labs by default."""
    if run:
        return Run.open(run), []
    params = load_config(None, overrides).data.synthetic.model_dump()
    home = synthetic.generate(work / "home", **params)
    other = synthetic.generate(work / "site1", **{**params, "seed": params["seed"] + 1000, "site": 1})
    name = f"adapt-home-{time.strftime('%H%M%S')}"
    search(overrides=[f"storage.path={work}", f"name={name}", f"data.root={home}", f"search.num_samples={trials}",
                      *overrides], echo=lambda message: None)
    return Run.open(work / name), [str(other)]


def _score(model, cells: Cells) -> dict[str, float]:
    probs = rescale(model.probabilities(cells.pixels), model.temperature)
    scores = classification_metrics(cells.labels, probs)
    nll = float(-np.log(np.clip(probs[np.arange(len(cells)), cells.labels], 1e-12, 1)).mean())
    return {"balanced_accuracy": scores["balanced_accuracy"], "f1_macro": scores["f1_macro"], "log_loss": nll}


def _feasible(labels: np.ndarray, per_class: list[int], lab: str) -> list[int]:
    fewest = int(np.unique(labels, return_counts=True)[1].min())
    kept = [n for n in per_class if n + MARGIN <= fewest]
    if len(kept) < len(per_class):
        print(f"{lab}: its smallest class has {fewest} cells: per_class {[n for n in per_class if n not in kept]} "
              f"left out (each needs per_class + {MARGIN})", flush=True)
    return kept


def bench_adapt(run: str | None, labs: list[str], classes: dict[str, str], per_class: list[int], variants: list[str],
                seeds: list[int], models: list[str], trials: int, workdir: str, overrides: list[str]) -> pd.DataFrame:
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    with ray_session(logging_level="ERROR"):
        home, built_in = _home(run, trials, work, overrides)
        labs = labs or built_in
        if not labs:
            raise DataError("bench adapt: name the other labs (--labs ROOT ...): class folders of the run's classes")
        folder, cfg = home.folder, home.config
        chosen = [m for m in sources(folder, None) if ("ensemble" if m[0] == "ensemble" else "best") in models]
        first = load(folder.located(chosen[0][2]), device="cpu", run=folder)
        data = first.data()
        home_colour = log_statistics(data.pixels()[data.indices("train")])
        for root in labs:
            lab = read_external(ExternalSet(root, classes=classes), cfg, first.classes, folder, lambda message: None)
            name = Path(root).name
            groups = pd.factorize(lab.table["group"])[0]
            cells = Cells(lab.pixels, tuple(lab.table["path"]), lab.table["y"].to_numpy(), groups)
            counts = _feasible(lab.table["label"].to_numpy(), [n for n in per_class if n > 0], name)
            for seed in seeds:
                drawn = draw(lab.table["label"].to_numpy(), groups, counts, seed, where=root)
                unlabelled_rows, scored_rows = halves(drawn.test, cells.labels, groups, seed)
                extra, scored = cells.subset(unlabelled_rows).unlabelled(), cells.subset(scored_rows)
                base = {"lab": name, "seed": seed, "scored": len(scored), "unlabelled": len(extra)}
                for model_id, role, relative in chosen:
                    fresh = functools.partial(load, folder.located(relative), device="cpu", run=folder)
                    rows.append({**base, "model": role, "variant": "unadapted", "per_class": 0,
                                 **_score(fresh(), scored), "seconds": 0.0})
                    for n in counts:
                        labelled = cells.subset(drawn.labelled[n])
                        colour = colour_map(log_statistics((labelled + extra).pixels), home_colour)
                        for variant in variants:
                            started, plan = time.perf_counter(), VARIANTS[variant]
                            if plan is None:
                                model, steps = plain_fine_tune(fresh(), labelled, extra, seed=seed), "plain"
                            else:
                                result = adapt(fresh(), Lab(labelled, extra, colour), plan, seed=seed)
                                model, steps = result.model, "+".join(result.steps) or "none"
                            rows.append({**base, "model": role, "variant": variant, "per_class": n, "steps": steps,
                                         **_score(model, scored), "seconds": round(time.perf_counter() - started, 1)})
                            print(f"{name} seed {seed} {role} {n} a class, {variant}: {rows[-1]['steps']} "
                                  f"{rows[-1]['balanced_accuracy']:.3f} ({rows[-1]['seconds']}s)", flush=True)
    out = pd.DataFrame(rows)
    out.to_csv(work / "bench-adapt.csv", index=False)
    print(f"\n{summary(out)}\n\nevery row: {work / 'bench-adapt.csv'}")
    return out


def summary(out: pd.DataFrame) -> str:
    """Mean balanced accuracy over seeds (lowest-highest) per lab, model and variant (rows) and per_class
    (columns); the unadapted model's figure is the per_class 0 column of every variant."""
    unadapted = out[out["variant"] == "unadapted"]
    adapted = out[out["variant"] != "unadapted"]
    filled = pd.concat([adapted] + [unadapted.assign(variant=v) for v in adapted["variant"].unique()])
    cell = filled.groupby(["lab", "model", "variant", "per_class"])["balanced_accuracy"].agg(["mean", "min", "max"])
    text = cell.apply(lambda r: f"{r['mean']:.3f} ({r['min']:.2f}-{r['max']:.2f})", axis=1).unstack("per_class")
    seconds = adapted.groupby(["lab", "model", "variant"])["seconds"].mean().round(1)
    text["seconds (mean)"] = seconds.reindex(text.index)
    return ("balanced accuracy on each lab's scored half, mean over seeds (lowest-highest), by labelled cells a class\n"
            + text.reset_index().to_string(index=False))
