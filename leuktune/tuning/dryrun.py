"""``python -m leuktune.search --dry-run``: what a search would do, without doing it.

The experiment is validated, every backbone/head pair built on the meta device, the pretrained
weights looked for; then the resolved search space, the resources a trial takes, how many trials
run at once on the cluster in sight, and the data (when it is reachable: listed, not decoded).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import ray
import torch

from leuktune.config import CONDITIONS, PROBE_HEADS, ConfigError, load, representatives
from leuktune.data import files, folds, sources
from leuktune.models import weights
from leuktune.models.space_check import check_model_space
from leuktune.runfolder import RunFolder
from leuktune.runtime import ray_session
from leuktune.study import StudyError, StudyPlace
from leuktune.tuning.study_setup import warm_trials
from leuktune.tuning.searcher import with_grid_size
from leuktune.training.trainer import concurrent_trials, launcher, trial_resources


def _cluster(address: str | None) -> tuple[dict, str]:
    """(resources, a description): the Ray cluster at ``address`` (or RAY_ADDRESS), else this machine."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        with ray_session(address, logging_level="ERROR"):
            resources = ray.cluster_resources()
        return resources, f"the Ray cluster at {address}"
    return ({"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()},
            f"this machine ({os.cpu_count()} CPUs, {torch.cuda.device_count()} GPUs; Ray not started)")


def _space(cfg) -> list[str]:
    lines = []
    for name, dist in cfg.searched().items():
        spec = ", ".join(map(str, dist.representatives())) if dist.kind == "choice" else \
            f"{dist.kind} [{', '.join(map(str, dist.bounds))}]"
        note = f"  (only when {CONDITIONS[name]})" if name in CONDITIONS else ""
        lines.append(f"  {name}: {spec}{note}")
    return lines or ["  nothing (a single configuration)"]


def _data(cfg) -> list[str]:
    data = cfg.data
    if data.sites:  # several labs: each site's source in a line (the data check lists and counts them)
        return [f"  {len(data.sites)} sites" + (f", tested on {', '.join(data.test_sites)} (whole)" if data.test_sites
                                                 else "")] + \
               [f"    {name}: {s.source} {s.root or ('built-in set, site ' + str(s.synthetic.site))}"
                for name, s in data.sites.items()]
    if data.source == "synthetic":
        s = data.synthetic
        return [f"  the built-in synthetic set: {len(s.classes)} classes x {s.images_per_class} images at "
                f"{s.image_size}px ({', '.join(s.classes)})"]
    if data.root is None or not (files.is_folder(data.root) or files.is_file(data.root)):
        return [f"  not reachable from here: {data.root} does not exist (the search reads it on the cluster)"]
    try:
        manifest = sources.manifest(data, RunFolder.of(cfg).datasets)
    except sources.DataError as err:
        return [f"  {err}"]
    counts = manifest["label"].value_counts().sort_index()
    lines = [f"  {len(manifest)} images, {len(counts)} classes, {manifest['group'].nunique()} groups "
             f"(not yet decoded: python -m leuktune.data checks every file)"]
    return lines + [f"    {label}: {n}" for label, n in counts.items()]


_KEPT = {"best": "best epoch (ties: the lower validation loss, then calibration error, then the later)",
         "last": "last epoch", "first_best": "first epoch to reach its best score"}


def _cv(cv) -> str:
    if cv == "auto":
        return (f"; chosen by cross-validation ({folds.AUTO_FOLDS} folds) if the data has fewer than "
                f"{folds.AUTO_BELOW} training and validation images (search.cv auto)")
    if cv == "sites":
        return ("; chosen on labs held out: a fold per training site (search.cv sites), judged by the mean and "
                "worst site")
    return f"; chosen by cross-validation: {cv} folds of the training and validation images" if cv else ""


def _starts(cfg) -> list[str]:
    """The trials the search runs first (the default recipe, search.start_from), as it will draw them."""
    named = cfg.named_starts()
    shown = [f"  trial {i + 1} ({name}): " + ", ".join(f"{k}={v}" for k, v in point.items())
             for i, (name, point) in enumerate(named.items())]
    return ["first trials (the searcher learns from them like from any other):", *shown] if shown else []


def dry_run(config: str | Path | None = None, overrides: Sequence[str] = (), address: str | None = None) -> str:
    """The dry run's text; ConfigError for what would stop a search before it starts."""
    cfg = with_grid_size(load(config, overrides))
    shapes = check_model_space(cfg)
    res, search, train = cfg.resources, cfg.search, cfg.train
    resources, where = _cluster(address)
    notes: list[str] = []
    at_once = concurrent_trials(cfg, notes.append, available=resources)
    asha = search.scheduler.asha
    lines = [f"experiment {cfg.name!r} ({config or 'built-in default'}): valid",
             f"searched ({search.searcher.optuna.sampler}, {search.num_samples} trials, {search.metric} "
             f"{search.mode}{', objectives ' + ', '.join(search.objectives) if search.objectives else ''}):",
             *_space(cfg),
             *_starts(cfg),
             "models (each backbone with each head, built at data.image_size):",
             *[f"  {s.name}: features {'x'.join(map(str, s.features))}, pooled {s.pooled}, {s.groups} stage groups"
               for s in shapes]]
    if cfg.model.pretrained:
        try:
            weights.check(cfg)
            lines.append("pretrained weights: found for every backbone" if not cfg.model.allow_download else
                         "pretrained weights: downloaded by each trial (model.allow_download)")
            if not cfg.model.allow_download:  # which file each loads: DINOv2's and DinoBloom's share names
                lines += [f"  {name}: {weights.locate(name, cfg.model.pretrained_path)}"
                          for name in representatives(cfg.model.backbone)]
        except ConfigError as err:
            lines.append(f"pretrained weights: MISSING; a search would stop here: {err}")
    first_judged = min(train.epochs, asha.grace_epochs(train.validations) * train.validate_every) if asha else None
    lines += [f"training: {train.epochs} epochs at {cfg.data.image_size}px, batch {train.batch_size}, "
              f"precision {train.precision}" + (f"; ASHA from epoch {first_judged}" if asha else ""),
              f"each trial keeps its {_KEPT[train.keep]}" + _cv(search.cv),
              *_frozen(cfg),
              f"per trial: {res.workers_per_trial} worker(s) x {res.cpus_per_worker:g} CPU, {res.gpus_per_worker:g} GPU "
              f"(launcher {launcher(cfg)}; the trial asks for {trial_resources(cfg)})",
              f"at once: {at_once} trial(s) on {where}"
              + (f" ({'; '.join(n.removeprefix('[leuktune] WARNING: ') for n in notes)})" if notes else ""),
              f"at most {search.num_samples * train.epochs} trial-epochs"
              + (" (ASHA stops weak trials before)" if asha else ""),
              *_following(cfg),
              "data:", *_data(cfg)]
    return "\n".join(lines)


def _following(cfg) -> list[str]:
    """Where the search's study goes and what follows it; the study's database and earlier runs are
    read, nothing is written (a tracking server is asked when the search starts)."""
    place = StudyPlace.of(cfg, RunFolder.of(cfg))
    lines = [f"study {place.name!r}: " + (f"{place.folder.uri()}/study.db (SQLite, in the run folder)" if place.in_run
                                         else place.shown())]
    try:
        if not place.in_run:
            place.storage_object(create=False)
        lines += [f"  {line.removeprefix('[leuktune] ')}" for line in _warm_start_lines(cfg)]
    except (StudyError, ConfigError) as err:
        lines.append(f"  a search would stop here: {err}")
    tracking = cfg.tracking
    if tracking.mlflow or tracking.tensorboard:
        lines.append("followed by: " + ", ".join(
            ([f"MLflow at {tracking.mlflow}"] if tracking.mlflow else [])
            + ([f"TensorBoard event files under {RunFolder.of(cfg).uri()}/tensorboard"] if tracking.tensorboard else [])))
    return lines


def _warm_start_lines(cfg) -> list[str]:
    said: list[str] = []
    warm_trials(cfg, said.append)
    return said


def _frozen(cfg) -> list[str]:
    """What frozen trials do with their backbone's features (leuktune.training.features)."""
    model = cfg.model
    frozen = 0 in representatives(model.unfreeze_depth) or bool(set(representatives(model.head)) & set(PROBE_HEADS))
    if not frozen:
        return []
    if model.feature_cache == "off":
        return ["frozen trials run their backbone every epoch (model.feature_cache: off)"]
    return [f"frozen trials (unfreeze_depth 0, probe heads): each backbone's features computed once per node and "
            f"shared, up to {model.feature_cache_gb:g} GB each (model.feature_cache)"]
