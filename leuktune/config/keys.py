"""Every key of the experiment schema as the configuration reference lists it: its dotted name,
type, default, whether it is searchable, and its help.

The help of a key has one owner, the line(s) that define it in ``leuktune.config``: the comment
block right above the field, a comment at the end of its line, or its ``Field(description=...)``
(one of them; tests/test_docs.py refuses a key with none or with two). Reading them here, rather
than copying them into the documentation, is what keeps the reference from drifting from the code:
the documentation build (docs/hooks.py) writes the page from ``reference_markdown()`` each time.
"""

from __future__ import annotations

import ast
import functools
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from leuktune.config.distributions import Distribution, Strict, ValueType, When
from leuktune.config.schema import ExperimentConfig

# Bounds as the reference writes them (pydantic keeps Field(ge=..) as annotated_types markers).
_BOUNDS = {annotated_types.Ge: "≥", annotated_types.Gt: ">", annotated_types.Le: "≤", annotated_types.Lt: "<"}
_NAMES = {str: "text", int: "integer", float: "number", bool: "true/false", Path: "path", Any: "any"}


@dataclass(frozen=True)
class Key:
    """One key of the schema (a leaf, or a section holding keys of its own)."""

    name: str  # dotted, as --set names it: train.lr, data.sites.<site>.root
    type: str
    default: str
    searchable: str  # the forms it may be searched with, and when it is drawn; "" if it is not searchable
    help: str
    helped_by: tuple[str, ...]  # where its help came from: "comment", "trailing comment", "description"
    section: bool = False


def _comments(cls: type) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each field of ``cls``'s own body -> its help, as (where, text) pairs, read from its source."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {tok.start[0]: (tok.string, tok.line.strip().startswith("#"))
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    found = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line in comments and comments[line][1]:
            above.insert(0, comments[line][0].lstrip("#").strip())
            line -= 1
        helps = [("comment", " ".join(above))] if above else []
        for at in range(node.lineno, node.end_lineno + 1):
            text, whole = comments.get(at, ("", True))
            text = text.lstrip("#").strip()
            if not whole and text and not text.startswith("type:"):  # a type checker's note is not help
                helps.append(("trailing comment", text))
        found[node.target.id] = tuple(helps)
    return found


@functools.cache
def _field_help(cls: type) -> dict[str, tuple[tuple[str, str], ...]]:
    """The help of every field of ``cls``, its bases' included."""
    helps: dict[str, tuple[tuple[str, str], ...]] = {}
    for base in reversed([c for c in cls.__mro__ if issubclass(c, BaseModel) and c not in (BaseModel, Strict)]):
        helps.update(_comments(base))
    for name, field in cls.model_fields.items():
        if field.description:
            helps[name] = (*helps.get(name, ()), ("description", field.description))
    return helps


def type_name(annotation: Any, metadata: list | tuple = ()) -> str:
    """A type as the reference writes it: ``integer ≥ 1``, ``one of `pad`, `crop``` ..."""
    metadata = [m for given in metadata for m in (given.metadata if isinstance(given, FieldInfo) else [given])]
    bounds = [f"{_BOUNDS[type(m)]} {getattr(m, next(iter(m.__dataclass_fields__)))}"
              for m in metadata if type(m) in _BOUNDS]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0], [*args[1:], *metadata])
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        named = [type_name(a) for a in args if a is not type(None)]
        shown = " or ".join(named + (["null"] if type(None) in args else []))
        return f"{shown} ({', '.join(bounds)})" if bounds else shown
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    name = _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return f"{name} {', '.join(bounds)}" if bounds else name


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default is PydanticUndefined else field.default
    if isinstance(value, Distribution):
        return str(value)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value) if value is not None else "null"


def _section_class(annotation: Any) -> tuple[type | None, str]:
    """The section a field holds (``Optional[Section]`` and ``dict[str, Section]`` too) and the
    part its keys' names take after the field's: "" or ".<name>"."""
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Strict):
        return annotation, ""
    for arg in args:
        found, tail = _section_class(arg)
        if found is not None:
            part = ".<name>" if typing.get_origin(annotation) is dict else ""
            return found, part + tail
    return None, ""


def keys(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[Key]:
    """Every key of ``model`` in schema order, each section followed by its own keys."""
    found, helps = [], _field_help(model)
    for name, field in model.model_fields.items():
        dotted = prefix + (field.alias or name)
        help_ = tuple(helps.get(name, ()))
        text = " ".join(h for _, h in help_)
        section, tail = _section_class(field.annotation)
        if section is not None:
            doc = text or inspect.cleandoc(section.__doc__ or "")
            kind = "null or " if type(None) in typing.get_args(field.annotation) else ""
            found.append(Key(dotted, kind + ("a mapping of sections" if tail else "a section"), "", "",
                             " ".join(doc.split()), tuple(w for w, _ in help_), section=True))
            found.extend(keys(section, dotted + tail + "."))
            continue
        markers = [m for m in field.metadata if isinstance(m, (ValueType, When))]
        value_type = next((m for m in markers if isinstance(m, ValueType)), None)
        when = next((m for m in markers if isinstance(m, When)), None)
        searchable = ""
        if value_type is not None:
            searchable = ", ".join(value_type.kinds) + (f" (drawn when {when})" if when else "")
        shown = type_name(value_type.type) if value_type else type_name(field.annotation, field.metadata)
        found.append(Key(dotted, shown, _default(field), searchable, text, tuple(w for w, _ in help_)))
    return found


def _cell(text: str) -> str:
    # < and > as text: help says <path>/<name>, which Markdown would take for HTML tags
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def reference_markdown() -> str:
    """The configuration reference page: one table per section, every key of ``ExperimentConfig``."""
    out = ["# Configuration reference", "",
           "Every key of an experiment file (`experiments/*.yaml`) and of `--set`, generated from the schema "
           "(`leuktune.config`) each time the documentation is built. A searchable key takes a plain value or "
           "one of the forms listed, e.g. `{choice: [...]}`, `{loguniform: [lo, hi]}`, `{uniform: [lo, hi]}`, "
           "`{int: [lo, hi]}`.", ""]
    header = ["| key | type | default | searchable | help |", "|---|---|---|---|---|"]
    table: list[str] = []
    top = [k for k in keys() if "." not in k.name]
    out += ["## Top level", "", *header]
    for key in keys():
        if key.section:
            out += [*table, "", f"## `{key.name}`", "", key.help, "", *header]
            table = []
            continue
        table.append(f"| `{key.name}` | {_cell(key.type)} | `{key.default}` | {_cell(key.searchable)} | "
                     f"{_cell(key.help)} |")
        if key in top:
            out.append(table.pop())
    return "\n".join([*out, *table, ""])
