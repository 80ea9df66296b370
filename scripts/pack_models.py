"""Pack a training run's model bundles into one archive, ready to attach to a release.

Reads ``models/manifest.json`` (written by model_deep_learning.ipynb), checks every file it lists
against its SHA-256 (a symbolic link is refused: bundle files must be regular files), and writes a gzip'd tar holding, flat: the bundles (``<name>.keras`` and
``<name>.json``), their ``manifest.json`` and ``SHA256SUMS`` (``sha256sum -c SHA256SUMS`` checks an
unpacked copy). ``scripts/fetch_models.py`` unpacks it into ``models/``. Files in ``models/`` that
the manifest does not list are left out.

    .venv/bin/python scripts/pack_models.py                       # every bundle of the manifest
    .venv/bin/python scripts/pack_models.py --bundle xception_imagenet_transfer --output build/app-model.tar.gz

``--bundle NAME`` (repeatable) packs only those bundles, with a manifest listing only them (the
default bundle must be one). Default output: ``build/models-<manifest created_at>.tar.gz``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

from pneumonia_cxr.common import file_sha256
from pneumonia_cxr.manifest import (
    MANIFEST_NAME,
    SUMS_NAME,
    ManifestError,
    manifest_sha256,
    manifest_subset,
    read_manifest,
    sha256sums_text,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def pack(models_dir: Path, output: Path | None = None, bundles: list[str] | None = None) -> tuple[Path, dict]:
    """Write the archive of ``models_dir``'s manifest (restricted to ``bundles`` if given) to
    ``output`` (default :func:`default_output`), through a temporary file, so that a failed run
    leaves no partial archive. Returns the archive's path and the manifest it holds.

    Raises:
        ManifestError: the manifest is missing or disagrees with its files, or names no such bundle.
    """
    manifest = read_manifest(models_dir)
    if bundles:
        manifest = manifest_subset(manifest, bundles)
    output = output or default_output(manifest)
    manifest_bytes = (json.dumps(manifest, indent=2) + "\n").encode()
    digests = {**manifest_sha256(manifest), MANIFEST_NAME: hashlib.sha256(manifest_bytes).hexdigest()}
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        with tarfile.open(partial, "w:gz") as archive:
            for name in sorted(manifest_sha256(manifest)):
                _add_file(archive, models_dir / name, name)
            _add_bytes(archive, MANIFEST_NAME, manifest_bytes)
            _add_bytes(archive, SUMS_NAME, sha256sums_text(digests).encode())
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return output, manifest


def _anonymous(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """A member owned by root with read permissions only: no user names of the packing machine."""
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    member.mode = 0o644
    return member


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add ``data`` as the regular file ``name``."""
    member = _anonymous(tarfile.TarInfo(name))
    member.size = len(data)
    archive.addfile(member, io.BytesIO(data))


def _add_file(archive: tarfile.TarFile, path: Path, name: str) -> None:
    """Add the file ``path`` as the regular file ``name``: never as a link (a symbolic link is
    refused with OSError; a hard link's second name is stored as a copy, not as a link member,
    which scripts/fetch_models.py would refuse)."""
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
        status = os.fstat(handle.fileno())
        member = _anonymous(tarfile.TarInfo(name))
        member.size, member.mtime = status.st_size, int(status.st_mtime)
        archive.addfile(member, handle)


def default_output(manifest: dict) -> Path:
    """``build/models-<the manifest's created_at, compact>.tar.gz``."""
    created = str(manifest.get("created_at", "undated")).replace("-", "").replace(":", "")
    return REPO_ROOT / "build" / f"models-{created}.tar.gz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models",
                        help="folder holding manifest.json and the bundles (default: models/)")
    parser.add_argument("--bundle", action="append", metavar="NAME",
                        help="pack only this bundle (repeatable; must include the manifest's default)")
    parser.add_argument("--output", type=Path, help="archive to write (default: build/models-<created_at>.tar.gz)")
    args = parser.parse_args(argv)
    try:
        output, manifest = pack(args.models_dir, args.output, args.bundle)
    except (ManifestError, OSError) as error:
        print(f"pack_models: error: {error}", file=sys.stderr)
        return 1
    print(f"{output} ({output.stat().st_size / 1e6:.1f} MB): {', '.join(manifest['bundles'])}; "
          f"default {manifest['default']}; sha256 {file_sha256(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
