"""``models/manifest.json``: the model bundles of one training run, their SHA-256, and the default.

The model notebook writes it (:func:`write_manifest`); the app and ``grad_cam.ipynb`` read it
(:func:`read_manifest`) and use only the bundles it lists, so a bundle left in ``models/`` by an
earlier run is never served. Layout (schema 1)::

    {"schema": 1, "created_at": "2026-11-30T12:00:00Z", "run": {...},
     "default": "<name>", "default_rule": "<how the default was chosen>",
     "bundles": {"<name>": {"model": "<name>.keras", "metadata": "<name>.json",
                            "sha256": {"<name>.keras": "<hex>", "<name>.json": "<hex>"}}}}

File names are relative to the folder holding the manifest; each bundle's files are named after it,
listed files must be regular files (not symbolic links), and each SHA-256 is 64 lowercase hex digits.
``load_model_bundle`` takes a bundle's metadata from :func:`listed_metadata_path` (SHA-checked).
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
MODEL_SUFFIX = ".keras"
METADATA_SUFFIX = ".json"
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
        ValueError: ``default`` is not a bundle, a bundle's files are not ``<name>.keras`` and
            ``<name>.json``, or one is missing, a symbolic link or not in ``models_dir``.
    """
    models_dir = Path(models_dir)
    if default not in bundles:
        raise ValueError(f"default bundle '{default}' is not one of the bundles {sorted(bundles)}")
    entries = {}
    for name, model_path in sorted(bundles.items()):
        model_path = Path(model_path)
        if model_path.name != f"{name}{MODEL_SUFFIX}":
            raise ValueError(f"bundle '{name}': its model file must be {name}{MODEL_SUFFIX}, not {model_path.name}")
        files = (model_path, model_path.with_suffix(METADATA_SUFFIX))
        for path in files:
            if path.resolve().parent != models_dir.resolve() or path.is_symlink() or not path.is_file():
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
        ManifestError: no manifest, unreadable or malformed, or a listed file missing, changed or a
            symbolic link; one line naming the file, the problem and the fix.
    """
    path = Path(models_dir) / MANIFEST_NAME
    manifest = _load_manifest(path)
    for name, entry in manifest["bundles"].items():
        _check_bundle_files(Path(models_dir), name, entry, path)
    return manifest


def listed_metadata_path(model_path: str | os.PathLike) -> Path | None:
    """The metadata file that the manifest beside ``model_path`` lists with it, after checking the
    SHA-256 of both; None when that folder has no manifest or its manifest does not list the file.

    Raises:
        ManifestError: the manifest is unreadable or malformed, or the bundle's model or metadata
            file is missing, changed or a symbolic link (the message names the file).
    """
    model_path = Path(model_path)
    folder = model_path.parent
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.exists():
        return None
    manifest = _load_manifest(manifest_path)
    for name, entry in manifest["bundles"].items():
        if entry["model"] == model_path.name:
            _check_bundle_files(folder, name, entry, manifest_path)
            return folder / entry["metadata"]
    return None


def _load_manifest(path: Path) -> dict:
    """The manifest in file ``path``, its structure checked (not its files); ManifestError else."""
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found, so no trained model is named; {MANIFEST_FIX}") from None
    except (OSError, ValueError) as error:
        raise ManifestError(f"{path}: unreadable ({error}); {MANIFEST_FIX}") from None
    _check_structure(manifest, path)
    return manifest


def _check_structure(manifest: object, path: Path) -> None:
    """ManifestError unless ``manifest`` has schema 1's keys, a listed default and well-formed bundles."""
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
        problem = _bundle_entry_problem(name, entry)
        if problem:
            raise fail(f"bundle '{name}': {problem}")


def _bundle_entry_problem(name: str, entry: object) -> str | None:
    """What is wrong with bundle ``name``'s entry (its keys, file names, SHA-256 values), or None."""
    if not isinstance(entry, dict) or not {"model", "metadata", "sha256"} <= set(entry):
        return "lacks 'model', 'metadata' or 'sha256'"
    expected = {"model": f"{name}{MODEL_SUFFIX}", "metadata": f"{name}{METADATA_SUFFIX}"}
    if not is_plain_file_name(expected["model"]):
        return f"file name {expected['model']!r} is not a plain name in the models folder"
    for key, file_name in expected.items():
        if entry[key] != file_name:
            return f"'{key}' is {entry[key]!r}, not {file_name!r} (named after the bundle)"
    digests = entry["sha256"]
    if not isinstance(digests, dict) or set(digests) != set(expected.values()):
        return f"'sha256' must map exactly its files {sorted(expected.values())} to their SHA-256"
    malformed = sorted(file_name for file_name, digest in digests.items() if not is_sha256_hex(digest))
    if malformed:
        return f"the SHA-256 of {malformed[0]} is not 64 lowercase hex digits"
    return None


def is_plain_file_name(name: object) -> bool:
    """True for a bare file name: no folder part, no backslash, not hidden (no leading '.')."""
    return isinstance(name, str) and bool(name) and Path(name).name == name and "\\" not in name \
        and not name.startswith(".")


def is_sha256_hex(value: object) -> bool:
    """True for a SHA-256 digest as written here: a string of 64 lowercase hex digits."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _check_bundle_files(folder: Path, name: str, entry: dict, manifest_path: Path) -> None:
    """ManifestError unless each file of bundle ``name`` is in ``folder`` with its recorded SHA-256."""
    for file_name, expected in entry["sha256"].items():
        _check_file(folder / file_name, expected, f"bundle '{name}'", manifest_path)


def _check_file(file: Path, expected: str, what: str, manifest_path: Path) -> None:
    """ManifestError unless ``file`` is a regular file (not a symbolic link) with SHA-256 ``expected``."""
    if file.is_symlink():
        raise ManifestError(f"{file}: a symbolic link ({what} of {manifest_path}); a bundle file must be "
                            f"a regular file: copy the file it points to in its place")
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
        if not is_sha256_hex(digest) or not is_plain_file_name(name) or name in digests:
            raise ValueError(f"SHA256SUMS line {number} is not '<sha256 hex>  <file name>' (once per file): {line!r}")
        digests[name] = digest
    return digests
