"""What a wheel ships: every package of the source tree and the package data."""

from __future__ import annotations

from pathlib import Path

from setuptools.config.pyprojecttoml import read_configuration

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject() -> None:
    setuptools = read_configuration(ROOT / "pyproject.toml", expand=False)["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    mapped = {name: ROOT / folder for name, folder in setuptools["package-dir"].items()}
    found = set()
    for name, folder in mapped.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder).parts
            found.add(".".join((name, *relative)))
    assert found == listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_package_data_exists() -> None:
    assert (ROOT / "ssl_hub/data/demo/fashion_mnist_demo.npz").is_file()
    assert (ROOT / "model_cards/ssl_method.md").is_file()
