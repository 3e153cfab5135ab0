"""Shared test set-up: float64 (reference comparisons), one BLAS thread for QuTiP, slow marker."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # exact solvers slow ~100x with competing BLAS threads
# The suite's time is mostly XLA compiling many small programs: LLVM's optimization level 0 cuts the
# compile time of the layout tests by 20 % (160 s to 129 s on one core) and leaves HLO's own passes
# (fusion, layout) as users get them. Child interpreters (notebooks, the sweep CLI) inherit it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")
    parser.addoption("--save-by", default=None, choices=("loop", "intervals"),
                     help="how solves save (twa_jax._plan.SAVE_BY; default 'loop', diffrax's save loop): "
                          "'intervals' runs the whole suite through the scan over save intervals")


def pytest_configure(config):
    if config.getoption("--save-by"):
        from twa_jax import _plan

        _plan.SAVE_BY = config.getoption("--save-by")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def key():
    return jax.random.key(1234)


@pytest.fixture(autouse=True)
def _no_open_figures():
    """Every test starts without a current matplotlib figure (plots drawn with ``ax=None`` go
    onto ``plt.gca()``, so a figure left open by an earlier test in the same worker leaks in)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
