"""The package's import structure: no import circles.

* ``twa_jax/_checks.py`` (the primitive argument checks) imports nothing of the package, so any
  module may use it; the checks that know the package's types live in ``_plan.py``.
* Every submodule imports on its own, as the first module of the package: a circle between
  submodules (``a`` imports ``b`` at the top, ``b`` imports ``a``) fails there whichever module
  comes first. Checked in one fresh interpreter, with a bare ``twa_jax`` package (its
  ``__init__`` not run, so its import order cannot hide a circle) and the package's modules
  cleared from ``sys.modules`` before each.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "twa_jax"


def test_checks_imports_nothing_of_the_package():
    tree = ast.parse((PACKAGE / "_checks.py").read_text())
    found = []
    for node in ast.walk(tree):  # inside functions too
        if isinstance(node, ast.ImportFrom):
            if node.level > 0 or (node.module or "").split(".")[0] == "twa_jax":
                found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import ...")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] == "twa_jax"]
    assert not found, f"twa_jax/_checks.py must import nothing of the package: {found}"


def _submodules():
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts != ("twa_jax",):
            names.append(".".join(parts))
    return names


# each module imported first into a bare package; prints {module: error} of those that fail
# (a missing optional dependency is not a failure)
IMPORT_EACH = """
import importlib, importlib.util, json, sys, traceback
root, names = sys.argv[1], sys.argv[2:]
failed = {}
for name in names:
    for m in [m for m in sys.modules if m == "twa_jax" or m.startswith("twa_jax.")]:
        del sys.modules[m]
    spec = importlib.util.spec_from_file_location(
        "twa_jax", root + "/twa_jax/__init__.py", submodule_search_locations=[root + "/twa_jax"])
    sys.modules["twa_jax"] = importlib.util.module_from_spec(spec)  # bare: __init__ not run
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] == "twa_jax":
            failed[name] = traceback.format_exc()
    except Exception:
        failed[name] = traceback.format_exc()
print(json.dumps(failed))
"""


def test_every_submodule_imports_on_its_own():
    names = _submodules()
    assert "twa_jax._checks" in names and "twa_jax._plan" in names and "twa_jax.models._paper" in names
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, "-c", IMPORT_EACH, str(ROOT), *names], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert not failed, "submodules that do not import on their own:\n" + "\n".join(
        f"--- {name}\n{tb}" for name, tb in failed.items())


def test_package_imports():
    code = "import twa_jax, twa_jax.exact, twa_jax.paper; print(twa_jax.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg"), timeout=300)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip().splitlines()[-1]).resolve() == (PACKAGE / "__init__.py").resolve()
