"""The experiment configuration: the sections (data.py, training.py, schema.py), the
search-space distributions (distributions.py), loading with overrides and error phrasing (loading.py).

A bad file fails here, before any Ray resource is used, with the file, the key and what
was expected. ``from leuktune.config import load, ExperimentConfig, ConfigError``.
"""

from leuktune.config.data import SYNTHETIC_CLASSES, DataConfig, ResizeMode, SplitConfig
from leuktune.config.loading import load
from leuktune.config.schema import CONDITIONS, SEARCHABLE_FIELDS, VALUE_TYPES, ConfigError, ExperimentConfig
from leuktune.config.training import (HEAD_KINDS, PROBE_HEADS, TORCHVISION_BACKBONES, AugmentConfig, ModelConfig,
                                      TrainConfig)
from leuktune.config.distributions import Choice, Distribution, IntRange, LogUniform, Uniform, When, representatives

__all__ = [
    "load", "ConfigError", "ExperimentConfig", "DataConfig", "ModelConfig", "TrainConfig", "SplitConfig",
    "AugmentConfig", "ResizeMode", "SYNTHETIC_CLASSES", "TORCHVISION_BACKBONES", "HEAD_KINDS", "PROBE_HEADS",
    "SEARCHABLE_FIELDS",
    "CONDITIONS", "VALUE_TYPES", "Distribution", "Choice", "LogUniform", "Uniform", "IntRange", "When", "representatives",
]
