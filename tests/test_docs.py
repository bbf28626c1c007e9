"""The docs: the generated component reference says what the components are, its snippets and the guide compile,
and the site builds with `mkdocs build --strict` in the docs environment with a page for every component."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from kfp.dsl.types.type_utils import InconsistentTypeException

import slipway.components
from slipway.pipelines import component_docs

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = ROOT / ".venv" / "docs" / "bin" / "mkdocs"
GUIDE = ROOT / "docs" / "build-your-own-pipeline.md"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs") / "reference"
    component_docs.write(root)
    return root


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", markdown, re.M | re.S)


def test_every_component_has_a_page_with_its_inputs_outputs_types_defaults_and_image(reference: Path) -> None:
    for name in slipway.components.COMPONENTS:
        spec = component_docs.component(name).component_spec
        text = (reference / f"{name}.md").read_text()
        assert f"`{spec.implementation.container.image}`" in text, name
        for port in component_docs.inputs(spec):
            assert f"| `{port.name}` | {port.kind} | `{port.kfp_type}` |" in text, (name, port)
        for port in component_docs.outputs(spec):
            assert f"| `{port.name}` | {port.kind} | `{port.kfp_type}` |" in text, (name, port)
        assert f"[`{name}`]({name}.md)" in (reference / "index.md").read_text()
        assert f"[{name}]({name}.md)" in (reference / component_docs.NAV_FILE).read_text()


def test_a_page_reads_types_defaults_and_producers_off_the_component(reference: Path) -> None:
    deploy = (reference / "deploy.md").read_text()
    assert "| `eval_data` | artifact | `system.Dataset` | required | [`ingest`](ingest.md) |" in deploy
    assert "| `serving_target` | parameter | `String` | `'local'` |" in deploy
    assert '| `Output` | parameter | `String` | `task.outputs["Output"]` |' in deploy
    train = (reference / "train.md").read_text()
    assert "| `model` | artifact | `system.Model` |" in train
    assert "task_config" not in train.split("## Outputs")[0]  # KFP fills it from the task's settings
    assert "instead of the task's own pod: resources, kubernetes tolerations, kubernetes node selector." in train
    assert "| `pipeline_run_id` | parameter | `String` | required | `dsl.PIPELINE_JOB_ID_PLACEHOLDER` |" in train
    assert "(the `core` runtime)" in train
    assert "(the `tfdv` runtime)" in (reference / "validate.md").read_text()


def test_a_second_write_replaces_the_pages(tmp_path: Path) -> None:
    (tmp_path / "gone.md").write_text("a component that no longer exists")
    component_docs.write(tmp_path, ["ingest"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SUMMARY.md", "index.md", "ingest.md"]


@pytest.mark.parametrize("name", slipway.components.COMPONENTS)
def test_every_usage_snippet_compiles(reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      name: str) -> None:
    monkeypatch.chdir(tmp_path)
    [snippet] = python_blocks((reference / f"{name}.md").read_text())
    exec(compile(snippet, f"{name}.md", "exec"), {})
    image = component_docs.component(name).component_spec.implementation.container.image
    assert f"image: {image}" in (tmp_path / f"{name}_example.yaml").read_text()


def test_the_guides_pipeline_compiles_and_a_wrong_artifact_type_fails_with_the_error_it_shows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    guide = GUIDE.read_text()
    pipeline = python_blocks(guide)[0]
    exec(compile(pipeline, str(GUIDE), "exec"), {})
    assert "deploy" in (tmp_path / "my_pipeline.yaml").read_text()
    wrong = pipeline.replace('evaluate(model=trained.outputs["model"]', 'evaluate(model=trained.outputs["metrics"]')
    assert wrong != pipeline
    with pytest.raises(InconsistentTypeException) as error:
        exec(compile(wrong, str(GUIDE), "exec"), {})
    assert " ".join(str(error.value).split()) in " ".join(guide.split())


def test_the_site_builds_strict_with_a_page_for_every_component(tmp_path: Path) -> None:
    assert MKDOCS.is_file(), "no docs environment: `make docs-env` builds it"
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("reference"))
    (tmp_path / "slipway").symlink_to(ROOT / "slipway")  # what mkdocstrings reads the library API from
    component_docs.write(tmp_path / "docs" / "reference")
    result = subprocess.run([MKDOCS, "build", "--strict", "--site-dir", tmp_path / "site"], cwd=tmp_path,
                            env={**os.environ, "DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert component_docs.missing(tmp_path / "site" / "reference") == []
    assert 'id="slipway.problem.load_problem"' in (tmp_path / "site" / "api" / "index.html").read_text()


def test_the_check_names_a_component_without_a_built_page(tmp_path: Path) -> None:
    (tmp_path / "ingest").mkdir()
    (tmp_path / "ingest" / "index.html").write_text("<code>source_uri</code>")
    assert component_docs.missing(tmp_path, ["ingest", "train"]) == [
        "ingest: its page does not list the input 'problem'", f"train: no page at {tmp_path / 'train' / 'index.html'}"]
