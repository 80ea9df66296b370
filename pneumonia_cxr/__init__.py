"""Pneumonia detection from paediatric chest X-rays: the package behind ``functions_for_grad_cam``.

Modules: ``common`` (constants, errors), ``data`` (data set, index, split, input pipeline), ``models``
(builders, custom layers, bundles), ``training`` (cached features, precision, training loops),
``evaluation`` (thresholds, metrics, tables), ``plots`` (figures of training and evaluation),
``gradcam`` (Grad-CAM and its checks), ``eda`` (exploratory analysis). The notebooks, the app and the
tests import everything through ``functions_for_grad_cam``.
"""
