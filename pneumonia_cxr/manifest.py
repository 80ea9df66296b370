"""``models/manifest.json``: the model bundles of one training run, their SHA-256, and the default.

The model notebook writes it (:func:`write_manifest`); the app and ``grad_cam.ipynb`` read it
(:func:`read_manifest`) and use only the bundles it lists, so a bundle left in ``models/`` by an
earlier run is never served. Layout (schema 1)::

    {"schema": 1, "created_at": "2026-11-30T12:00:00Z", "run": {...},
     "default": "<name>", "default_rule": "<how the default was chosen>",
     "bundles": {"<name>": {"model": "<name>.keras", "metadata": "<name>.json",
                            "sha256": {"<name>.keras": "<hex>", "<name>.json": "<hex>"}}}}

File names are relative to the folder holding the manifest.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from .common import ManifestError, file_sha256

MANIFEST_NAME = "manifest.json"
SUMS_NAME = "SHA256SUMS"  # a release archive's checksum file (scripts/pack_models.py, scripts/fetch_models.py)
MANIFEST_SCHEMA = 1
MANIFEST_FIX = ("re-run model_deep_learning.ipynb, or fetch a release archive "
                "(python scripts/fetch_models.py URL_OR_FILE)")


def write_manifest(models_dir: str | os.PathLike, bundles: dict[str, Path], default: str,
                   default_rule: str, run: dict) -> Path:
    """Write ``<models_dir>/manifest.json`` naming ``bundles`` and the ``default`` one; returns its path.

    Args:
        bundles: bundle name -> its ``.keras`` file in ``models_dir`` (as ``save_model_bundle``
            returns it), with its metadata ``.json`` beside it.
        default: the bundle the app serves without ``--model``; one of ``bundles``.
        default_rule: how the default was chosen, in words (e.g. the validation rule).
        run: facts of the run, recorded as given (e.g. ``{"git_describe": ..., "scored_at": ...}``).

    Raises:
        ValueError: ``default`` is not a bundle, or a bundle file is missing or not in ``models_dir``.
    """
    models_dir = Path(models_dir)
    if default not in bundles:
        raise ValueError(f"default bundle '{default}' is not one of the bundles {sorted(bundles)}")
    entries = {}
    for name, model_path in sorted(bundles.items()):
        model_path = Path(model_path)
        files = (model_path, model_path.with_suffix(".json"))
        for path in files:
            if path.resolve().parent != models_dir.resolve() or not path.is_file():
                raise ValueError(f"bundle '{name}': {path} is not a file in {models_dir}")
        entries[name] = {"model": files[0].name, "metadata": files[1].name,
                         "sha256": {path.name: file_sha256(path) for path in files}}
    manifest = {"schema": MANIFEST_SCHEMA,
                "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "run": run, "default": default, "default_rule": default_rule, "bundles": entries}
    return write_manifest_dict(models_dir, manifest)


def write_manifest_dict(models_dir: str | os.PathLike, manifest: dict) -> Path:
    """Write a manifest dict to ``<models_dir>/manifest.json`` atomically (temporary file, rename)."""
    path = Path(models_dir) / MANIFEST_NAME
    partial = path.with_name(f".{MANIFEST_NAME}.partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, path)
    return path


def read_manifest(models_dir: str | os.PathLike) -> dict:
    """The manifest of ``models_dir``, after checking that every file it lists is there with its
    recorded SHA-256.

    Raises:
        ManifestError: no manifest, unreadable or malformed, or a listed file missing or changed;
            one line naming the file, the problem and the fix.
    """
    path = Path(models_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found, so no trained model is named; {MANIFEST_FIX}") from None
    except (OSError, ValueError) as error:
        raise ManifestError(f"{path}: unreadable ({error}); {MANIFEST_FIX}") from None
    _check_structure(manifest, path)
    for name, entry in manifest["bundles"].items():
        for file_name, expected in entry["sha256"].items():
            _check_file(Path(models_dir) / file_name, expected, f"bundle '{name}'", path)
    return manifest


def _check_structure(manifest: object, path: Path) -> None:
    """ManifestError unless ``manifest`` has schema 1's keys, a listed default and safe file names."""
    def fail(problem: str) -> ManifestError:
        return ManifestError(f"{path}: {problem}; {MANIFEST_FIX}")

    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        raise fail(f"not a schema {MANIFEST_SCHEMA} manifest")
    bundles = manifest.get("bundles")
    if not isinstance(bundles, dict) or not bundles:
        raise fail("lists no bundles")
    if manifest.get("default") not in bundles:
        raise fail(f"default '{manifest.get('default')}' is not one of its bundles {sorted(bundles)}")
    for name, entry in bundles.items():
        try:
            listed = {entry["model"], entry["metadata"]}
            hashed = set(entry["sha256"])
        except (KeyError, TypeError):
            raise fail(f"bundle '{name}' lacks 'model', 'metadata' or 'sha256'") from None
        if listed != hashed:
            raise fail(f"bundle '{name}': sha256 covers {sorted(hashed)}, not its files {sorted(listed)}")
        unsafe = [file_name for file_name in listed if not is_plain_file_name(file_name)]
        if unsafe:
            raise fail(f"bundle '{name}': file name {unsafe[0]!r} is not a plain name in the models folder")


def is_plain_file_name(name: object) -> bool:
    """True for a bare file name: no folder part, no backslash, not hidden (no leading '.')."""
    return isinstance(name, str) and bool(name) and Path(name).name == name and "\\" not in name \
        and not name.startswith(".")


def _check_file(file: Path, expected: str, what: str, manifest_path: Path) -> None:
    """ManifestError unless ``file`` exists with SHA-256 ``expected``."""
    if not file.is_file():
        raise ManifestError(f"{file}: missing ({what} of {manifest_path}); {MANIFEST_FIX}")
    actual = file_sha256(file)
    if actual != expected:
        raise ManifestError(f"{file}: SHA-256 {actual[:12]}... differs from {expected[:12]}... recorded "
                            f"in {manifest_path} (changed since the run that wrote it); {MANIFEST_FIX}")


def bundle_path(models_dir: str | os.PathLike, manifest: dict, name: str | None = None) -> Path:
    """Path of the ``.keras`` file of bundle ``name`` (default: the manifest's default).

    Raises:
        ManifestError: ``name`` is not listed in the manifest.
    """
    name = manifest["default"] if name is None else name
    if name not in manifest["bundles"]:
        raise ManifestError(f"{Path(models_dir) / MANIFEST_NAME}: no bundle '{name}' (it lists "
                            f"{', '.join(sorted(manifest['bundles']))})")
    return Path(models_dir) / manifest["bundles"][name]["model"]


def manifest_subset(manifest: dict, names: list[str]) -> dict:
    """The manifest restricted to bundles ``names`` (which must include its default).

    Raises:
        ManifestError: a name is not listed, or the default is left out.
    """
    unknown = sorted(set(names) - set(manifest["bundles"]))
    if unknown:
        raise ManifestError(f"no bundle {unknown} in the manifest (it lists {sorted(manifest['bundles'])})")
    if manifest["default"] not in names:
        raise ManifestError(f"the default bundle '{manifest['default']}' must be among {sorted(names)}")
    return {**manifest, "bundles": {name: manifest["bundles"][name] for name in sorted(set(names))}}


def manifest_sha256(manifest: dict) -> dict[str, str]:
    """{file name: SHA-256} of every bundle file the manifest lists."""
    return {file_name: digest for entry in manifest["bundles"].values()
            for file_name, digest in entry["sha256"].items()}


def sha256sums_text(digests: dict[str, str]) -> str:
    """``SHA256SUMS`` file text (``sha256sum`` format, ``sha256sum -c`` checks it), sorted by name."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(digests.items()))


def parse_sha256sums(text: str) -> dict[str, str]:
    """{file name: hex digest} of a ``SHA256SUMS`` text.

    Raises:
        ValueError: a line is not ``<64 hex digits>  <plain file name>``, or a name repeats.
    """
    digests: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest) \
                or not is_plain_file_name(name) or name in digests:
            raise ValueError(f"SHA256SUMS line {number} is not '<sha256 hex>  <file name>' (once per file): {line!r}")
        digests[name] = digest
    return digests
