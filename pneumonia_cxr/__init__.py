"""Pneumonia detection from paediatric chest X-rays, with Grad-CAM.

    import pneumonia_cxr as pcx
    index = pcx.dataset.decodable(pcx.dataset.build_index(pcx.dataset.resolve_data_dir()))

Modules, one job each:

- ``common``: constants, errors and display names shared by every part;
- ``dataset``: the data set's location and download, the index of its images, the
  patient-grouped split, class weights;
- ``images``: decoding files and uploads, the upload limits, the one preprocessing of model inputs;
- ``pipeline``: the tf.data input pipeline and its persistent cache of decoded images;
- ``augmentation``: training augmentation and the validation perturbations;
- ``models``: builders, custom layers, model bundles on disk; ``face``: the offline face-recognition base;
- ``manifest``: ``models/manifest.json`` (a run's bundles, their SHA-256, the default);
- ``training``: cached features, precision, training loops, logits; ``runs``: trained runs cached by
  what made them; ``experiment``: the model notebook's experiment;
- ``evaluation``: thresholds, metrics with bootstrap intervals, ensembles, result tables;
- ``plots``: figures of training and evaluation; ``gradcam``, ``gradcam_checks``, ``gradcam_stats``, ``gradcam_report``:
  Grad-CAM maps; how far they can be trusted (sampling, curves, statistics); the checks in words and figures; ``overlay``: a heatmap drawn over an image (no matplotlib);
- ``eda``, ``shortcut``: exploratory analysis, the size/aspect shortcut; ``reporting``: findings in words;
- ``jsonio``: strict JSON for the results files (missing values as ``null``).

Importing the package is cheap: TensorFlow, Keras and Matplotlib load when a function needs them.
``functions_for_grad_cam`` is the original study's entry point, a thin module over this package.
"""
from . import (  # noqa: F401  (the submodules, as attributes: pcx.dataset, pcx.evaluation, ...)
    augmentation,
    common,
    dataset,
    eda,
    evaluation,
    experiment,
    face,
    findings,
    front_page,
    gradcam,
    gradcam_checks,
    gradcam_report,
    gradcam_stats,
    images,
    jsonio,
    manifest,
    models,
    overlay,
    pipeline,
    plots,
    record,
    reporting,
    runs,
    shortcut,
    tables,
    training,
)
