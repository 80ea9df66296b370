"""Fetch a model archive (made by scripts/pack_models.py) from a URL or a file, check it, and unpack
it into ``models/``: the app can then run without training first.

    .venv/bin/python scripts/fetch_models.py https://github.com/OWNER/REPO/releases/download/TAG/models-....tar.gz
    .venv/bin/python scripts/fetch_models.py build/models-20261130T120000Z.tar.gz [--models-dir models] [--force]

Everything is checked before ``models/`` is touched: the archive may hold only plain files at its
top level (no folders, links, absolute paths or ``..``: path traversal is refused), every file must
match its line of ``SHA256SUMS`` and every bundle file the SHA-256 in ``manifest.json``. The files
are unpacked into a hidden folder inside ``models/`` and moved into place one rename each, the
manifest last: a failure before that leaves ``models/`` as it was, and the app trusts a bundle only
once the new manifest names it. A file of ``models/`` that would be replaced by different content
is refused unless ``--force`` is given. Exit status 1 with the reason on failure.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pneumonia_cxr.common import file_sha256  # noqa: E402
from pneumonia_cxr.manifest import (  # noqa: E402
    MANIFEST_NAME,
    SUMS_NAME,
    ManifestError,
    is_plain_file_name,
    manifest_sha256,
    parse_sha256sums,
    read_manifest,
)

DOWNLOAD_TIMEOUT = 60  # seconds without data before a download is given up


class FetchError(Exception):
    """The archive could not be had, or is not a valid model archive; the message says why."""


def fetch(source: str, models_dir: Path, force: bool = False) -> dict:
    """Fetch ``source`` (http(s) URL or file), check it and unpack it into ``models_dir``; returns
    the manifest it installed.

    Raises:
        FetchError: download failed, unsafe or incomplete archive, checksum mismatch, or a file of
            ``models_dir`` that would change (without ``force``).
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=models_dir) as staging:
        staging = Path(staging)
        archive = _local_copy(source, staging / "archive")
        unpacked = staging / "unpacked"
        unpacked.mkdir()
        names = _unpack(archive, unpacked)
        manifest = _verify(unpacked, names)
        _refuse_changes(unpacked, models_dir, names, force)
        for name in sorted(names - {SUMS_NAME, MANIFEST_NAME}) + [MANIFEST_NAME]:  # the manifest last
            os.replace(unpacked / name, models_dir / name)
    return manifest


def _local_copy(source: str, target: Path) -> Path:
    """``source`` itself when it is a file, else its download (http or https) to ``target``."""
    scheme = urllib.parse.urlparse(source).scheme
    if scheme not in ("http", "https"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FetchError(f"{source}: no such file (give a file or an http(s) URL)")
        return path
    try:
        with urllib.request.urlopen(source, timeout=DOWNLOAD_TIMEOUT) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError) as error:
        raise FetchError(f"{source}: download failed ({error})") from None
    return target


def _unpack(archive: Path, folder: Path) -> set[str]:
    """Write each member of the tar archive into ``folder``; returns their names.

    Raises:
        FetchError: not a tar archive, or a member that is not a plain top-level file (a folder, a
            link, a device, an absolute path, a path with '..') or that repeats.
    """
    names: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if not member.isreg() or not is_plain_file_name(member.name) or member.name in names:
                    raise FetchError(f"{archive.name}: refused member {member.name!r}: a model archive holds "
                                     f"only plain files at its top level, each once")
                with tar.extractfile(member) as data, open(folder / member.name, "wb") as out:
                    shutil.copyfileobj(data, out, 1 << 20)
                names.add(member.name)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise FetchError(f"{archive.name}: not a readable tar archive ({error})") from None
    return names


def _verify(folder: Path, names: set[str]) -> dict:
    """The manifest of the unpacked ``folder``, after checking ``SHA256SUMS`` lists exactly the
    other files with their digests, and the manifest its bundles.

    Raises:
        FetchError: naming the missing, unlisted or changed file.
    """
    if SUMS_NAME not in names or MANIFEST_NAME not in names:
        raise FetchError(f"the archive lacks {SUMS_NAME} or {MANIFEST_NAME}: not made by scripts/pack_models.py")
    try:
        sums = parse_sha256sums((folder / SUMS_NAME).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise FetchError(f"{SUMS_NAME}: {error}") from None
    if set(sums) != names - {SUMS_NAME}:
        raise FetchError(f"{SUMS_NAME} lists {sorted(sums)}, the archive holds {sorted(names - {SUMS_NAME})}")
    for name, expected in sorted(sums.items()):
        if file_sha256(folder / name) != expected:
            raise FetchError(f"{name}: SHA-256 differs from {SUMS_NAME} (corrupt download; SHA256SUMS travels in the same archive, so it checks integrity, not origin)")
    try:
        manifest = read_manifest(folder)
    except ManifestError as error:
        raise FetchError(f"the archive's {error}") from None
    unlisted = names - {SUMS_NAME, MANIFEST_NAME} - set(manifest_sha256(manifest))
    if unlisted:
        raise FetchError(f"the archive holds files its manifest does not list: {sorted(unlisted)}")
    return manifest


def _refuse_changes(unpacked: Path, models_dir: Path, names: set[str], force: bool) -> None:
    """FetchError naming the files of ``models_dir`` that the archive would replace with different
    content, unless ``force``."""
    changed = sorted(name for name in names - {SUMS_NAME} if (models_dir / name).is_file()
                     and file_sha256(models_dir / name) != file_sha256(unpacked / name))
    if changed and not force:
        raise FetchError(f"{models_dir} already holds different {', '.join(changed)} (another run's models?): "
                         f"move them away or pass --force to replace them")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="http(s) URL or path of a model archive made by scripts/pack_models.py")
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models",
                        help="folder to unpack into (default: models/)")
    parser.add_argument("--force", action="store_true", help="replace files of the models folder that differ")
    args = parser.parse_args(argv)
    try:
        manifest = fetch(args.source, args.models_dir, args.force)
    except FetchError as error:
        print(f"fetch_models: error: {error}", file=sys.stderr)
        return 1
    print(f"{args.models_dir}: bundles {', '.join(manifest['bundles'])}; the app serves "
          f"{manifest['default']} ({manifest['default_rule']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
