"""The original study's entry point (Silvano315/Pneumonia_Detection), now a thin module over the
package ``pneumonia_cxr``: the steps of the study under the names of this project.

The original study's functions and what replaced them:

- ``image_preprocessing`` (Keras ``flow_from_directory``) -> ``find_dataset_root``, ``build_index``,
  ``decodable``, ``patient_grouped_split``, ``compute_class_weights``, ``make_dataset``;
- ``get_img_array`` -> ``load_images`` (model inputs float32 (N, 224, 224, 3) in [0, 1]);
- ``scratch_model`` -> ``build_scratch_cnn``; the VGG-Face transfer -> ``build_transfer_model(VGGFACE_BASE)``;
- training and ``plot_history`` -> ``train_scratch_cnn``, ``predict_probabilities``, ``plot_training_curves``;
- ``make_gradcam_heatmap`` -> ``make_gradcam_heatmap`` (``last_conv_layer_name`` finds the layer);
- ``save_and_display_gradcam`` -> ``overlay_heatmap``, ``save_overlay_png``.

Everything else: ``import pneumonia_cxr as pcx`` (``pcx.dataset``, ``pcx.evaluation``, ...).
Label 1 is PNEUMONIA, 0 is NORMAL; a probability is always that of PNEUMONIA.
"""
from pneumonia_cxr.dataset import (  # noqa: F401
    build_index,
    compute_class_weights,
    decodable,
    find_dataset_root,
    patient_grouped_split,
)
from pneumonia_cxr.gradcam import make_gradcam_heatmap, overlay_heatmap, save_overlay_png  # noqa: F401
from pneumonia_cxr.models import (  # noqa: F401
    VGGFACE_BASE,
    build_scratch_cnn,
    build_transfer_model,
    last_conv_layer_name,
)
from pneumonia_cxr.pipeline import load_images, make_dataset  # noqa: F401
from pneumonia_cxr.plots import plot_training_curves  # noqa: F401
from pneumonia_cxr.training import predict_probabilities, train_scratch_cnn  # noqa: F401
