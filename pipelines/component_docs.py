"""The component reference: one Markdown page per component, written from the component itself.

Each page is read off the `@dsl.component` object that pipelines import, never re-typed: its docstring,
its KFP component spec (inputs and outputs with their types, defaults and whether they are required),
the runtime image it runs on, and a usage snippet built from its required inputs. So a changed signature
changes its page, and a new component in `slipway.components.COMPONENTS` gets one.

The pages are generated, not checked in: `make docs` writes them into docs/reference/ (ignored by git)
from the core environment, which has kfp, then builds the site with mkdocs in the docs environment, then
checks the built site with `--check`: a component that has no built page, or whose page lacks one of its
inputs, fails the build, whatever mkdocs did with it (an `exclude_docs`, a nav that left it out).

    python -m slipway.pipelines.component_docs docs/reference          # write the pages
    python -m slipway.pipelines.component_docs --check site/reference  # after `mkdocs build`
"""

from __future__ import annotations

import argparse
import inspect
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kfp.dsl import base_component, structures
from kfp.dsl.types import type_utils

import slipway.components
from slipway import runtimes
from slipway.atomic import atomic_output

# The Python annotation a pipeline parameter of each KFP parameter type takes, for the usage snippets.
PYTHON_TYPES = {"String": "str", "Integer": "int", "Float": "float", "Boolean": "bool", "List": "list",
                "Dict": "dict"}
# Inputs that Slipway's components name after a run's own values: a pipeline passes KFP's placeholder.
PLACEHOLDERS = {"pipeline_root": "dsl.PIPELINE_ROOT_PLACEHOLDER", "pipeline_run_id": "dsl.PIPELINE_JOB_ID_PLACEHOLDER"}
NAV_FILE = "SUMMARY.md"


@dataclass(frozen=True)
class Port:
    """One input or output as a user wires it: a parameter or an artifact, of a KFP type."""

    name: str
    kfp_type: str
    is_artifact: bool
    required: bool = True
    default: object = None

    @property
    def kind(self) -> str:
        return "artifact" if self.is_artifact else "parameter"

    @property
    def artifact_class(self) -> str:
        """The `kfp.dsl` class of an artifact type (`system.Dataset` -> `Dataset`)."""
        return type_utils.ARTIFACT_CLASSES_MAPPING[self.kfp_type.rsplit(".", 1)[-1].lower()].__name__


def component(name: str) -> base_component.BaseComponent:
    """The component object that `from slipway.components import <name>` gives a pipeline."""
    return getattr(slipway.components, name)


def inputs(spec: structures.ComponentSpec) -> list[Port]:
    """The inputs a caller passes, in signature order. A `TaskConfig` input is left out: KFP fills it from the
    task's settings (see `task_settings`), nobody passes it."""
    ports = []
    for name, spec_input in (spec.inputs or {}).items():
        if type_utils.is_task_config_type(spec_input.type):
            continue
        ports.append(Port(name, _type_name(spec_input.type, spec_input.is_artifact_list),
                          not type_utils.is_parameter_type(spec_input.type), required=not spec_input.optional,
                          default=spec_input.default))
    return ports


def outputs(spec: structures.ComponentSpec) -> list[Port]:
    """The outputs: output artifacts, then the returned parameters (a NamedTuple's fields, or `Output`)."""
    return [Port(name, _type_name(spec_output.type, spec_output.is_artifact_list),
                 not type_utils.is_parameter_type(spec_output.type))
            for name, spec_output in (spec.outputs or {}).items()]


def _type_name(kfp_type: str, is_artifact_list: bool) -> str:
    """`system.Dataset@0.0.1` -> `system.Dataset` (the schema version is the same for every system type)."""
    name = kfp_type.split("@", 1)[0]
    return f"List[{name}]" if is_artifact_list else name


def runtime_of(image: str) -> str | None:
    """The Slipway runtime whose image this is, or None for an image of someone else's."""
    return next((runtime for runtime in runtimes.RUNTIMES if runtimes.image(runtime) == image), None)


def producers(port: Port, names: Iterable[str]) -> list[str]:
    """The components among `names` with an output of the same name and type: where this input usually comes from."""
    return [name for name in names
            if any((output.name, output.kfp_type) == (port.name, port.kfp_type)
                   for output in outputs(component(name).component_spec))]


def task_settings(spec: structures.ComponentSpec) -> str:
    """Which settings of the task (`.set_cpu_limit`, `.set_env_variable`, ...) its body receives, as its
    `TaskConfig`: those that the body hands on (to a job's nodes, say) instead of the task's own pod, and those
    that apply to both. Empty for a component without passthroughs."""
    def names(apply_to_task: bool) -> str:
        return ", ".join(passthrough.field.name.lower().replace("_", " ")
                         for passthrough in spec.task_config_passthroughs or []
                         if passthrough.apply_to_task == apply_to_task)

    body_only, both = names(False), names(True)
    sentences = [f"Set on the task, these go to the component's body instead of the task's own pod: {body_only}."
                 if body_only else "", f"These go to the body and to the task's pod: {both}." if both else ""]
    return " ".join(sentence for sentence in sentences if sentence)


def usage(name: str, spec: structures.ComponentSpec) -> str:
    """A pipeline that calls the component with its required inputs and compiles: artifact inputs are imported by
    URI (in a real pipeline they are an upstream task's outputs), the run's root and id are KFP's placeholders, and
    the other required parameters are the pipeline's."""
    required = [port for port in inputs(spec) if port.required]
    artifacts = [port for port in required if port.is_artifact]
    parameters = [port for port in required if not port.is_artifact and port.name not in PLACEHOLDERS]
    pipeline = f"{name}_example"
    signature = "".join(f"\n    {port.name}: {PYTHON_TYPES[port.kfp_type]}," for port in parameters)
    lines = ["from kfp import compiler, dsl", "", f"from slipway.components import {name}", "", "",
             f'@dsl.pipeline(name="{pipeline.replace("_", "-")}")',
             f"def {pipeline}({signature}{chr(10) if signature else ''}):"]
    lines += [f'    {port.name} = dsl.importer(\n        artifact_uri="gs://your-bucket/{port.name}",\n'
              f"        artifact_class=dsl.{port.artifact_class},\n    ).output"
              for port in artifacts]
    lines.append(f"    task = {name}(")
    lines += [f"        {port.name}={PLACEHOLDERS.get(port.name, port.name)}," for port in required]
    lines.append("    )")
    lines += [f"    # {_reference(port)}: {port.kfp_type}" for port in outputs(spec)]
    lines += ["", "", f'compiler.Compiler().compile({pipeline}, "{pipeline}.yaml")']
    return "\n".join(lines)


def _reference(port: Port) -> str:
    """How a pipeline reads an output of `task`; a returned single value is KFP's `Output`."""
    return f'task.outputs["{port.name}"]'


def _source(port: Port, names: Iterable[str]) -> str:
    """Where an input usually comes from: the components that make such an artifact, or KFP's placeholder."""
    if port.name in PLACEHOLDERS:
        return f"`{PLACEHOLDERS[port.name]}`"
    return ", ".join(f"[`{source}`]({source}.md)" for source in producers(port, names)) if port.is_artifact else ""


def _default(port: Port) -> str:
    return f"`{port.default!r}`" if not port.required else "required"


def page(name: str, names: Iterable[str]) -> str:
    """The Markdown reference page of one component; `names` are the components its inputs may come from."""
    built = component(name)
    spec = built.component_spec
    image = spec.implementation.container.image
    runtime = runtime_of(image)
    # The page hides Material's table of contents (four fixed sections) to give its tables the width.
    lines = ["---", "hide:", "  - toc", "---", "", f"# {name}", "", inspect.getdoc(built.python_func) or "", "",
             f"**Runtime image:** `{image}`" + (f" (the `{runtime}` runtime)" if runtime else ""), "",
             "## Inputs", ""]
    ports = inputs(spec)
    if ports:
        lines += ["| name | kind | KFP type | default | usually from |", "|---|---|---|---|---|"]
        lines += [f"| `{port.name}` | {port.kind} | `{port.kfp_type}` | {_default(port)} | {_source(port, names)} |"
                  for port in ports]
    else:
        lines.append("None.")
    lines += ["", "## Outputs", ""]
    ports = outputs(spec)
    if ports:
        lines += ["| name | kind | KFP type | read as |", "|---|---|---|---|"]
        lines += [f"| `{port.name}` | {port.kind} | `{port.kfp_type}` | `{_reference(port)}` |" for port in ports]
    else:
        lines.append("None.")
    settings = task_settings(spec)
    if settings:
        lines += ["", "## Task settings", "", settings]
    lines += ["", "## Usage", "", "```python", usage(name, spec), "```", ""]
    return "\n".join(lines)


def index(names: Iterable[str]) -> str:
    """The reference's front page: every component, its runtime and the first sentence of its docstring."""
    lines = ["# Components", "",
             "Every component in `slipway.components`, generated from the component itself. Import any of them "
             "with `from slipway.components import <name>`; [Build your own pipeline](../build-your-own-pipeline.md) "
             "shows how they wire together.", "",
             "| component | runtime | what it does |", "|---|---|---|"]
    for name in names:
        built = component(name)
        first_sentence = re.split(r"(?<=\.)\s", inspect.getdoc(built.python_func) or "", maxsplit=1)[0]
        summary = first_sentence.replace("\n", " ").replace("|", "\\|")  # a `|` would end the table cell
        runtime = runtime_of(built.component_spec.implementation.container.image) or "custom"
        lines.append(f"| [`{name}`]({name}.md) | `{runtime}` | {summary} |")
    return "\n".join(lines) + "\n"


def nav(names: Iterable[str]) -> str:
    """The reference's navigation (mkdocs-literate-nav's nav file): the index, then each component."""
    return "\n".join(["* [Overview](index.md)", *(f"* [{name}]({name}.md)" for name in names)]) + "\n"


def write(root: Path, names: Iterable[str] = slipway.components.COMPONENTS) -> list[Path]:
    """Writes the reference into `root`, replacing what is there, so that a removed component loses its page."""
    names = list(names)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    pages = {"index.md": index(names), NAV_FILE: nav(names)}
    pages |= {f"{name}.md": page(name, names) for name in names}
    for filename, text in pages.items():
        with atomic_output(root / filename) as temp:
            temp.write_text(text)
    return [root / filename for filename in pages]


def missing(site_reference: Path, names: Iterable[str] = slipway.components.COMPONENTS) -> list[str]:
    """What the built site lacks: a component without a page, or an input its page does not name."""
    problems = []
    for name in names:
        built = site_reference / name / "index.html"
        if not built.is_file():
            problems.append(f"{name}: no page at {built}")
            continue
        html = built.read_text()
        problems += [f"{name}: its page does not list the input {port.name!r}"
                     for port in inputs(component(name).component_spec) if f"<code>{port.name}</code>" not in html]
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path,
                        help="where to write the pages (docs/reference), or with --check the built site's reference")
    parser.add_argument("--check", action="store_true",
                        help="check that the built site has a page for every component, listing its inputs")
    args = parser.parse_args(argv)
    if args.check:
        problems = missing(args.directory)
        if problems:
            sys.exit("the component reference is incomplete:\n  " + "\n  ".join(problems))
        print(f"{args.directory}: every one of the {len(slipway.components.COMPONENTS)} components has its page")
    else:
        print(f"{args.directory}: wrote {len(write(args.directory))} pages")


if __name__ == "__main__":
    main()
