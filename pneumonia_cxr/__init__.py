"""Pneumonia detection from paediatric chest X-rays: the package behind ``functions_for_grad_cam``.

Modules: ``common`` (constants, errors), ``data`` (data set, index, split, input pipeline), ``models``
(builders, custom layers, bundles), ``manifest`` (``models/manifest.json``: a run's bundles, their
SHA-256, the default), ``training`` (cached features, precision, training loops),
``evaluation`` (thresholds, metrics, tables), ``plots`` (figures of training and evaluation),
``gradcam`` (Grad-CAM and its checks), ``eda`` (exploratory analysis), ``reporting`` (findings in
words and readable tables). The notebooks, the app and the
tests import everything through ``functions_for_grad_cam``.
"""
