"""The levers that decide whether a model holds at another lab, said at a trial's start.

Stain normalisation (``data.stain_normalize``), colour and stain jitter (``train.color_strength``),
another magnification (``train.scale_augment``), grey images (``train.grayscale``) and another
focus (``train.blur``): each searchable, so a search can ask which of them a model needs. A trial
that drew any of them says in one line what it drew, and what the others are fixed at, before it
trains: the line a researcher reads beside the trial's score.
"""

from __future__ import annotations

from typing import Any, Mapping

from leuktune.config import ExperimentConfig

LEVERS = ("stain_normalize", "color_strength", "scale_augment", "grayscale", "blur")


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def drawn_line(cfg: ExperimentConfig, params: Mapping[str, Any]) -> str | None:
    """One line naming the levers the trial drew (``params``: what the searcher drew) and the
    others' values in its concrete ``cfg``; None when the search draws none of them."""
    drawn = [k for k in LEVERS if k in params]
    if not drawn:
        return None
    fixed = [k for k in LEVERS if k not in params]
    return ("[leuktune] levers drawn: " + ", ".join(f"{k} {_shown(cfg.value(k))}" for k in drawn)
            + ("; fixed: " + ", ".join(f"{k} {_shown(cfg.value(k))}" for k in fixed) if fixed else ""))
