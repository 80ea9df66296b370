"""Helpers shared by the notebooks, the app, the benchmarks and the tests.

Pneumonia detection from paediatric chest X-rays (Kermany et al., Cell 2018; data CC BY 4.0,
doi:10.17632/rscbjbr9sj.2, served on Kaggle as ``paultimothymooney/chest-xray-pneumonia``).

The code lives in the package ``pneumonia_cxr``, one module per part; this module is the one import
of its public names:

- ``data``: data set location and download, index, patient-grouped split, decoding, tf.data pipeline;
- ``models``: scratch CNN, frozen VGG-Face / HED-VGG16 transfer, Xception (ImageNet) transfer with a
  fine-tunable exit flow, custom layers, model bundles on disk;
- ``manifest``: ``models/manifest.json``, the run's bundles with their SHA-256 and the app's default;
- ``training``: cached features keyed by weights, training precision, seeding, training loops, logits;
- ``evaluation``: logit thresholds, metrics with bootstrap intervals, seed- and cross-model ensembles,
  McNemar, result tables;
- ``plots``, ``gradcam`` (Grad-CAM / Grad-CAM++ and their checks), ``eda`` (exploratory analysis);
- ``reporting``: findings in words and readable tables, from the numbers the notebooks wrote.

Conventions: images fed to every model are float32 RGB arrays of shape (N, 224, 224, 3) with values
in [0, 1]; each transfer model converts them to what its pretrained base expects with its own first
layer. Label 1 is PNEUMONIA, 0 is NORMAL; a probability is always that of PNEUMONIA.
"""
from pneumonia_cxr.common import *  # noqa: F401,F403
from pneumonia_cxr.augmentation import *  # noqa: F401,F403
from pneumonia_cxr.data import *  # noqa: F401,F403
from pneumonia_cxr.eda import *  # noqa: F401,F403
from pneumonia_cxr.evaluation import *  # noqa: F401,F403
from pneumonia_cxr.gradcam import *  # noqa: F401,F403
from pneumonia_cxr.manifest import *  # noqa: F401,F403
from pneumonia_cxr.models import *  # noqa: F401,F403
from pneumonia_cxr.plots import *  # noqa: F401,F403
from pneumonia_cxr.reporting import *  # noqa: F401,F403
from pneumonia_cxr.training import *  # noqa: F401,F403
