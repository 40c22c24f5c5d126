"""A run's model adapted to a new lab with a few of the lab's labelled cells (``leuktune.Run.adapt``).

The lab's cells are drawn (draw.py) into labelled ones and a test never used; the steps (plan.py:
BatchNorm statistics, batchnorm.py; colours, colour.py; fine-tuning, tuning.py; the temperature) are
applied to a freshly loaded source (adaptation.py, networks.py) and chosen by cross-validation on the
labelled cells alone (choose.py); adapter.py adapts one model, site.py a run's best trial and
ensemble, writing them into the run (store.py) with the curve (curve.py).
"""

from leuktune.adapting.adaptation import Lab
from leuktune.adapting.adapter import Adapted, adapt
from leuktune.adapting.cells import Cells, Seen
from leuktune.adapting.draw import MARGIN, Draw, draw
from leuktune.adapting.plan import DEFAULT_STEPS, STEPS, Candidate, Plan
from leuktune.adapting.site import adapt_run

__all__ = ["Lab", "Adapted", "adapt", "Cells", "Seen", "MARGIN", "Draw", "draw", "DEFAULT_STEPS", "STEPS",
           "Candidate", "Plan", "adapt_run"]
