"""Where a search starts: leuktune's default recipe within the space, then the researcher's own.

A search exists to beat one good default run, so it runs that run first (``search.default_first``)
and then the configurations the researcher names (``search.start_from``, e.g. the published
projects' recipes); the searcher learns from them like from any trial. Each start is a point of
the space, keyed by the searched fields' leaf names (Optuna's parameter names).

>>> from leuktune.config import load
>>> cfg = load(None, ["search.start_from=[{model.backbone: resnet18, train.lr: 0.005}]"])
>>> cfg.starts()
[{'backbone': 'test_resnet', 'lr': 0.002}, {'backbone': 'resnet18', 'lr': 0.005}]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from leuktune.config.distributions import Distribution, When

# Known-good values of fields whose schema default is a range or might not suit (the rest take
# their schema default, or a choice the experiment lists first). From scratch: AdamW at 2e-3
# with warm-up and a decaying schedule, the plain loop that beat a 6-trial search on a real
# 4-class leukemia set. Fine-tuning pretrained weights: 1e-3 for the head, a tenth of it for the
# backbone, the published projects' recipe.
FROM_SCRATCH = {"lr": 2e-3}
PRETRAINED = {"lr": 1e-3, "backbone_lr_mult": 0.1}


@dataclass(frozen=True)
class SearchSpace:
    """The searched fields (leaf name -> distribution, in schema order), the value of every
    searchable field that is not searched, the fields drawn only under a condition, and each
    field's section (to name a field as ``--set`` does: ``model.backbone``)."""

    searched: Mapping[str, Distribution]
    fixed: Mapping[str, Any]
    conditions: Mapping[str, When]
    sections: Mapping[str, str]
    schema_defaults: Mapping[str, Any]
    pretrained: bool

    def dotted(self, key: str) -> str:
        return f"{self.sections[key]}.{key}"

    def applies(self, key: str, point: Mapping[str, Any]) -> bool:
        """Whether ``key`` is drawn, given the values drawn (or fixed) before it."""
        condition = self.conditions.get(key)
        if condition is None:
            return True
        parent = point[condition.parent] if condition.parent in point else self.fixed.get(condition.parent)
        return condition.holds(parent)

    def recipe_value(self, key: str) -> Any:
        """The default recipe's value of searched field ``key``, within its distribution."""
        dist, default = self.searched[key], self.schema_defaults.get(key)
        wanted = (PRETRAINED if self.pretrained else FROM_SCRATCH).get(
            key, None if isinstance(default, Distribution) else default)
        return dist.nearest(dist.representatives()[0] if wanted is None else wanted)

    def default_recipe(self) -> dict[str, Any]:
        """leuktune's default run, moved into the space where the space does not hold it."""
        return self.start({}, "the default recipe")

    def start(self, given: Mapping[str, Any], where: str) -> dict[str, Any]:
        """One ``search.start_from`` entry (keys as ``--set`` names them) as a point of the space,
        the searched fields it leaves out at the default recipe's values; a ``ValueError``
        naming the entry and the key for a start the search could not draw."""
        if not isinstance(given, Mapping):
            raise ValueError(f"{where}: expected a mapping of searched keys to values, e.g. "
                             f"{{model.backbone: resnet50, train.lr: 0.001}}; got {given!r}")
        by_leaf: dict[str, Any] = {}
        searched = ", ".join(self.dotted(k) for k in self.searched)
        for name, value in given.items():
            section, _, key = str(name).rpartition(".")
            if key not in self.sections or section not in ("", self.sections[key]):
                raise ValueError(f"{where}: {name} is not a searchable key; the searched keys are {searched}")
            if key not in self.searched:
                if value == self.fixed[key]:
                    continue  # a recipe may name what this experiment fixes to the same value
                raise ValueError(f"{where}: {self.dotted(key)} is not searched here (it is fixed at "
                                 f"{self.fixed[key]!r}); the searched keys are {searched}")
            if not self.searched[key].contains(value):
                raise ValueError(f"{where}: {self.dotted(key)} {value!r} is outside the searched "
                                 f"{self.searched[key]}")
            by_leaf[key] = value
        point: dict[str, Any] = {}
        for key in self.searched:
            if not self.applies(key, point):
                if key in by_leaf:
                    condition = self.conditions[key]
                    raise ValueError(f"{where}: {self.dotted(key)} applies only when {condition}, which this "
                                     "start does not have")
                continue
            point[key] = by_leaf[key] if key in by_leaf else self.recipe_value(key)
        return point
