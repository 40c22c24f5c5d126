"""Where a search starts (the default recipe, search.start_from), its samplers' start-up, and
the score ASHA judges: the real Optuna study behind Ray Tune's OptunaSearch, and Ray's ASHA."""

from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import TrialScheduler

from leuktune import internals
from leuktune.config import ConfigError, load
from leuktune.tuning.scheduler import ScoredASHA
from leuktune.tuning.dryrun import dry_run
from leuktune.tuning.searcher import make_searcher

SPACE = ["model.backbone={choice: [test_resnet, resnet18]}", "model.head={choice: [linear, mlp]}",
         "model.mlp_hidden={choice: [64, 128]}", "train.lr={loguniform: [1.0e-4, 1.0e-2]}",
         "model.dropout={uniform: [0.1, 0.5]}"]


def test_the_default_recipe_is_leuktunes_defaults_moved_into_the_space():
    # schema defaults where the space holds them (head linear), the recipe's lr (2e-3 from
    # scratch), a range's nearest bound (dropout 0.0 -> 0.1), the choice listed first (backbone)
    assert load(None, SPACE).starts() == [
        {"backbone": "test_resnet", "head": "linear", "lr": 0.002, "dropout": 0.1}]
    pretrained = load(None, [*SPACE, "model.pretrained=true", "model.unfreeze_depth={choice: [0, all]}",
                             "train.backbone_lr_mult={loguniform: [0.01, 1.0]}"]).starts()[0]
    assert pretrained["lr"] == 0.001 and pretrained["backbone_lr_mult"] == 0.1 and pretrained["unfreeze_depth"] == "all"
    # numeric choices: the nearest by ratio
    assert load(None, ["train.lr={choice: [1.0e-9, 0.01]}"]).starts()[0]["lr"] == 0.01


def test_starts_fill_what_they_leave_out_from_the_default_recipe_and_run_once_each():
    cfg = load(None, [*SPACE, "search.num_samples=5", "search.start_from=[{model.backbone: resnet18, "
                      "model.head: mlp, model.mlp_hidden: 128}, {train.lr: 0.002}, {train.lr: 0.005}]"])
    recipe, *given = cfg.starts()
    assert given == [{"backbone": "resnet18", "head": "mlp", "mlp_hidden": 128, "lr": 0.002, "dropout": 0.1},
                     {**recipe, "lr": 0.005}]  # {train.lr: 0.002} is the default recipe: run once
    assert load(None, [*SPACE, "search.default_first=false", "search.start_from=[{train.lr: 0.005}]"]).starts() == [
        {**recipe, "lr": 0.005}]


@pytest.mark.parametrize("start, expected", [
    ("{model.backbone: resnet99}", "search.start_from[0]: model.backbone 'resnet99' is outside the searched "
                                   "{choice: [test_resnet, resnet18]}"),
    ("{train.lr: 0.5}", "search.start_from[0]: train.lr 0.5 is outside the searched {loguniform: [0.0001, 0.01]}"),
    ("{model.mlp_hidden: 64}", "search.start_from[0]: model.mlp_hidden applies only when head is mlp"),
    ("{train.epoch: 3}", "search.start_from[0]: train.epoch is not a searchable key; the searched keys are "
                         "model.backbone, model.head, model.mlp_hidden, model.dropout, train.lr"),
    ("{model.lr: 0.001}", "search.start_from[0]: model.lr is not a searchable key"),
    ("{train.weight_decay: 0.1}", "train.weight_decay is not searched here (it is fixed at 0.0001)"),
])
def test_a_start_the_search_could_not_draw_is_refused_by_key(start, expected):
    with pytest.raises(ConfigError, match="^<built-in default> with --set") as err:
        load(None, [*SPACE, f"search.start_from=[{{train.lr: 0.001}}, {start}]".replace("[0]", "[1]")])
    assert expected.replace("[0]", "[1]") in str(err.value)


def test_more_starts_than_trials_or_starts_in_a_grid_are_refused():
    with pytest.raises(ConfigError, match=r"3 starts .* search.num_samples is 2"):
        load(None, [*SPACE, "search.num_samples=2", "search.start_from=[{train.lr: 0.001}, {train.lr: 0.003}]"])
    with pytest.raises(ConfigError, match="search.start_from: a grid runs every combination"):
        load(None, ["search.searcher.optuna.sampler=grid", "search.start_from=[{model.backbone: resnet18}]"])
    # a fixed key named at its own value is no conflict: published recipes name more than a space searches
    load(None, [*SPACE, "search.start_from=[{train.weight_decay: 0.0001, train.lr: 0.001}]"])


def _suggested(cfg, n: int) -> list[dict]:
    searcher = make_searcher(cfg)
    return [searcher.suggest(f"t{i}") for i in range(n)]


def test_the_searcher_runs_the_starts_first_then_draws():
    cfg = load(None, [*SPACE, "search.num_samples=6", "search.start_from=[{model.backbone: resnet18, train.lr: 0.005}]"])
    first, second, *drawn = _suggested(cfg, 4)
    recipe, start = cfg.starts()
    assert first == recipe and second == start
    assert all(d not in (recipe, start) for d in drawn)


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_samplers_model_the_space_after_their_startup_trials(sampler):
    # auto: a third of num_samples, 2 to 10; the default is Optuna's own 10
    auto = "search.searcher.optuna.startup_trials=auto"
    cfg = load(None, [*SPACE, "search.num_samples=9", f"search.searcher.optuna.sampler={sampler}", auto])
    assert cfg.search.searcher.optuna.startup(cfg.search.num_samples) == 3
    assert load(None, ["search.num_samples=60", auto]).search.searcher.optuna.startup(60) == 10
    assert load(None, ["search.num_samples=4", auto]).search.searcher.optuna.startup(4) == 2
    assert load(None, ["search.num_samples=4"]).search.searcher.optuna.startup(4) == 10
    searcher = make_searcher(cfg)
    study = internals.optuna_study(searcher)
    expected = optuna.samplers.TPESampler if sampler == "tpe" else optuna.samplers.GPSampler
    assert isinstance(study.sampler, expected) and study.sampler._n_startup_trials == 3
    for i in range(5):  # past the start-up trials the sampler's own model proposes (no exception, in range)
        params = searcher.suggest(f"t{i}")
        assert 1e-4 <= params["lr"] <= 1e-2
        searcher.on_trial_complete(f"t{i}", {"epoch": 2, "finished": True, "kept_value": 0.5 + params["lr"] * 10,
                                             "val_balanced_accuracy": 0.5, "diverged": False})
    assert len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 5


def _asha(score: str) -> ScoredASHA:
    asha = ScoredASHA(score=score, time_attr="validation", max_t=8, grace_period=3, reduction_factor=2)
    asha.set_search_properties("val_balanced_accuracy", "max")
    return asha


def _feed(asha: ScoredASHA, trial, values: list[float]) -> str:
    action = TrialScheduler.CONTINUE
    for validation, value in enumerate(values, start=1):
        action = asha.on_trial_result(None, trial, {"validation": validation, "epoch": validation,
                                                    "val_balanced_accuracy": value})
    return action


@pytest.mark.parametrize("score, spiky_trial_is", [("last", TrialScheduler.CONTINUE),
                                                    ("smoothed", TrialScheduler.STOP)])
def test_asha_judges_the_score_it_is_told_to(score, spiky_trial_is):
    # a steady trial, then a trial whose third epoch is a lucky spike after two poor ones:
    # by its last epoch it is above the steady one; by its mean of three, below
    asha = _asha(score)
    steady, spiky = SimpleNamespace(trial_id="steady"), SimpleNamespace(trial_id="spiky")
    for trial in (steady, spiky):
        asha.on_trial_add(None, trial)
    assert _feed(asha, steady, [0.5, 0.6, 0.7]) == TrialScheduler.CONTINUE
    assert _feed(asha, spiky, [0.2, 0.3, 0.8]) == spiky_trial_is


def test_a_restarted_trial_reporting_its_epochs_again_is_scored_as_one_run():
    asha = _asha("smoothed")
    trial = SimpleNamespace(trial_id="t")
    asha.on_trial_add(None, trial)
    _feed(asha, trial, [0.2, 0.4])
    # restored from its epoch-1 checkpoint: epoch 2 again (another value), then 3
    assert asha.scored(trial, {"validation": 2, "epoch": 2, "val_balanced_accuracy": 0.5}
                       )["val_balanced_accuracy"] == pytest.approx((0.2 + 0.5) / 2)
    assert asha.scored(trial, {"validation": 3, "epoch": 3, "val_balanced_accuracy": 0.8}
                       )["val_balanced_accuracy"] == pytest.approx((0.2 + 0.5 + 0.8) / 3)


def test_the_dry_run_lists_the_first_trials():
    text = dry_run(None, [*SPACE, "search.num_samples=5",
                          "search.start_from=[{train.lr: 0.002}, {model.backbone: resnet18, train.lr: 0.005}]"])
    # the first start is the default recipe again: run once, named once
    assert "  trial 1 (the default recipe): backbone=test_resnet, head=linear, dropout=0.1, lr=0.002" in text
    assert "  trial 2 (search.start_from[1]): backbone=resnet18, head=linear, dropout=0.1, lr=0.005" in text


def test_asha_lets_the_searchs_starts_run_to_the_end():
    # the default recipe, poor at the first rung, is not stopped: it is the baseline the search must beat
    recipe = {"backbone": "test_resnet", "lr": 0.002}
    asha = ScoredASHA(score="best", spared=[recipe], time_attr="validation", max_t=8, grace_period=2,
                      reduction_factor=2)
    asha.set_search_properties("val_balanced_accuracy", "max")
    good = SimpleNamespace(trial_id="good", config={"backbone": "resnet18", "lr": 0.005})
    default = SimpleNamespace(trial_id="default", config=dict(recipe))
    poor = SimpleNamespace(trial_id="poor", config={"backbone": "resnet18", "lr": 0.001})
    for trial in (good, default, poor):
        asha.on_trial_add(None, trial)
    assert _feed(asha, good, [0.6, 0.7]) == TrialScheduler.CONTINUE
    assert _feed(asha, default, [0.3, 0.4]) == TrialScheduler.CONTINUE
    assert _feed(asha, poor, [0.3, 0.4]) == TrialScheduler.STOP
    assert "num_stopped=1" in asha.debug_string()
