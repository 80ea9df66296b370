"""models/manifest.json (pneumonia_cxr.manifest) and the release archive scripts
(scripts/pack_models.py, scripts/fetch_models.py), on small stand-in files: no Keras needed."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pneumonia_cxr.manifest import (
    ManifestError,
    bundle_path,
    manifest_subset,
    parse_sha256sums,
    read_manifest,
    sha256sums_text,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[1]
RUN = {"git_describe": "v1-2-gabc", "scored_at": "2026-11-30T12:00:00Z"}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pack_models = load_script("pack_models")
fetch_models = load_script("fetch_models")


def fake_bundle(folder: Path, name: str) -> Path:
    """A stand-in bundle: ``<name>.keras`` and ``<name>.json`` with distinct bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.keras").write_bytes(f"weights of {name}".encode() * 100)
    (folder / f"{name}.json").write_text(json.dumps({"model_name": name, "threshold": 0.5}))
    return folder / f"{name}.keras"


@pytest.fixture()
def models(tmp_path) -> Path:
    """A models folder with bundles a and b (default b), their manifest, and a stray bundle."""
    folder = tmp_path / "models"
    bundles = {name: fake_bundle(folder, name) for name in ("a", "b")}
    write_manifest(folder, bundles, default="b", default_rule="highest validation ROC-AUC", run=RUN)
    fake_bundle(folder, "stray_from_an_earlier_run")
    return folder


def test_manifest_round_trip(models):
    manifest = read_manifest(models)
    assert manifest["schema"] == 1 and manifest["default"] == "b" and manifest["run"] == RUN
    assert manifest["default_rule"] == "highest validation ROC-AUC"
    assert manifest["created_at"].endswith("Z")
    assert set(manifest["bundles"]) == {"a", "b"}  # the stray bundle is not listed
    entry = manifest["bundles"]["a"]
    assert entry["model"] == "a.keras" and entry["metadata"] == "a.json"
    assert entry["sha256"]["a.keras"] == hashlib.sha256((models / "a.keras").read_bytes()).hexdigest()
    assert bundle_path(models, manifest) == models / "b.keras"
    assert bundle_path(models, manifest, "a") == models / "a.keras"
    with pytest.raises(ManifestError, match="no bundle 'stray_from_an_earlier_run'"):
        bundle_path(models, manifest, "stray_from_an_earlier_run")


def test_write_manifest_refuses_bad_arguments(tmp_path):
    folder = tmp_path / "models"
    bundle = fake_bundle(folder, "a")
    with pytest.raises(ValueError, match="default bundle 'z'"):
        write_manifest(folder, {"a": bundle}, "z", "rule", RUN)
    elsewhere = fake_bundle(tmp_path / "elsewhere", "c")
    with pytest.raises(ValueError, match="not a file in"):
        write_manifest(folder, {"a": bundle, "c": elsewhere}, "a", "rule", RUN)
    (folder / "a.json").unlink()
    with pytest.raises(ValueError, match="a.json"):
        write_manifest(folder, {"a": bundle}, "a", "rule", RUN)


@pytest.mark.parametrize("damage, fragments", [
    (lambda m: (m / "manifest.json").unlink(), ("manifest.json", "not found", "model_deep_learning.ipynb")),
    (lambda m: (m / "manifest.json").write_text("{oops"), ("manifest.json", "unreadable", "fetch_models.py")),
    (lambda m: (m / "a.keras").unlink(), ("a.keras", "missing", "bundle 'a'")),
    (lambda m: (m / "b.json").write_text("{}"), ("b.json", "SHA-256", "differs")),
    (lambda m: (m / "b.keras").write_bytes(b"retrained"), ("b.keras", "SHA-256", "model_deep_learning.ipynb")),
])
def test_read_manifest_names_the_file_and_the_fix(models, damage, fragments):
    damage(models)
    with pytest.raises(ManifestError) as info:
        read_manifest(models)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def edit_manifest(models: Path, change) -> None:
    manifest = json.loads((models / "manifest.json").read_text())
    change(manifest)
    (models / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, fragment", [
    (lambda m: m.update(schema=2), "not a schema 1 manifest"),
    (lambda m: m.update(default="stray_from_an_earlier_run"), "default 'stray_from_an_earlier_run' is not one"),
    (lambda m: m.update(bundles={}), "lists no bundles"),
    (lambda m: m["bundles"]["a"].pop("sha256"), "lacks"),
    (lambda m: m["bundles"]["a"]["sha256"].pop("a.json"), "sha256 covers"),
    (lambda m: m["bundles"]["a"].update(model="../a.keras",
                                        sha256={"../a.keras": "0" * 64, "a.json": "0" * 64}), "not a plain name"),
])
def test_read_manifest_refuses_malformed_manifests(models, change, fragment):
    edit_manifest(models, change)
    with pytest.raises(ManifestError, match=fragment):
        read_manifest(models)


def test_manifest_subset(models):
    manifest = read_manifest(models)
    assert set(manifest_subset(manifest, ["b"])["bundles"]) == {"b"}
    with pytest.raises(ManifestError, match="default bundle 'b' must be among"):
        manifest_subset(manifest, ["a"])
    with pytest.raises(ManifestError, match="no bundle"):
        manifest_subset(manifest, ["b", "zzz"])


def test_sha256sums_format_round_trip():
    digests = {"b.keras": "ab" * 32, "a.json": "01" * 32}
    text = sha256sums_text(digests)
    assert text.splitlines()[0] == f"{'01' * 32}  a.json"
    assert parse_sha256sums(text) == digests
    for bad in ("xyz  a.json", f"{'01' * 32}  ../a.json", f"{'01' * 32}  a\n{'02' * 32}  a"):
        with pytest.raises(ValueError, match="SHA256SUMS line"):
            parse_sha256sums(bad)


# ----------------------------------------------------------------------------------------------
# Pack and fetch
# ----------------------------------------------------------------------------------------------
def test_pack_then_fetch_into_an_empty_folder(models, tmp_path):
    archive, packed = pack_models.pack(models, tmp_path / "release.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert sorted(names) == ["SHA256SUMS", "a.json", "a.keras", "b.json", "b.keras", "manifest.json"]
    target = tmp_path / "fresh" / "models"
    installed = fetch_models.fetch(str(archive), target)
    assert installed == packed == read_manifest(target) == read_manifest(models)
    assert sorted(p.name for p in target.iterdir()) == ["a.json", "a.keras", "b.json", "b.keras", "manifest.json"]


def test_sha256sums_of_the_archive_pass_sha256sum(models, tmp_path):
    archive, _ = pack_models.pack(models, tmp_path / "release.tar.gz")
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    result = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=unpacked,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pack_only_the_default_bundle(models, tmp_path):
    archive, packed = pack_models.pack(models, tmp_path / "app.tar.gz", ["b"])
    assert set(packed["bundles"]) == {"b"}
    target = tmp_path / "only_b"
    fetch_models.fetch(str(archive), target)
    assert set(read_manifest(target)["bundles"]) == {"b"}
    assert not (target / "a.keras").exists()


def test_pack_refuses_a_manifest_that_disagrees(models, tmp_path):
    (models / "a.keras").write_bytes(b"changed")
    with pytest.raises(ManifestError, match="a.keras"):
        pack_models.pack(models, tmp_path / "release.tar.gz")
    assert list(tmp_path.glob("*.tar.gz")) == [] and list(tmp_path.glob(".*partial")) == []


def test_fetch_refuses_changing_other_models_without_force(models, tmp_path):
    archive, _ = pack_models.pack(models, tmp_path / "release.tar.gz")
    target = tmp_path / "target"
    fake_bundle(target, "a")
    (target / "a.keras").write_bytes(b"another run's a")
    with pytest.raises(fetch_models.FetchError, match="a.keras.*--force"):
        fetch_models.fetch(str(archive), target)
    assert (target / "a.keras").read_bytes() == b"another run's a"
    assert not (target / "manifest.json").exists()
    fetch_models.fetch(str(archive), target, force=True)
    assert read_manifest(target)["default"] == "b"


def tar_with(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    """A tar.gz of ``members`` {name: bytes}, plus a symlink member named ``symlink``."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return path


def archive_members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar}


@pytest.mark.parametrize("name", ["../escaped.keras", "/tmp/absolute.keras", "sub/dir.keras", ".hidden"])
def test_fetch_refuses_path_traversal(models, tmp_path, name):
    members = archive_members(pack_models.pack(models, tmp_path / "good.tar.gz")[0])
    bad = tar_with(tmp_path / "bad.tar.gz", {**members, name: b"payload"})
    target = tmp_path / "target"
    with pytest.raises(fetch_models.FetchError, match="refused member"):
        fetch_models.fetch(str(bad), target)
    assert list(target.iterdir()) == []  # nothing written, staging folder removed
    assert not (tmp_path / "escaped.keras").exists()


def test_fetch_refuses_links(models, tmp_path):
    members = archive_members(pack_models.pack(models, tmp_path / "good.tar.gz")[0])
    bad = tar_with(tmp_path / "bad.tar.gz", members, symlink="a.keras.link")
    with pytest.raises(fetch_models.FetchError, match="refused member 'a.keras.link'"):
        fetch_models.fetch(str(bad), tmp_path / "target")


@pytest.mark.parametrize("tamper, fragment", [
    (lambda m: m.update({"b.keras": b"altered weights"}), "b.keras: SHA-256 differs from SHA256SUMS"),
    (lambda m: m.pop("SHA256SUMS"), "lacks SHA256SUMS"),
    (lambda m: m.update({"extra.bin": b"x"}), "SHA256SUMS lists"),
    (lambda m: m.pop("a.keras"), "SHA256SUMS lists"),
])
def test_fetch_checks_every_sha256_before_writing(models, tmp_path, tamper, fragment):
    members = archive_members(pack_models.pack(models, tmp_path / "good.tar.gz")[0])
    tamper(members)
    bad = tar_with(tmp_path / "bad.tar.gz", members)
    target = tmp_path / "target"
    with pytest.raises(fetch_models.FetchError, match=fragment):
        fetch_models.fetch(str(bad), target)
    assert list(target.iterdir()) == []


def test_fetch_refuses_a_manifest_that_disagrees_with_sha256sums_consistent_files(models, tmp_path):
    """SHA256SUMS rewritten to match altered weights: the manifest's own SHA-256 still catches it."""
    members = archive_members(pack_models.pack(models, tmp_path / "good.tar.gz")[0])
    members["b.keras"] = b"altered weights"
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in members.items() if name != "SHA256SUMS"}
    members["SHA256SUMS"] = sha256sums_text(digests).encode()
    with pytest.raises(fetch_models.FetchError, match="b.keras: SHA-256"):
        fetch_models.fetch(str(tar_with(tmp_path / "bad.tar.gz", members)), tmp_path / "target")


def test_command_lines(models, tmp_path):
    archive = tmp_path / "release.tar.gz"
    packed = subprocess.run([sys.executable, "scripts/pack_models.py", "--models-dir", str(models),
                             "--output", str(archive)], cwd=REPO, capture_output=True, text=True, check=False)
    assert packed.returncode == 0 and "default b" in packed.stdout, packed.stderr
    fetched = subprocess.run([sys.executable, "scripts/fetch_models.py", str(archive), "--models-dir",
                              str(tmp_path / "m")], cwd=REPO, capture_output=True, text=True, check=False)
    assert fetched.returncode == 0 and "the app serves b" in fetched.stdout, fetched.stderr
    missing = subprocess.run([sys.executable, "scripts/fetch_models.py", str(tmp_path / "nothing.tar.gz")],
                             cwd=REPO, capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    (models / "manifest.json").unlink()
    refused = subprocess.run([sys.executable, "scripts/pack_models.py", "--models-dir", str(models)],
                             cwd=REPO, capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "manifest.json: not found" in refused.stderr
