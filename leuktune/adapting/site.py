"""``Run.adapt``: a run's best trial and its ensemble adapted to a new lab with a few of the lab's
labelled cells, each ``per_class`` written once into the run, and the curve of how they do on the
lab's held-out cells.

The lab's cells are read as the run's were (``leuktune.evaluation.external``: classes matched by
name or mapped, an unknown class refused by name); ``per_class`` cells of each class are drawn
(``leuktune.adapting.draw``) and the rest, less the other cells of the drawn patients, are the test,
never handed to a step (``cells.parquet`` says which steps saw each cell). Unlabelled cells (a folder
of the lab's images) feed the label-free steps; any that is a test cell is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from leuktune import leaderboard, runfolder
from leuktune.adapting import store
from leuktune.adapting.adaptation import Lab
from leuktune.adapting.adapter import Adapted, adapt
from leuktune.adapting.cells import Cells, Seen, no_cells, read_unlabelled
from leuktune.adapting.colour import colour_map, log_statistics
from leuktune.adapting.curve import COLUMNS, figures
from leuktune.adapting.draw import draw
from leuktune.adapting.plan import Plan
from leuktune.config import ConfigError
from leuktune.evaluation.external import ExternalSet, read_external
from leuktune.leaderboard import ENSEMBLE_ID
from leuktune.metrics.calibration import rescale
from leuktune.runfolder import RunFolder
from leuktune.runfolder.lock import SearchLock
from leuktune.trained import Trained, load, trial_row


def sources(folder: RunFolder, trial: str | None) -> list[tuple[str, str, str]]:
    """(model id, role, location relative to the run) of what is adapted: the trial (default: the
    best with a checkpoint) and the ensemble where the run has one (``trial="ensemble"``: it alone)."""
    out = []
    if trial != ENSEMBLE_ID:
        row = trial_row(folder, trial)
        out.append((str(row["trial_id"]), "trial" if trial else "best trial", folder.relative(row["checkpoint_uri"])))
    if folder.exists(runfolder.ENSEMBLE):
        out.append((ENSEMBLE_ID, "ensemble", runfolder.ENSEMBLE))
    elif trial == ENSEMBLE_ID:
        raise ConfigError(f"{folder.uri()}: no ensemble ({runfolder.ENSEMBLE}) to adapt")
    return out


def _per_class(per_class: int | Sequence[int]) -> list[int]:
    counts = sorted({int(n) for n in ([per_class] if isinstance(per_class, int) else per_class)})
    if not counts or counts[0] < 1:
        raise ConfigError(f"per_class {per_class}: labelled cells a class, 1 or more (0, the unadapted model, is "
                          "always on the curve)")
    return counts


def _home_colour(model: Trained) -> tuple[list[float], list[float]]:
    """The colour statistics of the run's training images, as the model saw them."""
    data = model.data()
    return log_statistics(data.pixels()[data.indices("train")])


def _cells_table(table: pd.DataFrame, roles: np.ndarray, unlabelled: Cells, seen: Seen) -> pd.DataFrame:
    lab = table[["path", "label", "group"]].assign(role=roles)
    extra = pd.DataFrame({"path": list(unlabelled.paths), "label": None, "group": None, "role": "unlabelled"})
    cells = pd.concat([lab, extra], ignore_index=True).astype({"group": str})
    cells["seen_by"] = [",".join(seen.of(p)) for p in cells["path"]]
    return cells


def adapt_run(folder: RunFolder, labelled, *, per_class: int | Sequence[int] = 10, unlabelled: str | Path | None = None,
              trial: str | None = None, name: str | None = None, seed: int = 0, plan: Plan | None = None,
              device: str | None = None, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """See ``leuktune.Run.adapt``; returns the curve (``curve.COLUMNS``)."""
    ext = labelled if isinstance(labelled, ExternalSet) else ExternalSet(str(labelled))
    name = name or ext.label
    counts, plan = _per_class(per_class), plan or Plan()
    store.claim(folder, name)
    with SearchLock(folder):  # not while a search writes the same run
        cfg, board = folder.config(), leaderboard.load(folder.uri())
        models = sources(folder, trial)
        home = board.set_index("trial_id")["test_balanced_accuracy"]
        first = load(folder.located(models[0][2]), device=device, run=folder)
        lab = read_external(ext, cfg, first.classes, folder, echo, [first.stain_normalizer])
        groups = pd.factorize(lab.table["group"])[0]
        cells = Cells(lab.pixels, tuple(lab.table["path"]), lab.table["y"].to_numpy(), groups)
        drawn = draw(lab.table["label"].to_numpy(), groups, counts, seed, where=f"{ext.root}")
        test = cells.subset(drawn.test)
        extra = read_unlabelled(str(unlabelled), first.load_images, test, echo) if unlabelled else \
            no_cells(cfg.data.image_size)
        home_colour = _home_colour(first) if "colour" in plan.steps else None
        echo(f"[leuktune] adapting to {name}: {len(cells)} cells, {len(drawn.test)} held out to test on, "
             f"{len(extra)} unlabelled; {', '.join(map(str, counts))} labelled a class; steps {', '.join(plan.steps)}")
        rows = []

        def row(n: int, model_id: str, role: str, model: Trained, **extra_columns) -> dict:
            probs = rescale(model.probabilities(test.pixels), model.temperature)
            scores = figures(test.labels, probs, test.groups, resamples=cfg.evaluate.bootstrap, seed=seed)
            rows.append({"set": name, "per_class": n, "model": model_id, "role": role, "test": len(test),
                         "home_test_balanced_accuracy": float(home.get(model_id, np.nan)), **scores,
                         **extra_columns})
            return scores

        for model_id, role, relative in models:
            row(0, model_id, role, load(folder.located(relative), device=device, run=folder), steps="", labelled=0,
                unlabelled=0, location=relative)
        for n in counts:
            labelled_cells = cells.subset(drawn.labelled[n])
            colour = colour_map(log_statistics((labelled_cells + extra).pixels), home_colour) if home_colour else None
            seen = Seen()
            for model_id, role, relative in models:
                source = load(folder.located(relative), device=device, run=folder)  # fresh: changed in memory only
                where = runfolder.adapted(name, n, model_id)
                result: Adapted = adapt(source, Lab(labelled_cells, extra, colour), plan, seed=seed, site=name,
                                        source_location=relative, source_id=model_id,
                                        location=folder.uri(folder.file(where)), echo=echo)
                scores = row(n, model_id, role, result.model, steps="+".join(result.steps) or "none",
                             labelled=len(labelled_cells), unlabelled=len(extra), seconds=round(result.seconds, 1),
                             cv_balanced_accuracy=result.figures.get(result.candidate.name, {}).get(
                                 "balanced_accuracy", np.nan), location=where)
                record = result.model.record
                record.cells["test"], record.figures["test"] = len(test), scores
                store.write_model(folder, name, n, model_id, record, result.tensors)
                for step, paths in result.seen.steps.items():
                    seen.steps.setdefault(step, set()).update(paths)
                echo(f"[leuktune] {name}, {n} a class, {model_id}: {'+'.join(result.steps) or 'nothing'} "
                     f"({result.seconds:.1f}s); balanced accuracy {scores['balanced_accuracy']:.3f} (95% CI "
                     f"{scores['balanced_accuracy_low']:.3f}-{scores['balanced_accuracy_high']:.3f}) on {len(test)} "
                     f"held-out cells" + "".join(f"; {note}" for note in result.notes))
            roles = np.full(len(cells), "test", dtype=object)
            roles[drawn.aside] = "aside"
            roles[drawn.labelled[max(counts)]] = "aside"  # drawn for a larger per_class: neither used nor tested
            roles[drawn.labelled[n]] = "labelled"
            folder.write_table(runfolder.adapted(name, n, store.CELLS), _cells_table(lab.table, roles, extra, seen))
        curve = pd.DataFrame(rows).reindex(columns=COLUMNS)
        folder.write_table(runfolder.adapted(name, part=store.CURVE), curve)
    return curve
