"""An experiment file (or the built-in default) plus ``--set`` overrides -> ``ExperimentConfig``,
or a ``ConfigError`` that names the file, the dotted key and what was expected."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from leuktune.config.schema import ConfigError, ExperimentConfig


def load(path: str | Path | ExperimentConfig | None = None,
         overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read an experiment file (the built-in default when ``path`` is None; an
    ``ExperimentConfig`` is taken as it is) and apply ``KEY=VALUE`` overrides, the values
    written in YAML.

    >>> cfg = load(None, ["train.epochs=3", "model.backbone={choice: [resnet18, test_vit]}"])
    >>> cfg.train.epochs, list(cfg.searched())
    (3, ['backbone', 'lr'])
    """
    if isinstance(path, ExperimentConfig):
        if not overrides:
            return path
        raw: Any = path.to_dict()
        source = f"experiment {path.name!r}"
        path = None
    else:
        source = str(path) if path is not None else "<built-in default>"
        raw = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{source}: no such experiment file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    for item in overrides:
        _apply_override(raw, item)
    if overrides:
        source += " with --set " + " ".join(overrides)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None
    try:
        cfg.starts()  # the search's starts lie in its space: said now, not when the search begins
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


def _apply_override(raw: dict, item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    try:
        node[parts[-1]] = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML: {err}") from None


def _describe(err: ValidationError, source: str) -> str:
    problems: dict[str, list[str]] = {}  # key -> what was wrong; a union's branches share their key
    inputs: dict[str, str] = {}
    for e in err.errors():
        unknown = e["type"] == "extra_forbidden"  # the last part is the unknown key itself
        loc = _field_path(e["loc"][:-1]) + [str(e["loc"][-1])] if unknown else _field_path(e["loc"])
        key = ".".join(loc) or "(top level)"
        if unknown:
            allowed = _allowed_keys(loc[:-1])
            close = difflib.get_close_matches(loc[-1], allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.setdefault(key, []).append(f"unknown key; {hint}expected one of {', '.join(allowed)}")
            continue
        problems.setdefault(key, []).append(e["msg"].removeprefix("Value error, "))
        if e["type"] != "value_error" and "input" in e:
            inputs[key] = f" (got {e['input']!r})"
    described = [f"{key}: {' or '.join(dict.fromkeys(msgs))}{inputs.get(key, '')}" for key, msgs in problems.items()]
    return f"{source}: invalid experiment configuration: " + "; ".join(described) + "."


def _field_path(loc: tuple) -> list[str]:
    """The dotted key of an error: field names and list indices, without pydantic's tags for
    the branch of a union or the validator that failed (``int``, ``literal['auto']``, ...)."""
    path: list[str] = []
    model: type[BaseModel] | None = ExperimentConfig
    for part in loc:
        if model is not None:
            if part not in model.model_fields and part not in _aliases(model):
                continue
            path.append(str(part))
            model = _section(model.model_fields.get(part) or model.model_fields[_aliases(model)[part]])
        elif isinstance(part, int):
            path.append(str(part))
    return path


def _aliases(model: type[BaseModel]) -> dict[str, str]:
    return {f.alias: name for name, f in model.model_fields.items() if f.alias}


def _section(field) -> type[BaseModel] | None:
    """The model a field holds (directly or as a branch of its union), or None for a plain value."""
    return next((t for t in (field.annotation, *typing.get_args(field.annotation))
                 if isinstance(t, type) and issubclass(t, BaseModel)), None)


def _allowed_keys(loc: list[str]) -> list[str]:
    model: type[BaseModel] | None = ExperimentConfig
    for part in loc:
        field = model.model_fields.get(part)
        model = _section(field) if field is not None else None
        if model is None:
            return []
    return [f.alias or name for name, f in model.model_fields.items()]
