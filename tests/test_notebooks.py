"""The notebooks in notebooks/ run top to bottom, and are stored without outputs."""

import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
KERNEL = "python3"  # ipykernel's own kernel: this interpreter, whatever kernelspecs are installed


def test_there_are_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == KERNEL
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}, cell {i} has outputs: clear them before committing "
                "(e.g. jupyter nbconvert --clear-output --inplace notebooks/*.ipynb)"
            )


def test_kernel_runs_this_interpreter():
    """The notebooks import the iresnet installed here, not one of another Python."""
    manager, client = start_new_kernel(kernel_name=KERNEL)
    printed = []

    def keep_stdout(msg):
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])

    try:
        reply = client.execute_interactive("import sys; print(sys.executable)", timeout=60, output_hook=keep_stdout)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok"
    assert Path("".join(printed).strip()).resolve() == Path(sys.executable).resolve()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    """Every cell runs without error, in a scratch directory, with matplotlib drawing off screen.

    Without ``IRESNET_CKPT`` the MNIST notebook trains its own tiny model, as it does in CI.
    """
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("IRESNET_CKPT", raising=False)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name=KERNEL, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on failure
