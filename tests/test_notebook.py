"""The quickstart notebook runs top to bottom on a real local cluster and reports sensible metrics.

The notebook is executed with nbclient in a kernel that runs *this* interpreter (a kernel spec written to a
temporary folder, so whatever ``python3`` kernel is installed elsewhere does not matter).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebooks" / "quickstart.ipynb"
KERNEL = "emchunks-test"


def _kernel_manager(root: Path):
    """A kernel manager whose only kernel spec runs ``sys.executable -m ipykernel_launcher``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = root / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "emchunks test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(root / "kernels")])
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
                   and o.get("name") == "stdout")


@pytest.mark.slow
def test_quickstart_notebook_runs_against_a_local_cluster(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)  # the notebook must start its own cluster
    monkeypatch.delenv("EMCHUNKS_SHARED_DIR", raising=False)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the kernel's tempfile folder: checked for leftovers below
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, km=_kernel_manager(tmp_path), resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()  # raises CellExecutionError if any cell fails

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert all(c.execution_count is not None for c in nb.cells if c.cell_type == "code")

    # the dashboard link is shown, and the figures were drawn (sections, metrics bars, overlay)
    stdout = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "dashboard: http" in stdout
    # the output as napari's reader sees it: the affinities image, then its segmentation label
    if importlib.util.find_spec("ome_zarr") is not None:
        found = [line.split() for line in stdout.splitlines() if line.startswith("napari layer:")]
        layers = [words[2] for words in found]
        assert layers[0] == "affinities" and layers[-1] == "segmentation", layers
    if importlib.util.find_spec("neuroglancer") is not None:
        assert "neuroglancer: http://127.0.0.1:" in stdout
        assert "layers: raw, affinities, segmentation" in stdout
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3

    # the summary cell's metrics: decoding noisy true affinities recovers the cells, one segment each (measured:
    # error 0.0001, 64 segments for 64 cells); the briefly trained model segments well too (measured 0.007;
    # untrained it scores 0.94)
    (summary_cell,) = [c for c in nb.cells if "summary" in c.metadata.get("tags", [])]
    summary = json.loads(_text(summary_cell))
    cells = summary["cells"]
    decoded = summary["decode"]
    assert decoded["adapted_rand_error"] < 0.05
    assert decoded["voi_split"] < 0.2 and decoded["voi_merge"] < 0.2
    assert abs(decoded["segments"] - cells) <= 0.1 * cells
    predicted = summary["predict"]
    for name in ("adapted_rand_error", "voi_split", "voi_merge"):
        assert math.isfinite(predicted[name]) and predicted[name] >= 0
    assert predicted["adapted_rand_error"] < 0.5

    # nothing left behind: the working folder is gone and the notebook wrote nothing where it ran
    assert not Path(summary["work_dir"]).exists()
    assert not list(scratch.glob("emchunks-quickstart-*"))
    assert not list(cwd.iterdir())


def test_the_stored_notebook_shows_its_results():
    """It is stored executed, so a reader sees its figures and numbers before running it."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    # top to bottom, in one run
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for c in code for o in c.outputs) >= 3
    (summary_cell,) = [c for c in nb.cells if "summary" in c.metadata.get("tags", [])]
    assert json.loads(_text(summary_cell))["decode"]["adapted_rand_error"] < 0.05
