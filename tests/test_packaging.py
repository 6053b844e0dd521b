"""The package installs (pip install -e . and pip install .) into a fresh virtualenv and works from any folder;
its dependencies are the requirement files; every third-party module the code imports is required;
scripts/setup.sh installs the package and waits for another apt process's lock."""

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


def test_installs_into_a_fresh_venv_and_runs_from_another_folder(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=SKIP_COPY)
    venv = tmp_path / "venv"
    # the venv sees the machine's packages (torch, diffusers, ...): installing needs no download
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp_path)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # only the package is installed: nothing generic (app, studio) at the top of site-packages
    where = ("import lipsync, importlib.util as u; print(lipsync.__file__); "
             "print([m for m in ('app', 'studio') if u.find_spec(m) is not None])")
    assets_of = "from lipsync.app.layout import ASSETS; print(ASSETS)"
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]

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
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "lipsync").rglob("*.py")}
    installed = {p.relative_to(site).as_posix() for p in (site / "lipsync").rglob("*.py")}
    assert shipped <= installed, f"not installed: {sorted(shipped - installed)}"

    usage = run([bin_dir / "lipsync", "--help"], elsewhere, env).stdout
    assert "--video" in usage and "--checkpoint" in usage
    assert "--random-small" in run([bin_dir / "lipsync-convert", "--help"], elsewhere, env).stdout
    assert "--filelist" in run([bin_dir / "lipsync-evaluate", "--help"], elsewhere, env).stdout
    assert "--max-upload-mb" in run([bin_dir / "lipsync-app", "--help"], elsewhere, env).stdout

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
