"""The docs site builds strictly, covers every public name, and the packaging files agree."""

import ast
import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import twa_jax as tw

ROOT = Path(__file__).resolve().parents[1]
DOC_PACKAGES = ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_jupyter",
                "griffe_public_redundant_aliases")


def _missing_doc_packages():
    missing = []
    for name in DOC_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


def test_mkdocs_build_strict(tmp_path):
    """`mkdocs build --strict`: no broken link, no missing cross-reference, no docstring warning."""
    missing = _missing_doc_packages()
    if missing:
        pytest.skip(f"docs packages not installed ({', '.join(missing)}): pip install -e '.[docs]'")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    site = tmp_path / "site"
    for page in ["api/core", "api/states", "api/exact", "how-twa-works", "conventions",
                 "notebooks/quickstart", "benchmarks", "changelog", "install"]:
        assert (site / page / "index.html").is_file(), page
    # the notebooks are rendered with their saved outputs (figures), not executed
    assert "data:image/png;base64" in (site / "notebooks/quickstart/index.html").read_text()
    # Sphinx roles and math in the docstrings were converted, not printed
    core = (site / "api/core/index.html").read_text()
    assert ":func:" not in core and ":class:" not in core and ":math:" not in core
    assert '#twa_jax.Result"' in core  # a role rendered as a link


def _documented():
    names = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        names |= set(re.findall(r"^::: (twa_jax[\w.]*)", page.read_text(), flags=re.M))
    return names


def test_api_reference_lists_every_public_name():
    documented = _documented()
    public = {name for name in dir(tw) if not name.startswith("_")}
    modules = {name for name in public if isinstance(getattr(tw, name), types.ModuleType)}
    missing = sorted(f"twa_jax.{name}" for name in public - modules
                     if f"twa_jax.{name}" not in documented)
    assert not missing, f"public names without an API entry in docs/api/: {missing}"
    missing_modules = sorted(f"twa_jax.{m}" for m in modules | {"exact"}
                             if f"twa_jax.{m}" not in documented)
    assert not missing_modules, f"public modules without an API page: {missing_modules}"


def test_nav_has_every_page_and_the_notebooks_are_links():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        assert page.relative_to(ROOT / "docs").as_posix() in nav, page
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        link = ROOT / "docs" / "notebooks" / nb.name
        assert link.is_symlink() and link.resolve() == nb.resolve(), nb.name
        assert f"notebooks/{nb.name}" in nav, nb.name


def _pyproject_version():
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, flags=re.M).group(1)


def test_version_license_citation_agree():
    version = _pyproject_version()
    assert tw.__version__ == version
    cff = (ROOT / "CITATION.cff").read_text()
    assert re.search(rf'^version: "{re.escape(version)}"$', cff, flags=re.M)
    assert "Hosseinabadi" in cff and "preferred-citation:" in cff
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")


def test_readme_is_short_and_its_python_blocks_parse():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 300
    blocks = re.findall(r"^```python\n(.*?)^```", readme, flags=re.M | re.S)
    assert len(blocks) >= 4
    for block in blocks:
        ast.parse(block)
    # the two set-up commands, the second exactly what .ci/run runs
    assert "pip install -e '.[test]' && python -m pytest -q" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-e '.[test]' && python -m pytest -q" in ci
    assert "pip install -e '.[cuda12]'" in readme
    # the README's BibTeX is the docs' (docs/citation.bib), with the package version
    bib = (ROOT / "docs" / "citation.bib").read_text().strip()
    assert bib in readme
    assert f"version = {{{_pyproject_version()}}}" in bib
