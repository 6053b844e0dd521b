"""Each command's usage line names the command that was typed: `python -m lipsync.cli --help` prints
`usage: python -m lipsync.cli ...` (`python3 -m ...` gives `python3`). The console scripts, `lipsync --help`
printing `usage: lipsync ...`, are checked where they are installed: test_packaging.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

# the command modules at the package's top level, and the packages run with -m
COMMANDS = sorted(p.stem for p in (REPO / "lipsync").glob("*.py") if 'if __name__ == "__main__"' in p.read_text())
PACKAGES = ["lipsync", "lipsync.app"]


def test_every_command_module_runs_as_a_script():
    expected = {"cli", "batch", "train", "train_syncnet", "prepare", "convert", "evaluate", "mouth_motion"}
    assert expected <= set(COMMANDS), f"no `if __name__ == \"__main__\"` in: {sorted(expected - set(COMMANDS))}"


@pytest.mark.parametrize("module", [f"lipsync.{name}" for name in COMMANDS] + PACKAGES)
def test_usage_names_the_command_typed(module):
    # this interpreter, typed as `python` where its folder has that name (venvs, pyenv), else by its own name
    python = Path(sys.executable).with_name("python")
    python = python if python.exists() else Path(sys.executable)
    result = subprocess.run([str(python), "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: {python.name} -m {module} "), result.stdout[:200]


def test_usage_inside_another_program_is_the_python_m_form(capsys):
    """Called by another program (here pytest), a command's parser names its `python -m` form."""
    from lipsync.convert import main

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m lipsync.convert ")
