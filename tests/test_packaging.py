"""The package installs (pip install -e . and pip install .) into a fresh virtualenv and works from any folder,
with the code's licence (Apache-2.0) in its metadata; its dependencies are the requirement files; every
third-party module the code imports is required; scripts/setup.sh installs the package, waits for another apt
process's lock, makes a virtualenv where the system Python is externally managed, and leaves one OpenCV."""

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SKIP_COPY = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache", ".benchmarks", "build", "dist",
                                   "*.egg-info", "tests", "outputs", "docs")


def normalise(requirement: str) -> str:
    """The distribution name of a requirement line, lower case, '_' and '.' as '-' (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0]).lower()


def requirement_names(path: Path) -> list:
    """Normalised distribution names listed in a requirement file (comments and options skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [normalise(line) for line in lines if line and not line.startswith("-")]


def run(cmd, cwd, env=None, timeout=300):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def console_scripts() -> dict:
    """pyproject.toml's [project.scripts]: command name -> "module:function"."""
    text = (REPO / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', text, flags=re.M))


def test_installs_into_a_fresh_venv_and_runs_from_another_folder(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=SKIP_COPY)
    venv = tmp_path / "venv"
    # the venv sees the machine's packages (torch, diffusers, ...): the package's dependencies need no download.
    # It has its own pip, which builds the package with build isolation: the build tools pyproject.toml names
    # (setuptools) are fetched into a build environment of their own, whatever the base interpreter has
    run([sys.executable, "-m", "venv", "--system-site-packages", venv], tmp_path)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV", "PIP_NO_BUILD_ISOLATION", "PIP_NO_INDEX")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # only the package is installed: nothing generic (app, studio) at the top of site-packages
    where = ("import lipsync, importlib.util as u; print(lipsync.__file__); "
             "print([m for m in ('app', 'studio') if u.find_spec(m) is not None])")
    assets_of = "from lipsync.app.layout import ASSETS; print(ASSETS)"
    pip = [python, "-m", "pip", "install", "-q", "--no-deps"]

    # 1. editable: the installed names point into the source folder
    run(pip + ["-e", source], tmp_path, env)
    package, generic = run([python, "-c", where], elsewhere, env).stdout.splitlines()
    assert Path(package) == source / "lipsync" / "__init__.py" and generic == "[]"
    assert Path(run([python, "-c", assets_of], elsewhere, env).stdout.strip()) == source / "assets"

    # 2. a regular install: a copy in the venv, with the app's examples, and the commands
    run(pip + [source], tmp_path, env)
    package, generic = run([python, "-c", where], elsewhere, env).stdout.splitlines()
    site = Path(package).parent.parent
    assert Path(package).is_relative_to(venv) and generic == "[]"
    assert not (site / "app.py").exists() and not (site / "studio").exists()
    assets = Path(run([python, "-c", assets_of], elsewhere, env).stdout.strip())
    assert assets == site / "lipsync" / "assets"  # the app's examples, found by the installed app
    for example in ("example_face.mp4", "example_speech.wav", "example_face.png"):
        assert (assets / example).is_file()
    shipped = {p.relative_to(source).as_posix() for p in (source / "lipsync").rglob("*.py")}  # as copied
    installed = {p.relative_to(site).as_posix() for p in (site / "lipsync").rglob("*.py")}
    assert shipped <= installed, f"not installed: {sorted(shipped - installed)}"

    # every command answers --help with a usage line that names the command typed
    usages = {name: run([bin_dir / name, "--help"], elsewhere, env).stdout for name in console_scripts()}
    assert {"lipsync", "lipsync-app", "lipsync-convert", "lipsync-evaluate"} <= set(usages)
    for name, usage in usages.items():
        assert usage.startswith(f"usage: {name} "), usage[:200]
    assert "--video" in usages["lipsync"] and "--checkpoint" in usages["lipsync"]
    assert "--random-small" in usages["lipsync-convert"]
    assert "--filelist" in usages["lipsync-evaluate"]
    assert "--max-upload-mb" in usages["lipsync-app"]

    # the code's licence, not the weights': Apache-2.0, with its text
    probe = ("import importlib.metadata as m, json; d = m.distribution('diff2lip-studio'); "
             "print(json.dumps([d.metadata['License-Expression'], d.metadata.get_all('License-File'), "
             "d.read_text('licenses/LICENSE')]))")
    expression, files, text = json.loads(run([python, "-c", probe], elsewhere, env).stdout)
    assert expression == "Apache-2.0" and files == ["LICENSE"]
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "Copyright 2026 The Diff2Lip Studio authors" in text

    # 3. one source of truth: the installed metadata lists exactly the requirement files
    probe = "import importlib.metadata as m, json; print(json.dumps(m.requires('diff2lip-studio')))"
    metadata = run([python, "-c", probe], elsewhere, env).stdout
    requires = json.loads(metadata)

    def names(extra):
        return sorted(normalise(r) for r in requires if (f'extra == "{extra}"' in r if extra else "extra ==" not in r))

    assert names(None) == sorted(requirement_names(REPO / "requirements.txt"))
    assert names("dev") == sorted(requirement_names(REPO / "requirements-dev.txt"))
    assert names("train") == sorted(requirement_names(REPO / "requirements-train.txt"))


def _third_party_imports() -> dict:
    """Top-level module -> files importing it, over lipsync/, app.py, benchmarks/ and tests/ (importorskip too)."""
    local = {"lipsync", "app", "conftest"} | {p.stem for p in (REPO / "tests").glob("*.py")}
    local |= {p.stem for p in (REPO / "benchmarks").glob("*.py")}  # the benchmark scripts import one another
    found: dict = {}
    files = [*(REPO / "lipsync").rglob("*.py"), REPO / "app.py",
             *(REPO / "tests").glob("*.py"),
             *(REPO / "benchmarks").glob("*.py")]
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "importorskip" and node.args
                  and isinstance(node.args[0], ast.Constant)):
                names = [node.args[0].value]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local and top != "__future__":
                    found.setdefault(top, set()).add(path.relative_to(REPO).as_posix())
    return found


# modules that no requirement file provides, on purpose
NOT_REQUIRED = {
    "spaces": "Hugging Face Spaces' ZeroGPU runtime provides it; app.py imports it only there",
}


def test_every_imported_module_is_required():
    required = set(requirement_names(REPO / "requirements.txt")) | set(requirement_names(REPO / "requirements-dev.txt"))
    required |= set(requirement_names(REPO / "requirements-train.txt"))
    providers = importlib.metadata.packages_distributions()
    missing = []
    for module, users in sorted(_third_party_imports().items()):
        if module in NOT_REQUIRED:
            continue
        dists = {normalise(d) for d in providers.get(module, [])}
        if not dists & required:
            missing.append(f"{module} (imported by {', '.join(sorted(users))}; "
                           f"installed from {sorted(dists) or 'nothing'})")
    assert not missing, "add to a requirement file: " + "; ".join(missing)


def test_setup_script_waits_for_the_apt_lock_then_installs_the_package(tmp_path):
    """setup.sh with stand-ins for apt-get (locked once), dpkg, id and python3 that record their calls."""
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "calls.txt"
    scripts = {
        "dpkg": "exit 1",  # every apt package is missing
        "id": "echo 0",
        "apt-get": (f'echo "apt-get $*" >> {calls}\n'
                    f'if [ ! -e {tmp_path}/unlocked ]; then touch {tmp_path}/unlocked\n'
                    '  echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 42 (apt-get)" >&2\n'
                    '  exit 100\nfi'),
        "python3": f'echo "python3 $*" >> {calls}',
    }
    for name, body in scripts.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--dev"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("another apt/dpkg process holds the package lock; waiting") == 1
    log = calls.read_text().splitlines()
    updates = [line for line in log if line.startswith("apt-get") and " update" in line]
    installs = [line for line in log if line.startswith("apt-get") and " install" in line]
    assert len(updates) == 2 and len(installs) == 1  # the locked update was tried again, once it was free
    assert "ffmpeg espeak-ng libgl1 libglib2.0-0 chromium" in installs[0]
    assert "python3 -m pip install -q -e .[dev]" in log
    assert log.index("python3 -c import torch") < log.index("python3 -m pip install -q -e .[dev]")


def _stand_ins(folder: Path, scripts: dict) -> dict:
    """Executable sh scripts ``folder/NAME`` with the given bodies; an environment with them first on the PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def test_setup_script_makes_and_reuses_a_venv_where_the_system_python_is_externally_managed(tmp_path):
    """A python3 stand-in that pip refuses to install into (PEP 668), outside any virtualenv: setup.sh makes .venv,
    installs everything there and nothing into python3, says how to activate it, and runs the command given
    after `--` with .venv first on the PATH; a second run reuses .venv."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    calls = tmp_path / "calls.txt"
    templates = tmp_path / "templates"
    _stand_ins(templates, {  # what `python3 -m venv` puts in .venv/bin: pip, torch and the package all work
        "python": f'echo "venv-python $*" >> {calls}',
        "python3": f'echo "venv-python3 $* (VIRTUAL_ENV=$VIRTUAL_ENV)" >> {calls}',
    })
    env = _stand_ins(tmp_path / "bin", {
        "dpkg": "exit 0",  # every apt package is there
        "python3": f'''echo "python3 $*" >> {calls}
case "$*" in
  "-c import sys; sys.exit(sys.prefix == sys.base_prefix)") exit 1 ;;
  "-m pip install --dry-run"*) echo "error: externally-managed-environment" >&2; exit 1 ;;
  "-m venv --clear .venv") mkdir -p .venv/bin && cp {templates}/python {templates}/python3 .venv/bin/ ;;
esac''',
    })
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = subprocess.run(["bash", str(repo / "scripts" / "setup.sh"), "--", "python3", "app.py"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    log = calls.read_text().splitlines()
    assert log.count("python3 -m venv --clear .venv") == 1
    assert "venv-python -m pip install -q -e ." in log
    assert not [line for line in log if line.startswith("python3 -m pip install -q")]  # nothing into the system's
    assert "source .venv/bin/activate" in first.stdout
    assert log[-1] == f"venv-python3 app.py (VIRTUAL_ENV={repo / '.venv'})"

    calls.write_text("")
    second = subprocess.run(["bash", str(repo / "scripts" / "setup.sh"), "--dev"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    log = calls.read_text().splitlines()
    assert not [line for line in log if "-m venv" in line]
    assert "venv-python -m pip install -q -e .[dev]" in log


OPENCV = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")


@pytest.mark.parametrize("present, removed", [
    (OPENCV[:3], "opencv-contrib-python opencv-python opencv-python-headless"),
    (("opencv-contrib-python",), None),
])
def test_setup_script_leaves_one_opencv(tmp_path, present, removed):
    """Where pip installed several OpenCV distributions (they share cv2/), setup.sh removes them all and installs
    opencv-contrib-python again, at the version pip chose; where it is alone, nothing is touched. Its check runs
    on the real interpreter over stand-in installed distributions."""
    site = tmp_path / "site"
    for name in present:
        info = site / f"{name.replace('-', '_')}-5.1.0.95.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 5.1.0.95\n")
    calls = tmp_path / "calls.txt"
    env = _stand_ins(tmp_path / "bin", {
        "dpkg": "exit 0",
        "python3": f'''echo "python3 $*" >> {calls}
if [ "$*" = "-" ]; then PYTHONPATH={site} exec {sys.executable} -S -; fi''',  # -S: only the stand-ins
    })
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    log = calls.read_text().splitlines()
    changes = [line for line in log if "opencv" in line]
    if removed:
        assert changes == [f"python3 -m pip uninstall -q -y {removed}",
                           "python3 -m pip install -q --no-deps opencv-contrib-python==5.1.0.95"]
    else:
        assert changes == []


def test_one_opencv_distribution_provides_cv2():
    """What setup.sh leaves: one OpenCV distribution, the one `import cv2` loads (its version), with what the code
    uses, including the Haar face cascade of the "opencv" detector."""
    import cv2
    import numpy as np

    installed = {normalise(d.metadata["Name"] or ""): d.version for d in importlib.metadata.distributions()}
    opencv = {name: version for name, version in installed.items() if name in OPENCV}
    assert len(opencv) == 1, (f"{opencv} all install cv2/: the last one installed decides what cv2 is, and removing "
                              "one breaks the others; run bash scripts/setup.sh, which keeps opencv-contrib-python")
    (version,) = opencv.values()
    assert version.startswith(cv2.__version__ + "."), (version, cv2.__version__)

    frame = np.zeros((48, 64, 3), np.uint8)
    cv2.rectangle(frame, (8, 8), (40, 30), (0, 0, 255), 2)
    cv2.putText(frame, "a", (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok and cv2.imdecode(jpeg, cv2.IMREAD_COLOR).shape == (48, 64, 3)
    assert cv2.resize(frame, (32, 24), interpolation=cv2.INTER_AREA).shape == (24, 32, 3)
    assert cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).shape == (48, 64)
    assert cv2.copyMakeBorder(frame, 2, 2, 2, 2, cv2.BORDER_CONSTANT).shape == (52, 68, 3)
    xml = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    assert not cv2.CascadeClassifier(xml).empty()
