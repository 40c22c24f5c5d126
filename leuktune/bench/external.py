"""Does a model hold at another lab? The built-in set searched with and without stain
augmentation and stain normalisation, each search's best trial and ensemble scored on its own
test split and on the synthetic second site (another lab's stain and magnification, other
cells), side by side."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from leuktune.bench.strategies import EXTERNAL_VARIANTS
from leuktune.config import load
from leuktune.data import synthetic
from leuktune.evaluation.external import ExternalSet
from leuktune.run import Run
from leuktune.runtime import ray_session
from leuktune.tuning.driver import search


def bench_external(trials: int, workdir: str, overrides: list[str], variants: list[str]) -> pd.DataFrame:
    work = Path(workdir).resolve()
    base = load(None, overrides)
    params = base.data.synthetic.model_dump()
    home = synthetic.generate(work / "home", **params)
    other = synthetic.generate(work / "site1", **{**params, "seed": params["seed"] + 1000, "site": 1})
    rows = []
    with ray_session(logging_level="ERROR"):
        for variant in variants:
            started = time.time()
            name = f"external-{variant.replace(' ', '-')}-{time.strftime('%H%M%S')}"
            settings = [s.format(home=home) for s in EXTERNAL_VARIANTS[variant]]
            search(overrides=[f"storage.path={work}", f"name={name}", f"data.root={home}",
                              f"search.num_samples={trials}", *overrides, *settings], echo=lambda message: None)
            run = Run.open(work / name)
            run.evaluate(external=ExternalSet(str(other), name="site1"), echo=lambda message: None)
            for row in run.external().itertuples():
                rows.append({"variant": variant, "model": row.trial_id,
                             "internal test": round(row.internal_test_balanced_accuracy, 4),
                             "site 2": round(row.external_balanced_accuracy, 4),
                             "site 2 95% CI": f"{row.low:.3f}-{row.high:.3f}", "seconds": round(time.time() - started)})
            print(f"{variant}: {rows[-1]}", flush=True)
    out = pd.DataFrame(rows)
    print("\nbalanced accuracy, the home site's test split vs the second site (all its images)\n")
    print(out.to_string(index=False))
    return out
