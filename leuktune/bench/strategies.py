"""What the search benchmarks compare, as --set overrides (no imports: the command line's --help lists them)."""

HARDER = ["data.synthetic.difficulty=1.0"]
NO_EARLY_STOPPING = ["search.scheduler.asha=null"]
# A random searcher is the baseline: no default recipe first (it would not be random search).
SAMPLERS = {
    "random": ["search.searcher.optuna.sampler=random", "search.default_first=false"],
    "tpe-10": ["search.searcher.optuna.sampler=tpe", "search.searcher.optuna.startup_trials=10"],
    "tpe-auto": ["search.searcher.optuna.sampler=tpe", "search.searcher.optuna.startup_trials=auto"],
    "gp-auto": ["search.searcher.optuna.sampler=gp", "search.searcher.optuna.startup_trials=auto"],
}
STRATEGIES = {f"{name}{'+asha' if asha else ''}": [*settings, *([] if asha else NO_EARLY_STOPPING)]
              for name, settings in SAMPLERS.items() for asha in (True, False)}
# bench signal: the defaults against what they replaced and the other signals measured
VARIANTS = {"default": [], "no bn refresh": ["train.bn_refresh=0"], "ema": ["train.ema=0.99", "train.bn_refresh=0"],
            "warmup-2": ["train.warmup_epochs=2", "train.bn_refresh=0"]}
# bench external: stain augmentation and normalisation (to one cell of the home site, {home}) or neither
_REFERENCE = ["data.stain_normalize=reinhard", "data.stain_reference={home}/MM/MM_0000.png"]
EXTERNAL_VARIANTS = {"plain": [], "stain augmentation": ["train.augment.stain=0.3"], "stain normalisation": _REFERENCE,
                     "both": ["train.augment.stain=0.3", *_REFERENCE]}
# bench selection: how a search chooses its model, against one default-recipe trial's last epoch
# (keep=last with num_samples=1: the default recipe alone, as a plain training loop ends).
SELECTION_VARIANTS = {
    "default trial, last epoch": ["search.num_samples=1", "train.keep=last"],
    "search, first best (before)": ["train.keep=first_best"],
    "search, epoch ties": ["train.keep=best"],
    "search, keep last": ["train.keep=last"],
    "search, cv 5": ["search.cv=5"],
}
# the harder built-in set with a small validation split (6 classes x 150 images: 117 validation images)
SELECTION_BUILTIN = [*HARDER, "data.split.train=0.6", "data.split.val=0.13", "data.split.test=0.27"]
