"""The checks of Grad-CAM maps (pneumonia_cxr.gradcam_checks, gradcam_stats): imputation against an
exact sparse solve, baseline copies, removal masks, cascading randomisation, borders, and the
statistics and verdict rules on per-image data built so that a wrong rule fails."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pneumonia_cxr import gradcam_checks as gc
from pneumonia_cxr import gradcam_stats as gs

C, B = 32, 24  # input side, centre-crop side of the tiny model


# ----------------------------------------------------------------------------------------------
# Imputation
# ----------------------------------------------------------------------------------------------
def _exact_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's linear system solved directly (scipy.sparse.linalg.spsolve), image (H, W)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    height, width = image.shape
    unknown = np.flatnonzero(removed.ravel())
    position = np.full(height * width, -1)
    position[unknown] = np.arange(len(unknown))
    rows, cols = np.divmod(unknown, width)
    matrix = sp.lil_matrix((len(unknown), len(unknown)))
    rhs = np.zeros(len(unknown))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            weight = 1 / 12 if dy and dx else 1 / 6
            for k, (r, c) in enumerate(zip(rows + dy, cols + dx)):
                if 0 <= r < height and 0 <= c < width:
                    matrix[k, k] += weight
                    if position[r * width + c] >= 0:
                        matrix[k, position[r * width + c]] -= weight
                    else:
                        rhs[k] += weight * image[r, c]
    out = image.astype(np.float64).ravel()
    out[unknown] = spsolve(matrix.tocsc(), rhs)
    return out.reshape(height, width)


def test_imputation_matches_the_exact_solve():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    image = (0.5 + 0.3 * np.sin(yy / 5.0) * np.cos(xx / 7.0) + 0.05 * rng.random((48, 48))).astype(np.float32)
    ranks = gc.relevance_ranks(np.exp(-((yy - 12) ** 2 + (xx - 30) ** 2) / 80.0), rng.random((48, 48)))
    masks = np.concatenate([gc.removal_masks(ranks, "morf")[[0, 4, 8]], gc.removal_masks(ranks, "lerf")[[4, 8]],
                            (rng.random((1, 48, 48)) < 0.9)])
    filled = gc.linear_imputation(np.broadcast_to(image[None, ..., None], (len(masks), 48, 48, 1)), masks)[..., 0]
    for mask, fill in zip(masks, filled):
        exact = _exact_imputation(image, mask)
        assert np.abs(fill - exact).max() <= gc.IMPUTATION_ERROR_LIMIT
        np.testing.assert_array_equal(fill[~mask], image[~mask])  # known pixels untouched


def test_noisy_imputation_adds_noise_to_removed_pixels_only():
    image = np.full((1, 40, 40, 3), 0.5, np.float32)
    removed = np.zeros((1, 40, 40), bool)
    removed[0, 10:30, 10:30] = True
    out = gc.noisy_linear_imputation(image, removed, np.random.default_rng(0))
    np.testing.assert_array_equal(out[0][~removed[0]], image[0][~removed[0]])
    noise = out[0][removed[0]] - 0.5  # the exact fill of a constant image is the constant
    assert abs(noise.std() - gc.ROAD_NOISE) < 0.1 * gc.ROAD_NOISE and abs(noise.mean()) < 1e-3


# ----------------------------------------------------------------------------------------------
# Baseline copies, ranks, removal masks, scores
# ----------------------------------------------------------------------------------------------
def test_shifted_maps_do_not_wrap_and_keep_the_shape():
    ones = np.ones((1, 20, 20), np.float32)
    copies = gc.shifted_maps(ones, 50, np.random.default_rng(1))[0]
    assert copies.shape == (50, 20, 20)
    for copy in copies:
        rows, cols = np.flatnonzero(copy.any(axis=1)), np.flatnonzero(copy.any(axis=0))
        # what stays is one rectangle touching the frame on both axes: nothing came back from the far side
        assert copy[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].min() == 1.0 and copy.sum() == rows.size * cols.size
        assert (rows[0] == 0 or rows[-1] == 19) and (cols[0] == 0 or cols[-1] == 19)
    assert (copies.sum(axis=(1, 2)) < 400).mean() > 0.5  # most shifts drop what left the crop
    blob = np.zeros((1, 20, 20), np.float32)
    blob[0, 8:11, 9:12] = [[0, 1, 0], [1, 2, 1], [0, 1, 0]]
    inside = [c for c in gc.shifted_maps(blob, 50, np.random.default_rng(2))[0] if c.sum() == blob.sum()]
    assert inside and all(np.count_nonzero(c) == 5 and c.max() == 2.0 for c in inside)  # same shape when inside


def test_relevance_ranks_and_removal_masks():
    values = np.arange(100, dtype=np.float32).reshape(10, 10)
    ranks = gc.relevance_ranks(values, np.zeros((10, 10)))
    assert ranks[9, 9] == 0 and ranks[0, 0] == 99  # highest value first
    tied = gc.relevance_ranks(np.zeros((2, 2)), np.array([[0.1, 0.9], [0.5, 0.3]]))
    np.testing.assert_array_equal(tied, [[3, 0], [1, 2]])  # ties by the tie-breaker, highest first
    morf, lerf = gc.removal_masks(ranks, "morf"), gc.removal_masks(ranks, "lerf")
    assert morf.shape == lerf.shape == (len(gc.PERCENTILES), 10, 10)
    for p, most, least in zip(gc.PERCENTILES, morf, lerf):
        assert most.sum() == least.sum() == p  # p% of the 100 pixels
        assert values[most].min() == 100 - p  # MoRF: the p highest values
        assert values[least].max() == p - 1  # LeRF: the p lowest values
    with pytest.raises(ValueError):
        gc.removal_masks(ranks, "random")


def test_explained_logit_is_signed_by_class():
    np.testing.assert_array_equal(gc.explained_logit([2.0, 2.0, -30.0], [1, 0, 0]), [2.0, -2.0, 30.0])


def test_border_share_is_measured_on_the_crop():
    np.testing.assert_allclose(gc.border_share(np.ones((2, 20, 20))), [0.36, 0.36])
    centre, ring = np.zeros((1, 20, 20)), np.ones((1, 20, 20))
    centre[0, 8:12, 8:12] = 1.0
    ring[0, 2:18, 2:18] = 0.0
    np.testing.assert_array_equal(gc.border_share(np.concatenate([centre, ring])), [0.0, 1.0])
    assert np.isnan(gc.border_share(np.zeros((1, 20, 20)))[0])


# ----------------------------------------------------------------------------------------------
# Cascading randomisation
# ----------------------------------------------------------------------------------------------
def _bn_model(keras, fgc):
    inputs = keras.Input((C, C, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = fgc.custom_layers()["FusedBatchNormalization"](name="bn1")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="dense")(x))
    model.set_weights([w + 0.5 for w in model.get_weights()])  # "trained": away from any initial value
    return model


def test_cascade_randomises_exactly_the_top_groups(fgc, keras_seeded):
    model = _bn_model(keras_seeded, fgc)
    groups = gc.cascade_groups(model)
    assert groups == [["dense"], ["conv2"], ["bn1", "conv1"]]  # conv1 and bn1 are one stage
    trained = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    working = keras_seeded.models.clone_model(model)
    depths = list(gc.cascade_stages(model, working, groups, stages=10, seed=3))
    assert depths == [1, 2, 3]
    for depth in gc.cascade_stages(model, working, groups, stages=10, seed=3):  # checked at each depth
        randomised = {n for g in groups[:depth] for n in g}
        for name in (n for g in groups for n in g):
            now = working.get_layer(name).get_weights()
            differs = [not np.allclose(a, b) for a, b in zip(now, trained[name])]
            assert all(differs) if name in randomised else not any(differs), (depth, name)
    for layer in model.layers:  # the trained model is untouched
        for old, w in zip(trained[layer.name], layer.get_weights()):
            np.testing.assert_array_equal(old, w)


def test_constant_random_maps_never_pass():
    maps = np.random.default_rng(0).random((3, 5, 5))
    rho = gc.map_rank_correlation(maps, np.stack([maps[0] * 2 + 1, np.ones((5, 5)), -maps[2]]))
    assert rho[0] == pytest.approx(1.0) and np.isnan(rho[1]) and rho[2] == pytest.approx(-1.0)
    cascade = pd.DataFrame({"seed": [0, 1, 0, 1, 0, 1], "depth": 3, "method": "gradcam", "image": [0, 0, 1, 1, 2, 2],
                            "rank_corr": [0.1, 0.2, np.nan, 0.0, 0.9, 0.8],
                            "random_map_constant": [False, False, True, False, False, False]})
    per_image = gc.sanity_per_image(cascade)
    assert per_image["sanity_pass"].tolist() == [True, False, False]
    assert per_image["random_map_constant"].tolist() == [False, True, False]


# ----------------------------------------------------------------------------------------------
# Every check on a tiny model
# ----------------------------------------------------------------------------------------------
def _crop_model(keras):
    inputs = keras.Input((C, C, 3))
    x = keras.layers.CenterCrop(B, B, name="centre_crop")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1",
                            kernel_initializer=keras.initializers.RandomNormal(0.0, 0.5, seed=1))(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="dense")(x))


def test_run_checks_on_a_tiny_model(fgc, keras_seeded):
    model = _crop_model(keras_seeded)
    images = np.random.default_rng(0).random((4, C, C, 3)).astype(np.float32)
    explainer = fgc.GradCamExplainer(model, "conv1")
    batch = explainer(images)
    settings = gc.CheckSettings(baseline_draws=2, sanity_seeds=2, curve_methods=("gradcam",))
    per_image, cascade, curves = gc.run_checks(explainer, images, [0, 1, 0, 1], batch, settings)
    assert len(per_image) == 8 and per_image["border_share_uniform"].iloc[0] == pytest.approx(1 - (20 / 24) ** 2)  # 2 px of the 24 px crop
    np.testing.assert_allclose(per_image["border_share"][:4],
                               gc.border_share(fgc.crop_to_box(batch.maps["gradcam"], explainer.box)))
    assert curves["gradcam"]["morf_shifted"].shape == (4, 2, len(gc.PERCENTILES))
    assert per_image.loc[per_image["method"] == "gradcam++", "morf_diff"].isna().all()
    assert set(cascade["seed"]) == {0, 1}
    deepest = cascade[(cascade["depth"] == cascade["depth"].max()) & (cascade["method"] == "gradcam")]
    assert (deepest["rank_corr"].abs() < 0.99).any()  # the explainer sees the randomised weights
    table = gs.summarise_checks(per_image, settings)
    all_rows = table[table["subset"] == "all"]
    assert (all_rows["faithfulness_verdict"] == ["too few images", "not run"]).all()
    for column, value in settings.columns().items():
        assert (all_rows[column] == value).all()


# ----------------------------------------------------------------------------------------------
# Statistics and verdicts
# ----------------------------------------------------------------------------------------------
def test_ties_are_dropped_from_the_tests():
    stats = gs.paired_tests([-1.0] * 6 + [gs.TIE_TOLERANCE / 2] * 4, better_sign=-1)
    assert (stats["wins"], stats["losses"], stats["ties"]) == (6, 0, 4)
    assert stats["sign_p"] == pytest.approx(2 * 0.5 ** 6)  # 6 of 6, not 6 of 10
    rounding = gs.paired_tests([2.8e-10, 7.8e-10, 9.3e-9, 9.4e-6] * 3, better_sign=1)
    assert rounding["wins"] == 0 and rounding["ties"] == 12 and np.isnan(rounding["sign_p"])


def test_holm_against_a_hand_computation():
    adjusted = gs.holm_adjusted([0.01, 0.04, 0.03, np.nan, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running maximum
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, np.nan, 0.02])


def test_interval_spanning_zero_is_no_evidence():
    assert gs.curve_outcome(-0.1, 0.2, 1e-6, 1e-6, better_sign=1) == "no evidence either way"
    assert gs.curve_outcome(0.1, 0.2, 0.01, 0.2, better_sign=1) == "no evidence either way"  # Wilcoxon fails
    assert gs.curve_outcome(0.1, 0.2, 1e-3, 1e-3, better_sign=1) == "better"
    assert gs.curve_outcome(0.1, 0.2, 1e-3, 1e-3, better_sign=-1) == "worse"
    assert gs.curve_outcome(-0.2, -0.1, 1e-3, 1e-3, better_sign=-1) == "better"
    low, high = gs.bca_interval(np.random.default_rng(0).normal(0, 1, 64))[1:]
    assert low < 0 < high


def _per_image(morf_diff: np.ndarray, lerf_diff: np.ndarray, rho: np.ndarray, border: np.ndarray) -> pd.DataFrame:
    n = len(morf_diff)
    frame = pd.DataFrame({"model": "m", "method": "gradcam", "image": np.arange(n),
                          "true_class": np.where(np.arange(n) % 2, "PNEUMONIA", "NORMAL"), "correct": True,
                          "empty_map": False, "morf_shifted": 1.0, "lerf_shifted": 3.0,
                          "rank_corr_random_weights": rho, "random_map_constant": np.isnan(rho),
                          "sanity_pass": np.abs(rho) < gc.RANK_CORR_LIMIT, "border_share": border,
                          "border_share_uniform": 0.36, "border_pass": border < 0.36})
    frame["morf_map"], frame["lerf_map"] = 1.0 + morf_diff, 3.0 + lerf_diff
    frame["morf_diff"], frame["lerf_diff"] = morf_diff, lerf_diff
    frame["road_map"] = (frame["lerf_map"] - frame["morf_map"]) / 2
    frame["road_shifted"] = 1.0
    return frame


def test_verdicts_on_built_cases():
    rng = np.random.default_rng(0)
    n = 64
    rounding = _per_image(rng.uniform(1e-9, 1e-5, n), rng.uniform(1e-9, 1e-5, n), rng.uniform(-0.2, 0.2, n),
                          rng.uniform(0.1, 0.2, n))
    row = gs.summarise_checks(rounding).query("subset == 'all'").iloc[0]
    assert row["faithfulness_verdict"] == "no evidence either way" and row["morf_ties"] == n
    assert row["sanity_verdict"] == "passes" and row["border_verdict"] == "interior"
    good = _per_image(rng.normal(-0.5, 0.2, n), rng.normal(0.0, 0.2, n), np.full(n, 0.9), rng.uniform(0.3, 0.5, n))
    row = gs.summarise_checks(good).query("subset == 'all'").iloc[0]
    assert row["morf_outcome"] == "better" and row["lerf_outcome"] == "no evidence either way"
    assert row["faithfulness_verdict"] == "partly faithful (MoRF)"
    assert row["sanity_verdict"] == "fails" and row["border_verdict"] == "not interior"
    constant = _per_image(rng.normal(-0.5, 0.2, n), rng.normal(0.5, 0.2, n), np.full(n, np.nan), np.full(n, 0.1))
    row = gs.summarise_checks(constant).query("subset == 'all'").iloc[0]
    assert row["faithfulness_verdict"] == "faithful"
    assert row["sanity_verdict"] == "fails" and row["random_maps_constant"] == n and row["sanity_passes"] == 0
    few = gs.summarise_checks(good.iloc[:4]).query("subset == 'all'").iloc[0]
    assert few["faithfulness_verdict"] == "too few images"
