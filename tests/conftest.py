"""Shared test set-up: float64 (reference comparisons), one BLAS thread for QuTiP, slow marker."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # exact solvers slow ~100x with competing BLAS threads

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


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
