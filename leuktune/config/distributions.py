"""Search-space distributions: how a searchable field is written in YAML, drawn, and sampled.

A searchable field holds a plain value or one of ``{choice: [...]}``, ``{loguniform: [lo, hi]}``,
``{uniform: [lo, hi]}``, ``{int: [lo, hi]}``. Each form is a ``Distribution`` that knows how
to draw itself from an Optuna trial (``suggest``), which values stand for its range
(``representatives``), every value a grid runs (``grid_values``) and its Optuna distribution
(``optuna``), so the searcher, the model-space check, the report and the validators never ask
which form they hold.

A field may apply only for some draws of another (an MLP's width only for the MLP head):
``When`` in its annotation says so, and the searcher draws it only then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class Strict(BaseModel):
    """Unknown keys are errors, values are immutable: a config is a record, not a scratchpad."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Distribution(Strict):
    """One of the YAML search forms; ``kind`` is its key there."""

    kind: ClassVar[str]
    form: ClassVar[str]

    def suggest(self, trial, name: str) -> Any:
        """Draw a value from an ``optuna.Trial`` under ``name``."""
        raise NotImplementedError

    def representatives(self) -> list[Any]:
        """Values that stand for the whole range: every choice, every integer of a short range,
        else both bounds. Checks that must hold for any draw test these."""
        raise NotImplementedError

    def grid_values(self) -> list[Any] | None:
        """Every value a grid search runs; None for a continuous range, which a grid cannot."""
        return None

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one the search could draw (a start of the search must be)."""
        raise NotImplementedError

    def nearest(self, value: Any) -> Any:
        """``value`` if the search could draw it, else the closest value it could: a range's
        bound; among numeric choices the closest; else the choice the experiment lists first."""
        raise NotImplementedError

    def __str__(self) -> str:
        """The distribution as written in YAML, e.g. {loguniform: [0.001, 0.01]}."""
        spec = self.model_dump(by_alias=True)[self.kind]
        return f"{{{self.kind}: [{', '.join(map(str, spec))}]}}"

    def optuna(self, as_text: bool = False):
        """The ``optuna.distributions`` equivalent (e.g. to rebuild a study from a leaderboard,
        whose text columns hold choices as ``as_text`` strings)."""
        raise NotImplementedError


class Choice(Distribution):
    kind: ClassVar[str] = "choice"
    form: ClassVar[str] = "{choice: [...]}"
    choice: list[Any] = Field(min_length=1)

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.choice)

    def representatives(self) -> list[Any]:
        return list(self.choice)

    def grid_values(self) -> list[Any]:
        return list(self.choice)

    def contains(self, value: Any) -> bool:
        return value in self.choice

    def nearest(self, value: Any) -> Any:
        if self.contains(value):
            return value
        numbers = [c for c in self.choice if isinstance(c, (int, float)) and not isinstance(c, bool)]
        if isinstance(value, (int, float)) and numbers:
            # a learning rate is near another by ratio, not difference
            by_ratio = value > 0 and all(c > 0 for c in numbers)
            return min(numbers, key=lambda c: abs(math.log(c / value)) if by_ratio else abs(c - value))
        return self.choice[0]

    def optuna(self, as_text: bool = False):
        # Optuna only when a trial is drawn: loading or checking a config does not need it
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution([str(c) for c in self.choice] if as_text else self.choice)


class _Range(Distribution):
    @property
    def bounds(self) -> tuple:
        return getattr(self, self.kind)

    def representatives(self) -> list[Any]:
        return list(self.bounds)

    def contains(self, value: Any) -> bool:
        lo, hi = self.bounds
        return isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi

    def nearest(self, value: Any) -> Any:
        lo, hi = self.bounds
        if not isinstance(value, (int, float)):
            return hi  # the one word a range of numbers meets, unfreeze_depth's all, is above them all
        return min(max(value, lo), hi)


class LogUniform(_Range):
    kind: ClassVar[str] = "loguniform"
    form: ClassVar[str] = "{loguniform: [lo, hi]}"
    loguniform: tuple[float, float]

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, *self.loguniform, log=True)

    def optuna(self, as_text: bool = False):
        # Optuna only when a trial is drawn: loading or checking a config does not need it
        from optuna.distributions import FloatDistribution

        return FloatDistribution(*self.loguniform, log=True)


class Uniform(_Range):
    kind: ClassVar[str] = "uniform"
    form: ClassVar[str] = "{uniform: [lo, hi]}"
    uniform: tuple[float, float]

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, *self.uniform)

    def optuna(self, as_text: bool = False):
        # Optuna only when a trial is drawn: loading or checking a config does not need it
        from optuna.distributions import FloatDistribution

        return FloatDistribution(*self.uniform)


class IntRange(_Range):
    kind: ClassVar[str] = "int"
    form: ClassVar[str] = "{int: [lo, hi]}"
    int_: tuple[int, int] = Field(alias="int")

    @property
    def bounds(self) -> tuple[int, int]:
        return self.int_

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, *self.int_)

    def representatives(self) -> list[int]:
        lo, hi = self.int_
        return list(range(lo, hi + 1)) if hi - lo < 16 else [lo, hi]

    def grid_values(self) -> list[int]:
        return list(range(self.int_[0], self.int_[1] + 1))

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and super().contains(value)

    def optuna(self, as_text: bool = False):
        # Optuna only when a trial is drawn: loading or checking a config does not need it
        from optuna.distributions import IntDistribution

        return IntDistribution(*self.int_)


DISTRIBUTIONS: dict[str, type[Distribution]] = {d.kind: d for d in (Choice, LogUniform, Uniform, IntRange)}


def representatives(value: Any) -> list[Any]:
    """A field's representative values, whether it holds a distribution or a plain value."""
    return value.representatives() if isinstance(value, Distribution) else [value]


@dataclass(frozen=True)
class ValueType:
    """Annotation marker: the type of a searchable field's values (the leaderboard gives each
    hyperparameter one column type from it, whatever values a search draws) and the forms it
    may be searched with (``kinds``: choice, loguniform, ...; the configuration reference lists them)."""

    type: Any
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class When:
    """Annotation marker: the field applies only when field ``parent`` is ``equals`` (or is
    not ``not_equal``); otherwise it is never drawn and reads as null in the leaderboard."""

    parent: str
    equals: Any = None
    not_equal: Any = None

    def holds(self, parent_value: Any) -> bool:
        if self.equals is not None:
            return parent_value == self.equals
        return parent_value != self.not_equal

    def __str__(self) -> str:
        """The condition as messages say it: "head is mlp", "unfreeze_depth is not 0"."""
        if self.equals is not None:
            return f"{self.parent} is {self.equals}"
        return f"{self.parent} is not {self.not_equal}"


def searchable(value_type: Any, *kinds: str, when: When | None = None) -> Any:
    """A field holding either a plain ``value_type`` or a distribution of one of ``kinds``.

    Each choice and each bound is checked against ``value_type``, so a negative learning
    rate inside ``{loguniform: [...]}`` is caught as surely as a plain one.
    """
    adapter = TypeAdapter(value_type)
    forms = ", ".join(DISTRIBUTIONS[k].form for k in kinds)

    def check(value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except ValidationError as err:
            msg = err.errors()[0]["msg"].removeprefix("Value error, ")
            raise ValueError(f"{msg} (got {value!r})") from None

    def parse(raw: Any) -> Any:
        if isinstance(raw, Distribution):
            raw = raw.model_dump(by_alias=True)
        if not isinstance(raw, dict):
            return check(raw)
        if len(raw) != 1 or next(iter(raw)) not in kinds:
            raise ValueError(f"expected a plain value or one of {forms}; got a mapping with keys "
                             f"{sorted(map(str, raw))}")
        kind, spec = next(iter(raw.items()))
        if kind == "choice":
            if not isinstance(spec, list) or not spec:
                raise ValueError("a choice needs a non-empty list of values")
            return Choice(choice=[check(v) for v in spec])
        if not isinstance(spec, (list, tuple)) or len(spec) != 2:
            raise ValueError(f"{{{kind}: ...}} needs exactly two bounds [lo, hi]")
        lo, hi = check(spec[0]), check(spec[1])
        if not lo < hi:
            raise ValueError(f"{{{kind}: [{lo}, {hi}]}}: the lower bound must be below the upper")
        if kind == "loguniform" and lo <= 0:
            raise ValueError(f"{{loguniform: [{lo}, {hi}]}}: bounds must be positive")
        return DISTRIBUTIONS[kind].model_validate({kind: [lo, hi]})

    return Annotated[(Any, AfterValidator(parse), ValueType(value_type, kinds), *([when] if when else []))]
