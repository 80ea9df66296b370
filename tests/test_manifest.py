"""models/manifest.json (pneumonia_cxr.manifest) and the release archive scripts
(scripts/pack_models.py, scripts/fetch_models.py), on small stand-in files; Keras only for
load_model_bundle taking its metadata from the manifest."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from pneumonia_cxr.manifest import (
    ManifestError,
    bundle_path,
    listed_metadata_path,
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
    with pytest.raises(ValueError, match="must be x.keras"):
        write_manifest(folder, {"x": bundle}, "x", "rule", RUN)
    (folder / "a.json").unlink()
    with pytest.raises(ValueError, match="a.json"):
        write_manifest(folder, {"a": bundle}, "a", "rule", RUN)
    (folder / "a_copy.json").write_text("{}")
    (folder / "a.json").symlink_to("a_copy.json")  # in the folder, so only being a link is wrong
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
    (lambda m: m["bundles"].update(a=["a.keras", "a.json"]), "lacks"),
    (lambda m: m["bundles"]["a"]["sha256"].pop("a.json"), "'sha256' must map exactly"),
    (lambda m: m["bundles"].update({"../a": m["bundles"].pop("a")}), "not a plain name"),
    (lambda m: m["bundles"]["a"].update(metadata="b.json", sha256={"a.keras": "0" * 64, "b.json": "0" * 64}),
     "'metadata' is 'b.json', not 'a.json'"),
    (lambda m: m["bundles"]["a"].update(model="b.keras", sha256={"b.keras": "0" * 64, "a.json": "0" * 64}),
     "'model' is 'b.keras', not 'a.keras'"),
    (lambda m: m["bundles"]["a"].update(sha256=["a.keras", "a.json"]), "'sha256' must map exactly"),
    (lambda m: m["bundles"]["a"]["sha256"].update({"a.json": 12}), "SHA-256 of a.json is not 64 lowercase hex"),
    (lambda m: m["bundles"]["a"]["sha256"].update({"a.json": ["0" * 64]}), "SHA-256 of a.json is not 64"),
    (lambda m: m["bundles"]["a"]["sha256"].update({"a.json": "abc"}), "SHA-256 of a.json is not 64"),
    (lambda m: m["bundles"]["a"]["sha256"].update({"a.json": "A" * 64}), "SHA-256 of a.json is not 64"),
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


def test_symlinked_bundle_files_are_refused(models, tmp_path):
    """A link is refused by the check, so pack never stores one (which fetch would refuse)."""
    outside = tmp_path / "outside.json"
    outside.write_bytes((models / "a.json").read_bytes())  # same bytes: only the link is wrong
    (models / "a.json").unlink()
    (models / "a.json").symlink_to(outside)
    with pytest.raises(ManifestError, match=r"a\.json: a symbolic link \(bundle 'a' of .*regular file"):
        read_manifest(models)
    with pytest.raises(ManifestError, match="symbolic link"):
        pack_models.pack(models, tmp_path / "release.tar.gz")
    assert list(tmp_path.glob("*.tar.gz")) == []


def test_pack_stores_hard_links_as_files(models, tmp_path):
    """Two names of one file (a hard link) go in as two regular members, which fetch accepts."""
    os.link(models / "a.keras", models / "c.keras")
    (models / "c.json").write_text(json.dumps({"model_name": "c"}))
    write_manifest(models, {name: models / f"{name}.keras" for name in "abc"}, "b", "rule", RUN)
    archive, _ = pack_models.pack(models, tmp_path / "release.tar.gz")
    with tarfile.open(archive) as tar:
        assert all(member.isreg() for member in tar)
    assert set(fetch_models.fetch(str(archive), tmp_path / "fetched")["bundles"]) == {"a", "b", "c"}


def test_listed_metadata_path_checks_the_bundle(models, tmp_path):
    assert listed_metadata_path(models / "a.keras") == models / "a.json"
    assert listed_metadata_path(models / "stray_from_an_earlier_run.keras") is None  # not listed
    assert listed_metadata_path(fake_bundle(tmp_path / "bare", "c")) is None  # no manifest there
    (models / "a.json").write_text(json.dumps({"threshold": 0.9}))
    with pytest.raises(ManifestError, match=r"a\.json: SHA-256"):
        listed_metadata_path(models / "a.keras")
    (models / "a.json").unlink()
    with pytest.raises(ManifestError, match=r"a\.json: missing"):
        listed_metadata_path(models / "a.keras")


def test_load_model_bundle_takes_the_manifests_checked_metadata(tmp_path):
    """The one Keras test here: a listed bundle's metadata must be the one the manifest checked."""
    import keras

    from pneumonia_cxr.models import load_model_bundle, save_model_bundle

    inputs = keras.Input((224, 224, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, strides=16)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(features), name="tiny")
    folder = tmp_path / "models"
    path = save_model_bundle(model, folder, {"threshold": 0.25})
    write_manifest(folder, {"tiny": path}, "tiny", "rule", RUN)
    assert load_model_bundle(path)[1]["threshold"] == 0.25
    (folder / "tiny.json").write_text(json.dumps({"threshold": 0.9}))
    with pytest.raises(ManifestError, match=r"tiny\.json: SHA-256"):
        load_model_bundle(path)
    (folder / "tiny.json").unlink()  # not a silent threshold of 0.5
    with pytest.raises(ManifestError, match=r"tiny\.json: missing"):
        load_model_bundle(path)


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


def work_folders(parent: Path) -> list[Path]:
    """fetch's work folders left in ``parent`` (there should be none)."""
    return list(parent.glob(".*.fetch-*"))


def snapshot(folder: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under ``folder``."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


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
    assert not target.exists() and work_folders(tmp_path) == []  # nothing written, work folder removed
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
    assert not target.exists() and work_folders(tmp_path) == []


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


@pytest.fixture()
def installed(models, tmp_path) -> Path:
    """A models folder as an earlier fetch left it, plus its README.md, a stray file and a subfolder."""
    folder = tmp_path / "installed"
    fetch_models.fetch(str(pack_models.pack(models, tmp_path / "old.tar.gz", ["b"])[0]), folder)
    (folder / "README.md").write_text("# models/\n")
    (folder / "notes.txt").write_text("from another run")
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "x.json").write_text("{}")
    (folder / "b.keras").write_bytes(b"another run's b")
    return folder


def test_fetch_force_replaces_the_whole_folder(models, installed, tmp_path):
    archive, _ = pack_models.pack(models, tmp_path / "release.tar.gz")
    before = snapshot(installed)
    with pytest.raises(fetch_models.FetchError, match=r"holds \.ipynb_checkpoints, b\.keras, manifest\.json, notes\.txt, which.*--force"):
        fetch_models.fetch(str(archive), installed)
    assert snapshot(installed) == before
    fetch_models.fetch(str(archive), installed, force=True)
    assert sorted(snapshot(installed)) == ["README.md", "a.json", "a.keras", "b.json", "b.keras", "manifest.json"]
    assert (installed / "README.md").read_text() == "# models/\n"  # the folder's own documentation stays
    assert read_manifest(installed) == read_manifest(models) and work_folders(tmp_path) == []
    fetch_models.fetch(str(archive), installed)  # the same archive again: nothing would change


def test_fetch_refuses_an_archive_not_matching_its_pinned_sha256(models, installed, tmp_path):
    archive, _ = pack_models.pack(models, tmp_path / "release.tar.gz")
    before = snapshot(installed)
    with pytest.raises(fetch_models.FetchError, match=r"is not the pinned 0{64} \(--sha256\)"):
        fetch_models.fetch(str(archive), installed, force=True, archive_sha256="0" * 64)
    assert snapshot(installed) == before and work_folders(tmp_path) == []
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    fetch_models.fetch(str(archive), installed, force=True, archive_sha256=digest.upper())
    assert set(read_manifest(installed)["bundles"]) == {"a", "b"}


def test_fetch_caps_the_archive_and_its_unpacked_size(models, installed, tmp_path):
    archive, _ = pack_models.pack(models, tmp_path / "release.tar.gz")
    size = archive.stat().st_size
    unpacked = sum(len(data) for data in archive_members(archive).values())
    assert unpacked > size + 1  # the stand-in bundles compress well
    before = snapshot(installed)
    with pytest.raises(fetch_models.FetchError, match=f"release.tar.gz: more than {size - 1} bytes"):
        fetch_models.fetch(str(archive), installed, force=True, max_bytes=size - 1)
    with pytest.raises(fetch_models.FetchError, match=f"unpacked: more than {size + 1} bytes"):
        fetch_models.fetch(str(archive), installed, force=True, max_bytes=size + 1)
    assert snapshot(installed) == before and work_folders(tmp_path) == []
    fetch_models.fetch(str(archive), installed, force=True, max_bytes=unpacked)


@pytest.fixture()
def served(tmp_path):
    """Factory: the http:// URL of a file of ``tmp_path``, served on localhost while the test runs."""
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path)))
    Thread(target=server.serve_forever, daemon=True).start()
    yield lambda path: f"http://127.0.0.1:{server.server_port}/{path.relative_to(tmp_path)}"
    server.shutdown()
    server.server_close()


def test_fetch_by_url_caps_the_download(models, tmp_path, served):
    archive, _ = pack_models.pack(models, tmp_path / "release.tar.gz")
    url = served(archive)
    with pytest.raises(fetch_models.FetchError, match="release.tar.gz: more than 100 bytes"):
        fetch_models.fetch(url, tmp_path / "fetched", max_bytes=100)
    assert not (tmp_path / "fetched").exists()
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert fetch_models.fetch(url, tmp_path / "fetched", archive_sha256=digest)["default"] == "b"


def test_fetch_puts_the_old_folder_back_when_the_swap_fails(models, installed, tmp_path, monkeypatch):
    """Where folders cannot be exchanged atomically: two renames, the old folder put back on failure."""
    archive, _ = pack_models.pack(models, tmp_path / "release.tar.gz")
    before = snapshot(installed)
    rename = os.rename
    monkeypatch.setattr(fetch_models, "_exchange", lambda first, second: False)

    def failing_rename(source, target):
        if Path(source).name == "models":  # the new folder's rename, after the old one was moved aside
            raise OSError(f"cannot rename to {target}")
        rename(source, target)

    monkeypatch.setattr(fetch_models.os, "rename", failing_rename)
    with pytest.raises(OSError, match="cannot rename"):
        fetch_models.fetch(str(archive), installed, force=True)
    assert snapshot(installed) == before and work_folders(tmp_path) == []


def test_fetch_swaps_the_folders_in_one_step(models, installed, tmp_path, monkeypatch):
    """No rename leaves models/ missing: the swap is one exchange, the old folder removed after it."""
    archive, _ = pack_models.pack(models, tmp_path / "release.tar.gz")
    renames = []
    monkeypatch.setattr(fetch_models.os, "rename", lambda *paths: renames.append(paths))
    fetch_models.fetch(str(archive), installed, force=True)
    assert renames == [] and read_manifest(installed) == read_manifest(models) and work_folders(tmp_path) == []


# Run fetch in a fresh interpreter that kills itself (SIGKILL: no clean-up runs) just before or just
# after the exchange of the folders.
KILLED_FETCH = r"""
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("fetch_models", sys.argv[1])
fetch_models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fetch_models)
exchange, when = fetch_models._exchange, sys.argv[4]

def killed(first, second):
    if when == "after":
        exchange(first, second)
    os.kill(os.getpid(), signal.SIGKILL)

fetch_models._exchange = killed
fetch_models.fetch(sys.argv[2], fetch_models.Path(sys.argv[3]), force=True)
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_fetch_killed_during_the_swap_leaves_a_whole_models_folder(models, installed, tmp_path, when):
    archive, _ = pack_models.pack(models, tmp_path / "release.tar.gz")
    before = snapshot(installed)
    result = subprocess.run([sys.executable, "-c", KILLED_FETCH, str(REPO / "scripts" / "fetch_models.py"),
                             str(archive), str(installed), when], capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr
    if when == "before":
        assert snapshot(installed) == before
    else:
        assert read_manifest(installed) == read_manifest(models)
        assert (installed / "README.md").read_text() == "# models/\n"
    assert len(work_folders(tmp_path)) == 1  # the killed run's work folder: never part of models/


def test_fetch_command_line_options(models, tmp_path):
    archive, _ = pack_models.pack(models, tmp_path / "release.tar.gz")
    command = [sys.executable, "scripts/fetch_models.py", str(archive), "--models-dir", str(tmp_path / "m")]
    for options, fragment in ((["--sha256", "1" * 64], "(--sha256); refused"),
                              (["--max-bytes", "10"], "more than 10 bytes (--max-bytes)")):
        result = subprocess.run(command + options, cwd=REPO, capture_output=True, text=True, check=False)
        assert result.returncode == 1 and fragment in result.stderr, result.stderr
    for options in (["--sha256", "xyz"], ["--max-bytes", "0"]):
        result = subprocess.run(command + options, cwd=REPO, capture_output=True, text=True, check=False)
        assert result.returncode == 2 and "not a" in result.stderr, result.stderr
    assert not (tmp_path / "m").exists()


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the image, by Docker's rules: the last pattern
    matching the path or one of its parent folders decides; '!' re-includes; '*' stays in one
    folder, '**/' spans any number."""
    excluded = False
    parents = ["/".join(path.split("/")[:end]) for end in range(1, path.count("/") + 2)]
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        regex = re.escape(pattern.lstrip("!")).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, parent) for parent in parents):
            excluded = not pattern.startswith("!")
    return excluded


def test_dockerignore_keeps_fetch_work_folders_out_of_the_image():
    for kept in ("models/manifest.json", "models/b.keras", "app/__init__.py"):
        assert not dockerignored(kept), kept
    for left_out in ("models/.fetch-x1/unpacked/b.keras", ".models.fetch-x1/previous/b.keras",
                     "models/.manifest.json.partial", "build/container-context/.models.fetch-x1/models/b.keras"):
        assert dockerignored(left_out), left_out


def test_fetch_refuses_a_linked_models_folder(models, tmp_path):
    archive, _ = pack_models.pack(models, tmp_path / "release.tar.gz")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(fetch_models.FetchError, match="symbolic link"):
        fetch_models.fetch(str(archive), tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and list((tmp_path / "real").iterdir()) == []
