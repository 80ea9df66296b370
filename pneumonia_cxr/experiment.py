"""The families of the study, one seed at a time, through the run cache (:mod:`pneumonia_cxr.runs`).

Each function returns a list of runs, one per seed: ``{"seed", "model", "head", "result", "view_logits",
"key", "loaded"}``, where ``model`` is the float32 image-to-logit Keras network (None for the
face-recognition family, which computes in dlib), ``head`` the part trained on cached features (absent
for the scratch CNN), ``view_logits`` the logits of each validation view, ``key`` the run's cache key and
``loaded`` whether it came from the cache. The notebook and ``scripts/train_runs.py`` call the same code,
so a run trained ahead by the script is the one the notebook loads.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .augmentation import AUGMENTATION, augment_images, draw_augmentation, perturb_images, sampling_transforms
from .common import PIPELINE_VERSION
from .models import _make_fused_batch_norm_layer, build_scratch_cnn, centre_crop_layer, compile_binary_classifier
from .runs import cached_run, data_digest, run_key
from .training import (SCRATCH_RECIPE, _view_sampler, augmented_batches, cropped_views, grey_uint8, load_grey_images,
                       predict_logits, seed_everything, train_head_on_cached_features, train_scratch_cnn,
                       train_with_early_stopping)

HEAD_RECIPE: dict = {"epochs": 30, "patience": 3, "batch_size": 16, "learning_rate": 1e-3}  # heads on frozen features
XCEPTION_EPOCHS, XCEPTION_PATIENCE = 3, 2  # the Xception tail's epoch cap and patience (2 cores: a tail epoch ~2.5 min)
XCEPTION_VIEWS, VIEW_SEED = 1, 1000  # augmented views per training image cached for the tail; view v's seed: VIEW_SEED + v
SEEDS = (0, 1, 2)

SCRATCH_CODE = (train_scratch_cnn, augmented_batches, cropped_views, grey_uint8, load_grey_images, augment_images,
                draw_augmentation, sampling_transforms, build_scratch_cnn, centre_crop_layer,
                _make_fused_batch_norm_layer, compile_binary_classifier, train_with_early_stopping, seed_everything,
                perturb_images, predict_logits)
HEAD_CODE = (train_head_on_cached_features, _view_sampler, compile_binary_classifier, train_with_early_stopping,
             seed_everything, predict_logits)


def _common_parts(subsets: dict[str, pd.DataFrame], class_weight: dict[int, float], views: Sequence[str]) -> dict:
    """Key parts every run shares: the training and validation data (never the test split, so that a
    validation-only run and a scoring run share their runs), the class weights, the validation views."""
    return {"data": data_digest({name: subsets[name] for name in ("train", "val")}), "pipeline": PIPELINE_VERSION,
            "class_weight": {int(k): round(float(v), 12) for k, v in class_weight.items()}, "views": sorted(views)}


def scratch_runs(subsets: dict[str, pd.DataFrame], class_weight: dict[int, float], seeds: Sequence[int],
                 val_views: dict[str, np.ndarray], cache_dir: str | os.PathLike, recipe: dict | None = None,
                 verbose: int = 0) -> list[dict]:
    """Scratch CNN runs, one per seed (:func:`pneumonia_cxr.training.train_scratch_cnn` with ``recipe``),
    each scored on every validation view (``val_views``: name -> images float32 (N, 224, 224, 3))."""
    recipe = {**SCRATCH_RECIPE, **(recipe or {})}
    parts = _common_parts(subsets, class_weight, val_views) | {"recipe": recipe, "augmentation": AUGMENTATION}
    targets = {name: subsets[name]["target"].to_numpy() for name in ("train", "val")}
    train_grey = None
    runs = []
    for seed in seeds:
        def train(seed=seed):
            nonlocal train_grey
            if train_grey is None:  # read once, and only when a seed has to be trained
                train_grey = load_grey_images(subsets["train"]["path"])
            return train_scratch_cnn(train_grey, targets["train"], val_views["val"], targets["val"], class_weight,
                                     seed, recipe, verbose)

        key = run_key("scratch_cnn", seed, parts, SCRATCH_CODE)
        model, result, logits, loaded = cached_run(
            cache_dir, key, lambda: build_scratch_cnn(input_size=recipe["input_size"]), train,
            lambda net: {view: predict_logits(net, images) for view, images in val_views.items()})
        runs.append({"seed": seed, "model": model, "result": result, "view_logits": logits, "key": key, "loaded": loaded})
    return runs


def head_runs(family: str, build: Callable[[int], tuple[object, object]], features: dict[str, np.ndarray],
              feature_identity: str, class_weight: dict[int, float], subsets: dict[str, pd.DataFrame],
              seeds: Sequence[int], recipe: dict, cache_dir: str | os.PathLike, code: Sequence[Callable] = (),
              verbose: int = 0) -> list[dict]:
    """Runs of a family trained on cached frozen features, one per seed. ``build(seed)`` returns
    (model, head): the full float32 image network (None where there is none) and the part trained on
    ``features`` (``features["train"]`` views (V, N, ...), ``features["val"]`` and ``features["val_<kind>"]``),
    sharing its layers. ``recipe``: ``epochs``, ``patience``, ``batch_size``, ``learning_rate``.
    ``feature_identity``: the frozen network's identity (:func:`pneumonia_cxr.training.extractor_identity`);
    ``code``: the builders whose source belongs in the key."""
    views = [name for name in features if name.startswith("val")]
    parts = _common_parts(subsets, class_weight, views) | {
        "recipe": recipe, "features": feature_identity, "train_views": int(features["train"].shape[0])}
    targets = {name: subsets[name]["target"].to_numpy() for name in ("train", "val")}
    runs = []
    for seed in seeds:
        seed_everything(seed)
        model, head = build(seed)
        net = model if model is not None else head

        def train(head=head, net=net, seed=seed):
            result = train_head_on_cached_features(head, features, targets, class_weight, recipe["epochs"],
                                                   recipe["patience"], recipe["batch_size"], recipe["learning_rate"],
                                                   seed=seed, verbose=verbose)
            return net, result

        key = run_key(family, seed, parts, (*HEAD_CODE, *code))
        net, result, logits, loaded = cached_run(
            cache_dir, key, lambda net=net: net, train,
            lambda _: {view: predict_logits(head, features[view]) for view in views})
        runs.append({"seed": seed, "model": model, "head": head, "result": result, "view_logits": logits,
                     "key": key, "loaded": loaded})
    return runs


def experiment_subsets(data_dir: str | os.PathLike, score_test: bool, quick: bool = False,
                       split_seed: int = 42, quick_per_class: int = 40) -> dict[str, pd.DataFrame]:
    """The study's subsets: the patient-grouped ~90/10 re-split of the official train+val into "train" and
    "val", and the official "test" (read only when ``score_test``: a validation-only run opens no test
    file). ``quick``: ``quick_per_class`` images per split and class."""
    from .common import SPLITS
    from .dataset import build_index, decodable, patient_grouped_split, subsample_per_class

    index = decodable(build_index(data_dir, splits=SPLITS if score_test else ("train", "val")))
    if quick:
        index = subsample_per_class(index, quick_per_class, seed=split_seed)
    split = patient_grouped_split(index, val_fraction=0.1, seed=split_seed)
    used = [name for name in SPLITS if score_test or name != "test"]
    return {name: split[split["subset"] == name].reset_index(drop=True) for name in used}


def validation_views(val: pd.DataFrame, perturbations: Sequence[str]) -> dict[str, np.ndarray]:
    """The validation images float32 (N, 224, 224, 3) as they are ("val") and under each perturbation
    ("val_<kind>", :func:`pneumonia_cxr.training.perturb_in_batches`): what every network is scored on."""
    from .pipeline import load_images
    from .training import perturb_in_batches

    images = load_images(val["path"])
    return {"val": images} | {f"val_{kind}": perturb_in_batches(images, kind) for kind in perturbations}


def pooled_logits(run: dict, y_val: np.ndarray, view_names: Sequence[str]) -> np.ndarray:
    """A run's validation logits, its views stacked in ``view_names`` order (the rule's pooled signal)."""
    from .evaluation import pooled

    return pooled(y_val, [run["view_logits"][view] for view in view_names])[1]


def seed_records(runs: Sequence[dict], y_val: np.ndarray, view_names: Sequence[str]) -> list[dict]:
    """One record per run for :func:`pneumonia_cxr.evaluation.family_entry`: seed, best epoch, epochs run,
    training seconds (features included), precision, whether it came from the cache, the pooled validation
    logits and their log loss."""
    from .evaluation import log_loss_of_logits, pooled

    y_pool = pooled(y_val, [y_val] * len(view_names))[0]
    records = []
    for run in runs:
        logits = pooled_logits(run, y_val, view_names)
        result = run["result"]
        records.append({"seed": run["seed"], "best_epoch": result.best_epoch, "epochs_run": len(result.history["loss"]),
                        "train_seconds": result.seconds + result.feature_seconds, "training_precision": result.precision,
                        "from_cache": run["loaded"], "val_logits": logits, "val_log_loss": log_loss_of_logits(y_pool, logits)})
    return records


def lowest_loss_run(runs: Sequence[dict], y_val: np.ndarray, view_names: Sequence[str]) -> dict:
    """The run with the lowest pooled validation log loss (the family's saved seed; first on ties)."""
    records = seed_records(runs, y_val, view_names)
    return runs[int(np.argmin([record["val_log_loss"] for record in records]))]


def test_logits(runs: dict[str, list[dict]], features: dict[str, dict], test_images,
                cache_dir: str | os.PathLike) -> tuple[dict[str, list[np.ndarray]], list[bool]]:
    """Test logits of every run: a head's on its family's cached test features, a whole network's on
    ``test_images`` (a dataset); each stored with its run (:func:`pneumonia_cxr.runs.cached_logits`).
    Returns the logits per family (one array per seed) and, per run, whether they were loaded."""
    from .runs import cached_logits

    logits, loaded = {}, []
    for name, family_runs in runs.items():
        logits[name] = []
        for run in family_runs:
            compute = ((lambda run=run: predict_logits(run["head"], features[name]["test"])) if "head" in run
                       else (lambda run=run: predict_logits(run["model"], test_images)))
            values, hit = cached_logits(cache_dir, run["key"], "test", compute)
            logits[name].append(values)
            loaded.append(hit)
    return logits, loaded


def xception_extractor(weights: str, recipe_name: str, policy: str = "float32") -> tuple[object, object]:
    """(model, extractor) of the Xception family: a float32 network of the recipe ``recipe_name``
    (``XCEPTION_RECIPES``) and its frozen part up to the fine-tuned block, computing in ``policy``."""
    from .models import build_xception_transfer, tail_input_extractor
    from .training import XCEPTION_RECIPES, frozen_extractor

    fine_tune = XCEPTION_RECIPES[recipe_name]["fine_tune"]
    return frozen_extractor(lambda: build_xception_transfer(weights, fine_tune=fine_tune)[0], tail_input_extractor, policy)


def xception_family(subsets: dict[str, pd.DataFrame], class_weight: dict[int, float], seeds: Sequence[int],
                    weights: str, recipe_name: str, epochs: int, patience: int, views: int, view_seed: int,
                    perturbations: Sequence[str], feature_cache: str | os.PathLike, run_cache: str | os.PathLike,
                    policy: str = "float32") -> dict:
    """The ImageNet Xception family: the frozen part's activations (cached, ``views`` augmented views of
    each training image), then one tail per seed trained on them (:func:`head_runs`). Returns
    ``{"runs", "features", "identity", "feature_seconds", "model", "recipe"}`` (``model``: a float32 network
    of the family, for its parameter counts)."""
    from .models import build_xception_transfer
    from .training import XCEPTION_RECIPES, extractor_identity, frozen_features

    fine_tune = XCEPTION_RECIPES[recipe_name]["fine_tune"]
    model, extractor = xception_extractor(weights, recipe_name, policy)
    identity = extractor_identity(extractor)
    features, seconds = frozen_features(extractor, subsets, feature_cache, views, view_seed, perturbations)
    recipe = {"epochs": epochs, "patience": patience, "batch_size": 32,
              "learning_rate": XCEPTION_RECIPES[recipe_name]["learning_rate"]}
    runs = head_runs("xception_imagenet_transfer",
                     lambda seed: build_xception_transfer(weights, fine_tune=fine_tune, seed=seed), features, identity,
                     class_weight, subsets, seeds, recipe, run_cache, code=(build_xception_transfer,))
    return {"runs": runs, "features": features, "identity": identity, "feature_seconds": seconds, "model": model,
            "recipe": recipe}


def face_family(subsets: dict[str, pd.DataFrame], class_weight: dict[int, float], seeds: Sequence[int],
                recipe: dict, perturbations: Sequence[str], feature_cache: str | os.PathLike,
                run_cache: str | os.PathLike, model_file: str | os.PathLike | None = None) -> dict:
    """The face-recognition family: dlib's descriptors (cached), then the original study's head per seed.
    Returns ``{"runs", "features", "identity", "feature_seconds", "extractor"}``; raises
    WeightsUnavailableError when the dlib model is not installed."""
    from .face import DESCRIPTOR_SIZE, FaceDescriptorExtractor
    from .models import build_head
    from .training import frozen_features

    extractor = FaceDescriptorExtractor(model_file)
    features, seconds = frozen_features(extractor, subsets, feature_cache, 0, 0, perturbations)
    runs = head_runs("face_dlib_resnet", lambda seed: (None, build_head((DESCRIPTOR_SIZE,), seed)), features,
                     extractor.identity, class_weight, subsets, seeds, recipe, run_cache, code=(build_head,))
    return {"runs": runs, "features": features, "identity": extractor.identity, "feature_seconds": seconds,
            "extractor": extractor}


def seed_threshold(entry: dict, seed: int) -> float:
    """The validation threshold (a logit) of one seed of a family's record
    (:func:`pneumonia_cxr.evaluation.family_entry`)."""
    return next(record["threshold"] for record in entry["seeds"] if record["seed"] == seed)
