"""Fetch a model archive (made by scripts/pack_models.py) from a URL or a file, check it, and install
it as ``models/``: the app can then run without training first.

    .venv/bin/python scripts/fetch_models.py https://github.com/OWNER/REPO/releases/download/TAG/models-....tar.gz --sha256 HEX
    .venv/bin/python scripts/fetch_models.py build/models-20261130T120000Z.tar.gz [--models-dir models] [--force] [--max-bytes N]

Everything is checked before ``models/`` is touched. The archive may be at most ``--max-bytes``
bytes (default 2 GiB), and so may its unpacked files together; ``--sha256 HEX`` pins the archive
itself (its SHA-256 must be HEX: ``SHA256SUMS`` travels inside the archive, so it shows integrity,
not origin). It may hold only plain files at its top level (no folders, links, absolute paths or
``..``: path traversal is refused), every file must match its line of ``SHA256SUMS`` and every
bundle file the SHA-256 in ``manifest.json``.

The new folder is built complete in a hidden work folder beside ``models/``
(``.models.fetch-XXXX/``), then swapped with ``models/`` in one atomic step (Linux's
``renameat2(RENAME_EXCHANGE)``), and the old folder, now in the work folder, removed. So at every
moment ``models/`` is either the old folder or the new one, whole, even if the process is killed;
``models/`` ends up holding exactly the archive's bundles and manifest (plus its own ``README.md``,
carried over), and a failure before the swap leaves it as it was. Where the system cannot swap
folders in one step (not Linux, or a file system without the exchange), two renames are used
instead (old folder aside, new one in, the old one put back if the second fails): there, a kill
between them leaves no ``models/``. A ``models/`` holding anything the swap would change or remove (another
run's bundles, stray files) is refused unless ``--force`` is given. Exit status 1 with the reason
on failure.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pneumonia_cxr.common import file_sha256
from pneumonia_cxr.manifest import (
    MANIFEST_NAME,
    SUMS_NAME,
    ManifestError,
    is_plain_file_name,
    is_sha256_hex,
    manifest_sha256,
    parse_sha256sums,
    read_manifest,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DOWNLOAD_TIMEOUT = 60  # seconds without data before a download is given up
DEFAULT_MAX_BYTES = 2 * 1024 ** 3  # cap on the archive's size and on its unpacked size (2 GiB)
RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15): swap two existing paths in one step
AT_FDCWD = -100  # renameat2: paths relative to the working directory
KEPT_NAMES = ("README.md",)  # files of models/ carried into the new folder: its documentation, tracked by git


class FetchError(Exception):
    """The archive could not be had, or is not a valid model archive; the message says why."""


def work_prefix(models_dir: Path) -> str:
    """Name prefix of fetch's work folder, made beside ``models_dir`` (``.models.fetch-``)."""
    return f".{models_dir.name}.fetch-"


def fetch(source: str, models_dir: Path, force: bool = False, max_bytes: int = DEFAULT_MAX_BYTES,
          archive_sha256: str | None = None) -> dict:
    """Fetch ``source`` (http(s) URL or file), check it and install it as ``models_dir`` (see the
    module docstring); returns the manifest it installed.

    Raises:
        FetchError: download failed, archive over ``max_bytes`` (packed or unpacked) or not
            ``archive_sha256``, unsafe or incomplete archive, checksum mismatch, or a
            ``models_dir`` whose files would change or go (without ``force``).
        OSError: a file-system error (the message names the path).
    """
    models_dir = Path(models_dir)
    if models_dir.is_symlink():
        raise FetchError(f"{models_dir} is a symbolic link: give the folder it points to as --models-dir")
    models_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=work_prefix(models_dir), dir=models_dir.parent) as work:
        work = Path(work)
        archive = _local_copy(source, work / "archive", max_bytes)
        _check_pin(archive, source, archive_sha256)
        staging = work / "models"
        staging.mkdir()
        manifest = _verify(staging, _unpack(archive, staging, max_bytes))
        (staging / SUMS_NAME).unlink()
        _carry_over(models_dir, staging)
        _refuse_changes(staging, models_dir, force)
        _swap(staging, models_dir, work / "previous")
    return manifest


def _local_copy(source: str, target: Path, max_bytes: int) -> Path:
    """``source`` itself when it is a file, else its download (http or https) to ``target``; of at
    most ``max_bytes`` bytes."""
    scheme = urllib.parse.urlparse(source).scheme
    if scheme in ("http", "https"):
        _download(source, target, max_bytes)
        return target
    path = Path(source).expanduser()
    if not path.is_file():
        raise FetchError(f"{source}: no such file (give a file or an http(s) URL)")
    _check_size(path.stat().st_size, max_bytes, source)
    return path


def _download(url: str, target: Path, max_bytes: int) -> None:
    """Write ``url``'s body to ``target``; FetchError when it fails or exceeds ``max_bytes``."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, open(target, "wb") as out:
            length = response.headers.get("Content-Length", "")
            if length.isdigit():
                _check_size(int(length), max_bytes, url)
            copied = 0
            while chunk := response.read(1 << 20):
                copied += len(chunk)
                _check_size(copied, max_bytes, url)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as error:
        raise FetchError(f"{url}: download failed ({error})") from None


def _check_size(size: int, max_bytes: int, what: str) -> None:
    """FetchError when ``size`` exceeds ``max_bytes``."""
    if size > max_bytes:
        raise FetchError(f"{what}: more than {max_bytes} bytes (--max-bytes); refused "
                         f"(raise --max-bytes if the archive is genuine)")


def _check_pin(archive: Path, source: str, expected: str | None) -> None:
    """FetchError unless ``archive``'s SHA-256 is ``expected`` (no check when None)."""
    if expected is None:
        return
    actual = file_sha256(archive)
    if actual != expected.lower():
        raise FetchError(f"{source}: SHA-256 {actual} is not the pinned {expected.lower()} (--sha256); refused")


def _unpack(archive: Path, folder: Path, max_bytes: int) -> set[str]:
    """Write each member of the tar archive into ``folder``; returns their names.

    Raises:
        FetchError: not a tar archive, a member that is not a plain top-level file (a folder, a
            link, a device, an absolute path, a path with '..') or that repeats, or members of more
            than ``max_bytes`` bytes together.
    """
    names: set[str] = set()
    total = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if not member.isreg() or not is_plain_file_name(member.name) or member.name in names:
                    raise FetchError(f"{archive.name}: refused member {member.name!r}: a model archive holds "
                                     f"only plain files at its top level, each once")
                total += member.size
                _check_size(total, max_bytes, f"{archive.name} unpacked")
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


def _carry_over(models_dir: Path, staging: Path) -> None:
    """Copy the ``KEPT_NAMES`` files of ``models_dir`` (if there) into ``staging``."""
    for name in KEPT_NAMES:
        kept = models_dir / name
        if kept.is_file() and not kept.is_symlink():
            shutil.copy2(kept, staging / name)


def _refuse_changes(staging: Path, models_dir: Path, force: bool) -> None:
    """FetchError naming the entries of ``models_dir`` that swapping in ``staging`` would change or
    remove, unless ``force``."""
    if force or not models_dir.exists():
        return
    lost = sorted(entry.name for entry in models_dir.iterdir() if not _same_file(entry, staging / entry.name))
    if lost:
        raise FetchError(f"{models_dir} holds {', '.join(lost)}, which the fetched folder would change or remove "
                         f"(another run's models?): move them away or pass --force to replace the whole folder")


def _same_file(old: Path, new: Path) -> bool:
    """True when ``old`` is a regular file with the same bytes as the file ``new``."""
    return old.is_file() and not old.is_symlink() and new.is_file() and file_sha256(old) == file_sha256(new)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (``renameat2`` with ``RENAME_EXCHANGE``); False,
    with nothing changed, where the system or the file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def _swap(staging: Path, models_dir: Path, aside: Path) -> None:
    """Put ``staging`` in place of ``models_dir``: a rename when there is no ``models_dir`` yet, else
    an atomic exchange (the old folder ends up at ``staging``, removed with the work folder).
    Without the exchange: the old ``models_dir`` renamed to ``aside`` first, and back if the second
    rename fails."""
    if not models_dir.exists():
        os.rename(staging, models_dir)
        return
    if _exchange(staging, models_dir):
        return
    os.rename(models_dir, aside)
    try:
        os.rename(staging, models_dir)
    except OSError:
        os.rename(aside, models_dir)
        raise


def _positive_int(text: str) -> int:
    """``text`` as a positive whole number (argparse type)."""
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive whole number of bytes: {text!r}")
    return int(text)


def _sha256_hex(text: str) -> str:
    """``text`` as a lowercase SHA-256 hex digest (argparse type)."""
    if not is_sha256_hex(text.lower()):
        raise argparse.ArgumentTypeError(f"not a SHA-256 (64 hex digits): {text!r}")
    return text.lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="http(s) URL or path of a model archive made by scripts/pack_models.py")
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models",
                        help="folder to unpack into (default: models/)")
    parser.add_argument("--force", action="store_true",
                        help="replace the models folder even if files of it would change or go")
    parser.add_argument("--max-bytes", type=_positive_int, default=DEFAULT_MAX_BYTES, metavar="N",
                        help="refuse an archive, or its unpacked files, of more than N bytes (default: 2 GiB)")
    parser.add_argument("--sha256", type=_sha256_hex, metavar="HEX",
                        help="the archive's own SHA-256 (as published with the release): refuse any other")
    args = parser.parse_args(argv)
    try:
        manifest = fetch(args.source, args.models_dir, args.force, args.max_bytes, args.sha256)
    except (FetchError, OSError) as error:
        print(f"fetch_models: error: {error}", file=sys.stderr)
        return 1
    print(f"{args.models_dir}: bundles {', '.join(manifest['bundles'])}; the app serves "
          f"{manifest['default']} ({manifest['default_rule']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
