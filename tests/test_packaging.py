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
    # folders of package data only (no __init__.py), listed so that setuptools ships them without a warning
    data_only = {name for name in setuptools["package-data"] if name not in found}
    for name in data_only:
        root = max((known for known in mapped if name.startswith(known + ".")), key=len)
        assert mapped[root].joinpath(*name.removeprefix(root + ".").split(".")).is_dir(), f"no folder for {name}"
    assert found | data_only == listed, (
        f"unlisted in [tool.setuptools] packages: {sorted(found - listed)}; "
        f"listed without a package or package data: {sorted(listed - found - data_only)}"
    )


def test_package_data_exists() -> None:
    assert (ROOT / "ssl_hub/data/demo_set/fashion_mnist_demo.npz").is_file()
    assert (ROOT / "model_cards/ssl_method.md").is_file()
