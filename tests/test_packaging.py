"""The packaging facts that must agree across files: locks, the namespace mapping, the image."""

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

from kfp.dsl import base_component

import slipway.components
from slipway import __version__, runtimes

ROOT = Path(__file__).resolve().parent.parent


def pins(path: Path) -> dict[str, str]:
    """{name: version} of the `name==version` lines of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line)
        if match:
            name = re.sub(r"\[.*\]", "", match.group(1))
            found[re.sub(r"[-_.]+", "-", name).lower()] = match.group(2)  # PEP 503
    return found


def package_dirs() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in config["options"]["package_dir"].strip().splitlines()]
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def test_every_pin_of_core_in_is_what_the_core_lock_installs() -> None:
    locked = pins(ROOT / "requirements" / "core.txt")
    for name, version in pins(ROOT / "requirements" / "core.in").items():
        assert locked.get(name) == version, f"requirements/core.txt is stale for {name}: run `make lock`"


def test_the_core_lock_pins_the_cpu_torch_build_and_the_test_lock_repeats_none_of_it() -> None:
    core = pins(ROOT / "requirements" / "core.txt")
    assert core["torch"] == "2.13.0+cpu"
    assert not set(pins(ROOT / "requirements" / "test.txt")) & set(core)


def test_every_folder_maps_into_the_slipway_namespace_and_is_a_package() -> None:
    mapping = package_dirs()
    assert set(mapping) == {"slipway", "slipway.components", "slipway.pipelines", "slipway.serving"}
    for folder in mapping.values():
        assert (ROOT / folder / "__init__.py").is_file(), folder


def test_the_core_image_installs_the_core_lock_and_every_mapped_folder() -> None:
    dockerfile = (ROOT / "images" / "core.Dockerfile").read_text()
    assert "-r requirements/core.txt" in dockerfile
    for folder in package_dirs().values():
        assert re.search(rf"^COPY {folder} {folder}$", dockerfile, re.M), f"the image misses {folder}/"


def test_compiled_pipelines_reference_the_image_of_this_version() -> None:
    assert runtimes.CORE_IMAGE.endswith(f"/slipway-core:{__version__}")


def test_every_library_module_imports_inside_a_running_task() -> None:
    # In a task KFP sets _KFP_RUNTIME=true and kfp.dsl has no `component` decorator: a library
    # module that declared a component (instead of leaving that to catalog.py) would fail here.
    modules = [f"slipway.components.{p.stem}" for p in (ROOT / "components").glob("*.py")
               if p.stem not in ("__init__", "catalog")]
    script = "; ".join(f"import {module}" for module in modules)
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "_KFP_RUNTIME": "true"},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_component_is_importable_from_slipway_components() -> None:
    for name in slipway.components.COMPONENTS:
        assert isinstance(getattr(slipway.components, name), base_component.BaseComponent), name
