"""The experiment configuration: the sections (data.py, training.py, schema.py), the
search-space distributions (space.py), loading with overrides and error phrasing (loading.py).

A bad file fails here, before any Ray resource is used, with the file, the key and what
was expected. ``from leuktune.config import load, ExperimentConfig, ConfigError``.
"""

from leuktune.config.data import SYNTHETIC_CLASSES, DataConfig, ResizeMode, SplitConfig
from leuktune.config.loading import load
from leuktune.config.schema import CONDITIONS, SEARCHABLE_FIELDS, VALUE_TYPES, ConfigError, ExperimentConfig
from leuktune.config.training import TORCHVISION_BACKBONES, AugmentConfig, ModelConfig, TrainConfig
from leuktune.config.space import Choice, Distribution, IntRange, LogUniform, Uniform, When, representatives

__all__ = [
    "load", "ConfigError", "ExperimentConfig", "DataConfig", "ModelConfig", "TrainConfig", "SplitConfig",
    "AugmentConfig", "ResizeMode", "SYNTHETIC_CLASSES", "TORCHVISION_BACKBONES", "SEARCHABLE_FIELDS",
    "CONDITIONS", "VALUE_TYPES", "Distribution", "Choice", "LogUniform", "Uniform", "IntRange", "When", "representatives",
]
