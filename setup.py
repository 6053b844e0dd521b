"""Only what pyproject.toml cannot say: the packages are lipsync and its subpackages, found anew at each build
(new subpackages need no edit here), plus the app's example files, which live in assets/ at the repository root
(where app.py finds them) and are installed as lipsync/assets."""

from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["lipsync", "lipsync.*"], exclude=["*.__pycache__"])
    + ["lipsync.assets"],
    package_dir={"lipsync.assets": "assets"},
)
