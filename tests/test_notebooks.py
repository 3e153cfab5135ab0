"""Execute the notebooks top to bottom (small sizes) so they never rot."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", [
    "quickstart.ipynb",
    # the functions these five use are tested on their own (test_protocol.py, test_sweep.py,
    # test_fit.py, test_exact_models.py, test_correlation.py); --runslow runs them
    pytest.param("protocols.ipynb", marks=pytest.mark.slow),  # CI size: 12 spins, 200 trajectories (about 45 s)
    pytest.param("spectra.ipynb", marks=pytest.mark.slow),  # CI size: about 40 s
    pytest.param("sweep.ipynb", marks=pytest.mark.slow),
    pytest.param("superradiance.ipynb", marks=pytest.mark.slow),
    pytest.param("fitting.ipynb", marks=pytest.mark.slow),
])
def test_notebook_runs(name, monkeypatch):
    monkeypatch.setenv("TWA_NB_NTRAJ", "200")
    monkeypatch.setenv("TWA_NB_SIZE", "ci")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NB_DIR / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NB_DIR)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
