"""External test sets: the evaluated trials and the ensemble scored on another dataset (another
hospital, microscope, stain), read by the data layer as the run's own images were.

White-cell classifiers are known to drop sharply across sites; one split of one site says
nothing of that. Each set's classes are matched to the model's by name or by a map
(``theirs=ours``); a class the model does not know is refused by name. Bad files are named
(the run's ``data.on_bad_image``), and images identical or near-identical to the run's training
images are reported (they would flatter the external figure). Per set, in the run folder:
``external/<name>.parquet`` (each model's metrics with 95% intervals, resampling the set's
groups; ``variant`` plain, and patient where the set's groups are patients, as in the final
evaluation), ``external/<name>.predictions.parquet`` (each image's site and probabilities) and
``external/<name>.by_site.parquet`` (each model's figures per site, as the final evaluation's
``test_by_site.parquet``: a CSV manifest's ``site`` column names a set's labs).

>>> parse_classes("hem=healthy, all=ALL")
{'hem': 'healthy', 'all': 'ALL'}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from leuktune.config import ConfigError, ExperimentConfig
from leuktune.config.data import DataConfig
from leuktune.data import cache, sources, stain
from leuktune.data.duplicates import close_pairs
from leuktune.data.sites import SITE
from leuktune.data.sources import DataError
from leuktune.evaluation.bootstrap import metric_rows
from leuktune.evaluation.by_site import absent_lines, model_line, several, site_figures
from leuktune.evaluation.patients import VARIANT as PATIENT, patient_figures
from leuktune.metrics.calibration import rescale
from leuktune import leaderboard, runfolder, uris
from leuktune.trained import load_model

SOURCES = ("imagefolder", "cnmc", "allidb", "csv")


@dataclass(frozen=True)
class ExternalSet:
    """Another dataset to score: its ``root`` (a folder, a bucket prefix, or a CSV manifest),
    how it is laid out (``source``), and a map of its class names to the model's."""

    root: str
    source: str = "imagefolder"
    classes: dict[str, str] = field(default_factory=dict)
    name: str | None = None

    @property
    def label(self) -> str:
        """The set's name in file names and the report: ``name``, else the root's last part
        (letters, digits, - and _; a CSV manifest's ``lab-b.csv`` is ``lab-b_csv``)."""
        parent, last = uris.split_last(str(self.root).rstrip("/"))
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in (self.name or last or parent))


def parse_classes(text: str | None) -> dict[str, str]:
    """``'theirs=ours,...'`` -> {theirs: ours}; a ConfigError names an item without ``=``."""
    mapping = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        theirs, sep, ours = item.partition("=")
        if not sep or not theirs.strip() or not ours.strip():
            raise ConfigError(f"--classes {text!r}: {item!r} is not theirs=ours, e.g. --classes 'hem=healthy,all=ALL'")
        mapping[theirs.strip()] = ours.strip()
    return mapping


@dataclass
class ExternalData:
    table: pd.DataFrame  # path, label (the model's class name), group, site, y (class id)
    rejected: pd.DataFrame  # path, label, error
    near_training: pd.DataFrame  # path, training_path, distance (0: identical pixels)
    # the pixels by stain normaliser (``stain_key``), in the order they were asked for: a search that
    # drew data.stain_normalize has trials normalised each its own way
    by_stain: dict[str, np.ndarray]

    @property
    def pixels(self) -> np.ndarray:
        """The pixels as the first normaliser asked for made them."""
        return next(iter(self.by_stain.values()))

    def for_model(self, model) -> np.ndarray:
        """The pixels as ``model``'s own images were normalised."""
        return self.by_stain.get(stain_key(model.stain_normalizer), self.pixels)


def stain_key(normalizer) -> str:
    """One name per stain normaliser (method and reference), ``off`` for none."""
    return normalizer.key if normalizer else "off"


def read_external(ext: ExternalSet, cfg: ExperimentConfig, classes: tuple[str, ...], folder,
                  progress: Callable[[str], None] = print, normalizers: Sequence | None = None) -> ExternalData:
    """The set's images decoded as the run's were (size, resize mode, decode-once cache), its
    classes mapped to the model's, and its overlap with the run's training images. ``normalizers``:
    the stain normalisers of the models that score it (``Trained.stain_normalizer``), each decoded
    once (default: the run's data.stain_normalize, which must then name one method)."""
    if ext.source not in SOURCES:
        raise ConfigError(f"external set {ext.root}: source must be one of {', '.join(SOURCES)}, got {ext.source!r}")
    # the set is one source of its own: a run's data.sites and data.test_sites are not its layout
    data = DataConfig.model_validate({**cfg.data.model_dump(exclude={"synthetic", "cache_dir", "split", "sites",
                                                                     "test_sites"}),
                                      "source": ext.source, "root": str(ext.root)})
    manifest = sources.manifest(data, folder.datasets)
    mapped = manifest["label"].map(lambda label: ext.classes.get(label, label))
    unknown = sorted(set(mapped) - set(classes))
    if unknown:
        raise DataError(f"external set {ext.root}: class {unknown[0]!r} is not one the model knows (its classes: "
                        f"{', '.join(classes)}); map it with --classes '{unknown[0]}=<one of them>'"
                        + (f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""))
    manifest = manifest.assign(label=mapped)
    unique = {stain_key(n): n for n in (normalizers if normalizers is not None else [stain.from_config(data)])}
    scans = {key: cache.scan(manifest, data.image_size, data.resize, folder.cache, progress, n)
             for key, n in unique.items()}
    normalizer, scanned = next(iter(unique.values())), next(iter(scans.values()))
    rejected = scanned.rejected(manifest)
    if len(rejected) and cfg.data.on_bad_image == "error":
        listed = "; ".join(f"{r.path}: {r.error}" for r in rejected.itertuples())
        raise DataError(f"external set {ext.root}: {len(rejected)} file(s) cannot be used: {listed}. Fix or remove "
                        "them, or search with data.on_bad_image: skip to leave them out")
    keep = np.flatnonzero(scanned.usable)
    table = manifest.iloc[keep].reset_index(drop=True)
    table["y"] = table["label"].map({c: i for i, c in enumerate(classes)}).astype(np.int64)
    info = scanned.info.iloc[keep].reset_index(drop=True)
    by_stain = {key: np.asarray(scan.pixels)[keep] for key, scan in scans.items()}
    return ExternalData(table[["path", "label", "group", SITE, "y"]], rejected,
                        _near_training(info, cfg, folder, normalizer, progress), by_stain)


def _near_training(info: pd.DataFrame, cfg: ExperimentConfig, folder, normalizer, progress) -> pd.DataFrame:
    """The external images identical or near-identical (perceptual hash) to a training image."""
    split = folder.read_frame(runfolder.SPLIT)
    trained = split[split["split"] == "train"].reset_index(drop=True)
    seen = cache.scan(trained.drop(columns=["split"]), cfg.data.image_size, cfg.data.resize, folder.cache,
                      lambda message: None, normalizer).info
    distance = cfg.data.near_duplicate_distance if cfg.data.near_duplicates != "off" else 0
    rows = []
    identical = dict(zip(seen["content_hash"], seen["path"]))
    for path, digest in zip(info["path"], info["content_hash"]):
        if digest in identical:
            rows.append({"path": path, "training_path": identical[digest], "distance": 0})
    both = pd.concat([info["phash"], seen["phash"]], ignore_index=True)
    n = len(info)
    for i, j, d in close_pairs(both, distance):
        if i < n <= j and d > 0:
            rows.append({"path": info["path"].iloc[i], "training_path": seen["path"].iloc[j - n], "distance": d})
    near = pd.DataFrame(rows, columns=["path", "training_path", "distance"]).drop_duplicates("path")
    if len(near):
        progress(f"[leuktune] WARNING: {len(near)} external image(s) are identical or near-identical to training "
                 f"images, e.g. {near['path'].iloc[0]} ~ {near['training_path'].iloc[0]}")
    return near


def score_external(models: dict, external: ExternalData, cfg: ExperimentConfig
                   ) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(metrics: trial_id, variant, metric, value, low, high, images, groups; predictions: trial_id,
    path, label, site, probs; by site: ``leuktune.leaderboard.SITE_FIGURES``'s rows) of each model
    (trial id -> TrainedModel or EnsembleModel), calibrated as predict gives them; patient-level rows
    where the set's groups are patients."""
    labels, groups, rows = external.table["y"].to_numpy(), external.table["group"].to_numpy(), np.arange(len(external.table))
    sites, classes = external.table[SITE].to_numpy(), next(iter(models.values())).classes
    figures, predictions, per_site = [], [], []
    for trial_id, model in models.items():
        probs = rescale(model.probabilities(external.for_model(model), rows=rows), model.temperature)
        figures += metric_rows(trial_id, "plain", labels, probs, groups, resamples=cfg.evaluate.bootstrap,
                               seed=cfg.data.split.seed, images=len(labels))
        patients, _ = patient_figures(trial_id, labels, probs, groups, resamples=cfg.evaluate.bootstrap,
                                      seed=cfg.data.split.seed)
        figures += [{**row, "images": len(labels)} for row in patients]
        per_site += site_figures(trial_id, labels, probs, groups, sites, classes, resamples=cfg.evaluate.bootstrap,
                                 seed=cfg.data.split.seed)
        predictions.append(pd.DataFrame({"trial_id": trial_id, "path": external.table["path"],
                                         "label": external.table["label"], "site": sites,
                                         "probs": list(probs.astype(np.float64))}))
    columns = ["trial_id", "variant", "metric", "value", "low", "high", "images", "groups"]
    return pd.DataFrame(figures).reindex(columns=columns), pd.concat(predictions, ignore_index=True), per_site


def external_evaluation(folder, cfg: ExperimentConfig, board: pd.DataFrame, sets: list[ExternalSet], device=None,
                        echo: Callable[[str], None] = print) -> None:
    """Score every external set with the trials the final evaluation scored and the ensemble, and
    write each set's tables (``results`` reads them back), with a line per (set, model)."""
    evaluated = board[board["test_balanced_accuracy"].notna()]
    # load_model takes the ensemble's row too (its checkpoint_uri is the run's ensemble.json)
    models = {row["trial_id"]: load_model(row, device=device) for _, row in evaluated.iterrows()}
    if not models:
        raise DataError(f"{folder.uri()}: no trial has been scored on its test split yet; run python -m "
                        "leuktune.evaluate RUN first (external sets are scored with the trials it evaluated)")
    classes = next(iter(models.values())).classes
    for ext in sets:
        external = read_external(ext, cfg, classes, folder, echo, [m.stain_normalizer for m in models.values()])
        metrics, predictions, per_site = score_external(models, external, cfg)
        name = ext.label
        metrics = metrics.assign(set=name, root=str(ext.root), source=ext.source, rejected=len(external.rejected),
                                 near_training=len(external.near_training))
        folder.write_table(runfolder.external(name), metrics)
        folder.write_table(runfolder.external(name, "predictions"), predictions)
        folder.write_table(runfolder.external(name, "by_site"), leaderboard.table(per_site, leaderboard.SITE_FIGURES))
        if len(external.near_training):
            folder.write_table(runfolder.external(name, "near_training"), external.near_training)
        for row in summary(metrics, evaluated).itertuples():
            patient = "" if np.isnan(row.external_patient_balanced_accuracy) else \
                f", {int(row.patients)} patients {_figure(row.external_patient_balanced_accuracy, row.patient_low, row.patient_high)}"
            echo(f"[leuktune] external set {name} ({len(external.table)} images"
                 f"{f', {len(external.rejected)} rejected' if len(external.rejected) else ''}), {row.trial_id}: "
                 f"balanced accuracy {_figure(row.external_balanced_accuracy, row.low, row.high)}{patient}; internal "
                 f"test {row.internal_test_balanced_accuracy:.4f}")
        if several(per_site):  # a set from several labs: each lab's figures, and the classes a lab lacks
            for model in models:
                echo(model_line([r for r in per_site if r["trial_id"] == model], f"external set {name}"))
            for said in absent_lines([r for r in per_site if r["trial_id"] == next(iter(models))], classes):
                echo(said)


def summary(metrics: pd.DataFrame, board: pd.DataFrame) -> pd.DataFrame:
    """A row per (set, model) of external sets' metrics tables: its balanced accuracy there (95%
    interval; over patients where the set names them) beside its internal test figure (``board``)."""
    balanced = metrics[metrics["metric"] == "balanced_accuracy"]
    plain = balanced[balanced["variant"] == "plain"]
    patient = balanced[balanced["variant"] == PATIENT][["set", "trial_id", "value", "low", "high", "groups"]]
    patient = patient.rename(columns={"value": "external_patient_balanced_accuracy", "low": "patient_low",
                                      "high": "patient_high", "groups": "patients"})
    table = plain[["set", "trial_id", "images", "value", "low", "high"]].rename(
        columns={"value": "external_balanced_accuracy"}).merge(patient, on=["set", "trial_id"], how="left")
    internal = board.set_index("trial_id")["test_balanced_accuracy"]
    table.insert(3, "internal_test_balanced_accuracy", table["trial_id"].map(internal))
    return table.astype({"external_patient_balanced_accuracy": float}).reset_index(drop=True)


def results(folder, board: pd.DataFrame) -> pd.DataFrame:
    """Every external set the run holds, read back: ``summary`` of their metrics tables (empty
    before the first)."""
    metrics = leaderboard.external_metrics(folder)
    if metrics.empty:
        return pd.DataFrame(columns=["set", "trial_id", "images", "internal_test_balanced_accuracy",
                                     "external_balanced_accuracy", "low", "high"])
    return summary(metrics, board)


def _figure(value: float, low: float, high: float) -> str:
    return f"{value:.4f} (95% CI {low:.4f}-{high:.4f})"
