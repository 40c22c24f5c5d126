"""leuktune: search for the best blood-smear image classifier with Ray Tune + Ray Train."""

import os

# Ray Train V2 is the API leuktune is written against (the default since Ray 2.5x);
# set it before any ray.train import in every process that imports leuktune.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

__version__ = "0.1.0"
