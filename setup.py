"""Package layout beyond pyproject.toml: the top-level ``configs/`` folder ships inside the
wheel as the package data ``xmodel/configs`` (read through ``importlib.resources`` by
``xmodel.config``), while a source checkout keeps ``configs/`` as the documented path."""
from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["xmodel", "xmodel.*", "fits", "fits.*"]) + ["xmodel.configs"],
    package_dir={"xmodel.configs": "configs"},
    package_data={"xmodel.configs": ["*.toml", "*/*.toml", "*/*/*.toml", "*.md"]},
    include_package_data=False,
)
