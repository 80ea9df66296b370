"""The run cache (pneumonia_cxr.runs), the families' runs (experiment), the run record (record), the
tables about runs (tables) and the face-recognition base (face)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pneumonia_cxr as pcx
from pneumonia_cxr.training import TrainingResult


def _tiny_model(seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])


def _result() -> TrainingResult:
    return TrainingResult(history={"loss": [0.9, 0.5], "val_loss": [0.8, 0.6]}, best_epoch=2, seconds=1.5)


def test_cached_run_trains_once_then_loads_weights_record_and_logits(tmp_path):
    calls = []

    def train():
        calls.append(1)
        return _tiny_model(1), _result()

    score = lambda net: {"val": np.asarray(net(np.eye(3)), np.float64).ravel()}  # noqa: E731
    net, result, logits, loaded = pcx.runs.cached_run(tmp_path, "k1", lambda: _tiny_model(2), train, score)
    assert not loaded and calls == [1]
    again, result2, logits2, loaded2 = pcx.runs.cached_run(tmp_path, "k1", lambda: _tiny_model(2), train, score)
    assert loaded2 and calls == [1]  # not trained again
    for a, b in zip(net.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)  # the trained weights, not the fresh build's
    np.testing.assert_array_equal(logits["val"], logits2["val"])
    assert result2.best_epoch == 2 and result2.history["val_loss"] == [0.8, 0.6] and result2.seconds == 1.5
    assert not list(tmp_path.glob("*.tmp"))  # nothing half-written left behind


def test_an_interrupted_run_leaves_no_entry_and_trains_next_time(tmp_path):
    def broken():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        pcx.runs.cached_run(tmp_path, "k", _tiny_model, broken, lambda net: {})
    assert not (tmp_path / "k").exists()
    _, _, _, loaded = pcx.runs.cached_run(tmp_path, "k", _tiny_model, lambda: (_tiny_model(), _result()),
                                          lambda net: {"val": np.zeros(2)})
    assert not loaded


def test_cached_logits_compute_once(tmp_path):
    (tmp_path / "k").mkdir()
    values, loaded = pcx.runs.cached_logits(tmp_path, "k", "test", lambda: [1.0, -2.0])
    again, loaded_again = pcx.runs.cached_logits(tmp_path, "k", "test", lambda: pytest.fail("computed twice"))
    assert (loaded, loaded_again) == (False, True)
    np.testing.assert_array_equal(values, again)


def _frame(shas, labels):
    return pd.DataFrame({"sha256": shas, "target": labels})


def test_run_key_changes_with_seed_parts_code_and_data():
    def code_a():
        return 1

    def code_b():
        return 2

    base = pcx.runs.run_key("scratch_cnn", 0, {"recipe": {"epochs": 12}}, [code_a])
    assert base.startswith("scratch_cnn-seed0-")
    assert base == pcx.runs.run_key("scratch_cnn", 0, {"recipe": {"epochs": 12}}, [code_a])
    assert len({base, pcx.runs.run_key("scratch_cnn", 1, {"recipe": {"epochs": 12}}, [code_a]),
                pcx.runs.run_key("scratch_cnn", 0, {"recipe": {"epochs": 13}}, [code_a]),
                pcx.runs.run_key("scratch_cnn", 0, {"recipe": {"epochs": 12}}, [code_b])}) == 4
    one = pcx.runs.data_digest({"train": _frame(["a", "b"], [0, 1])})
    assert one != pcx.runs.data_digest({"train": _frame(["b", "a"], [1, 0])})  # order
    assert one != pcx.runs.data_digest({"train": _frame(["a", "b"], [1, 1])})  # labels


def test_images_digest_follows_the_ordered_content_hashes():
    subsets = {"train": _frame(["a", "b"], [0, 1]), "test": _frame(["c"], [1])}
    digest = pcx.record.images_digest(subsets)
    assert digest == pcx.record.images_digest(dict(reversed(subsets.items())))  # subsets in a fixed order
    assert digest != pcx.record.images_digest({"train": _frame(["b", "a"], [0, 1]), "test": _frame(["c"], [1])})
    assert digest != pcx.record.images_digest({"train": _frame(["a", "b"], [0, 1]), "test": _frame(["d"], [1])})


def test_cpu_description_reads_model_and_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512_bf16\n"
                       "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512_bf16\n")
    cpu = pcx.record.cpu_description(cpuinfo)
    assert cpu["model"] == "Test CPU 9000" and cpu["flags"] == ["avx2", "avx512_bf16", "fpu"] and cpu["native_bfloat16"]
    cpuinfo.write_text("model name\t: Old CPU\nflags\t\t: fpu avx2\n")
    assert not pcx.record.cpu_description(cpuinfo)["native_bfloat16"]


def test_scoring_history_counts_only_runs_that_computed_test_logits():
    previous = {"protocol": {"history": [{"scored_at": "t0", "published": True}]}}
    entries = {"scratch_cnn": {"test": {"accuracy": 0.8512, "roc_auc": 0.9}}, "ensemble": {"status": "not kept"}}
    loaded = pcx.record.scoring_history(previous, entries, False, "t1", "abc", False, "")
    assert loaded == previous["protocol"]["history"]
    scored = pcx.record.scoring_history(previous, entries, True, "t1", "abc", False, "note")
    assert len(scored) == 2 and scored[-1]["results"] == {"scratch_cnn": {"accuracy": 0.851, "roc_auc": 0.9}}
    assert scored[-1]["what_changed"] == "note" and scored[-1]["published"]


def _run(seed, best, epochs, loaded=False):
    history = {"loss": [1.0] * epochs, "val_loss": [1.0] * epochs}
    return {"seed": seed, "result": TrainingResult(history=history, best_epoch=best, seconds=60.0), "loaded": loaded}


def test_early_stopping_sentence_says_when_training_was_cut():
    acted = pcx.tables.early_stopping_sentence([_run(0, 5, 8), _run(1, 12, 12), _run(2, 7, 10)], 12)
    assert "2 of 3 seeds below the cap" in acted and "stopped improving" in acted and "cut" not in acted
    cut = pcx.tables.early_stopping_sentence([_run(0, 12, 12), _run(1, 12, 12), _run(2, 7, 10)], 12)
    assert "1 of 3 seeds below the cap" in cut and "cut by the epoch cap" in cut


def test_seed_runs_table_one_row_per_seed():
    table = pcx.tables.seed_runs_table([_run(0, 3, 6), _run(1, 4, 7, loaded=True)])
    assert list(table.index) == [0, 1] and table.loc[1, "epochs run"] == 7 and table.loc[1, "from cache"]


def test_scratch_cnn_without_preprocessing_shares_its_weights_with_the_saved_network():
    trained = pcx.models.build_scratch_cnn(input_size=64, preprocessing=False)
    saved = pcx.models.build_scratch_cnn(input_size=64)
    assert trained.input_shape == (None, 64, 64, 3) and saved.input_shape == (None, 224, 224, 3)
    assert [layer.name for layer in saved.layers[:2]] == ["centre_crop", "resize"]
    saved.set_weights(trained.get_weights())
    images = np.random.default_rng(0).random((2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(saved.predict(images, verbose=0),
                               trained.predict(pcx.training.cropped_views(images, 64), verbose=0), rtol=1e-4, atol=1e-6)


def test_face_chips_are_the_centre_crop_as_150_px_rgb():
    images = np.zeros((2, 224, 224, 3), np.float32)
    images[:, 14:210, 14:210] = 1.0  # white exactly on the 196 px crop, black border outside
    chips = pcx.face.face_chips(images)
    assert len(chips) == 2 and chips[0].shape == (150, 150, 3) and chips[0].dtype == np.uint8
    assert chips[0].min() == 255  # the border is cut away


def test_face_descriptor_extractor_gives_128_numbers_per_image():
    extractor = pcx.face.FaceDescriptorExtractor()
    images = np.random.default_rng(0).random((2, 224, 224, 3)).astype(np.float32)
    descriptors = extractor.predict_on_batch(images)
    assert descriptors.shape == (2, 128) and descriptors.dtype == np.float32
    assert not np.allclose(descriptors[0], descriptors[1])  # different images, different descriptors
    assert extractor.model_sha256 == pcx.common.file_sha256(pcx.face.face_model_path())
    assert extractor.model_sha256 != extractor.identity and len(extractor.identity) == 64  # the file and the chip recipe


def test_face_model_path_names_what_to_install_when_missing(tmp_path):
    with pytest.raises(pcx.common.WeightsUnavailableError, match="not found"):
        pcx.face.face_model_path(tmp_path / "missing.dat")


def test_notebook_defaults_are_the_package_defaults_scripts_train_with(repo_root):
    """scripts/train_runs.py trains with the package's defaults; the notebook loads those runs only when
    its parameters are the same values (the run cache keys hash them)."""
    import ast
    import json

    cells = json.loads((repo_root / "model_deep_learning.ipynb").read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    e = pcx.experiment
    assert values["head_recipe"] == e.HEAD_RECIPE and values["seeds"] == list(e.SEEDS)
    assert (values["xception_epochs"], values["xception_patience"]) == (e.XCEPTION_EPOCHS, e.XCEPTION_PATIENCE)
    assert (values["xception_views"], values["view_seed"]) == (e.XCEPTION_VIEWS, e.VIEW_SEED)
    assert values["scratch_recipe"] == {} and values["frozen_pass_precision"] == "float32"
    assert pcx.training.SCRATCH_RECIPE["precision"] == "float32"  # the same recipe on every CPU
