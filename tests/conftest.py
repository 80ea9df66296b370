"""Shared fixtures for the test suite.

The data root comes from the environment variable ``CHEST_XRAY_DATA_ROOT`` (default
``<repo>/../shared/data``) and holds ``chest_xray_224/`` and ``chest_xray_fullsize_sample/``.
Expensive objects (the index of the 224 set, the split, the HED transfer model) are built once per
session. The notebook tests run last.
"""
from __future__ import annotations

import importlib
import inspect
import io
import os
import pkgutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(session, config, items):
    """Run the slow notebook tests after everything else (stable order otherwise)."""
    items.sort(key=lambda item: Path(str(item.fspath)).name == "test_notebooks.py")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("CHEST_XRAY_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")).resolve()
    if not (root / "chest_xray_224").is_dir():
        pytest.fail(f"Test data not found: {root}/chest_xray_224 (set CHEST_XRAY_DATA_ROOT)")
    return root


@pytest.fixture(scope="session")
def data_224(data_root) -> Path:
    return data_root / "chest_xray_224"


@pytest.fixture(scope="session")
def fullsize_dir(data_root) -> Path:
    return data_root / "chest_xray_fullsize_sample"


@pytest.fixture(scope="session")
def update_readme():
    """scripts/update_readme.py as a module (its README section builders)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_readme", REPO_ROOT / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _defined_in(module, value) -> bool:
    """True unless ``value`` is a module, or a class or function that ``module`` imported."""
    if inspect.ismodule(value):
        return False
    return not callable(value) or getattr(value, "__module__", None) == module.__name__


def public_names() -> SimpleNamespace:
    """Every public name of every module of ``pneumonia_cxr`` as one namespace, for the tests (a
    name two modules define is the one of the module last in alphabetical order)."""
    import pneumonia_cxr

    names = {}
    for info in pkgutil.iter_modules(pneumonia_cxr.__path__):
        module = importlib.import_module(f"pneumonia_cxr.{info.name}")
        names.update({name: value for name, value in vars(module).items()
                      if not name.startswith("_") and _defined_in(module, value)})
    return SimpleNamespace(**names)


@pytest.fixture(scope="session")
def fgc() -> SimpleNamespace:
    """The package under test: the public names of all its modules (:func:`public_names`)."""
    return public_names()


@pytest.fixture(scope="session")
def index_224(fgc, data_224):
    """Index of the whole 224 set (build_index, ~2 s)."""
    return fgc.build_index(data_224)


@pytest.fixture(scope="session")
def split_224(fgc, index_224):
    """Patient-grouped split of the readable rows of the 224 set."""
    return fgc.patient_grouped_split(fgc.decodable(index_224, warn=False))


@pytest.fixture(scope="session")
def sample_rows(index_224):
    """Eight readable images of the 224 set (4 NORMAL, 4 PNEUMONIA from official train), in path order."""
    usable = index_224[(index_224["problem"] == "") & (index_224["split"] == "train")]
    rows = [usable[usable["target"] == t].iloc[[0, 100, 200, 300]] for t in (0, 1)]
    import pandas as pd

    return pd.concat(rows).sort_values("path").reset_index(drop=True)


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (40, 32)) -> bytes:
    """A small random RGB JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def make_kaggle_tree(tmp_path_factory):
    """Factory: a small synthetic Kaggle-layout folder {train,val,test}/{NORMAL,PNEUMONIA} in tmp.

    ``make_kaggle_tree(per_class=2, nested=False)`` returns the data root (for ``nested`` the
    outer folder holding chest_xray/chest_xray/ and __MACOSX/, and the real root is
    ``outer / "chest_xray" / "chest_xray"``). Every call makes a fresh folder.
    """
    names = {"NORMAL": ["IM-{:04d}-0001.jpeg", "NORMAL2-IM-{:04d}-0001.jpeg"],
             "PNEUMONIA": ["person{}_bacteria_1.jpeg", "person{}_virus_2.jpeg"]}

    def make(per_class: int = 2, nested: bool = False) -> Path:
        outer = tmp_path_factory.mktemp("kaggle")
        root = outer / "chest_xray" / "chest_xray" if nested else outer
        seed = 0
        for split in ("train", "val", "test"):
            for label in ("NORMAL", "PNEUMONIA"):
                folder = root / split / label
                folder.mkdir(parents=True)
                for i in range(per_class):
                    pattern = names[label][i % 2]
                    seed += 1
                    (folder / pattern.format(seed)).write_bytes(jpeg_bytes(seed))
        return outer if nested else root

    return make


@pytest.fixture(scope="session")
def keras_seeded():
    import keras

    keras.utils.set_random_seed(0)
    return keras


@pytest.fixture(scope="session")
def hed_transfer(fgc, keras_seeded):
    """(model, head) of the HED-VGG16 transfer model with its bundled weights (built once)."""
    return fgc.build_transfer_model(fgc.HED_BASE)


@pytest.fixture(scope="session")
def scratch_cnn(fgc, keras_seeded):
    return fgc.build_scratch_cnn()


@pytest.fixture(scope="session")
def sample_images(fgc, sample_rows):
    """Model inputs (8, 224, 224, 3) of ``sample_rows``."""
    return fgc.load_images(sample_rows["path"].tolist())
