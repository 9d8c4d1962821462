"""Checkpoints: bad files end with a clear error, none runs code, writes are atomic, inversion
never writes a wrong image."""

import contextlib
import errno
import io
import os
import pickle
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from reliability import TINY, assert_user_error, call_main, run_script

from iresnet.cli.compose import compose_config as compose
from iresnet.cli.invert import invert
from iresnet.cli.sample import sample
from iresnet.cli.train import build_trainer, train
from iresnet.data import Mnist5kDataModule
from iresnet.inverse import InverseConvergenceError, InverseConvergenceWarning
from iresnet.training import AtomicCheckpointIO, FlowLightningModule
from iresnet.training.checkpoint import CheckpointError, load_module, read_checkpoint


SMALL_MODEL = {"_target_": "iresnet.models.ResidualFlow", "input_shape": [1, 28, 28], "n_blocks": [1],
               "hidden_channels": 8, "fc_blocks": 0, "init_squeeze": True}  # fmt: skip


class WritesMarker:
    """Unpickling this creates ``path``: what a malicious checkpoint would do, and worse."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.fixture
def malicious_ckpt(tmp_path) -> tuple[Path, Path]:
    """A zip checkpoint whose hyper_parameters would create a marker file if loaded unsafely."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": WritesMarker(marker), "global_step": 0}, path)
    torch.load(path, weights_only=False)["hyper_parameters"].close()  # unsafe loading runs its code
    assert marker.exists()
    marker.unlink()
    return path, marker


def _broken(tmp_path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bad_checkpoint_files_are_named_with_the_problem(tmp_path, tiny_ckpt):
    with pytest.raises(CheckpointError, match="does not exist.*ckpt_path=runs/train"):
        read_checkpoint(tmp_path / "missing.ckpt")
    whole = tiny_ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        read_checkpoint(_broken(tmp_path, "cut.ckpt", whole[: len(whole) // 2]))
    not_zip = [("notes.txt", b"not a checkpoint\n"), ("empty.ckpt", b""), ("pickle.ckpt", pickle.dumps({"a": 1}))]
    for name, data in not_zip:
        with pytest.raises(CheckpointError, match="is not a checkpoint"):
            read_checkpoint(_broken(tmp_path, name, data))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not an iresnet training checkpoint"):
        read_checkpoint(tmp_path / "other.ckpt")


def test_a_checkpoint_of_another_model_is_refused(tmp_path, tiny_ckpt):
    ckpt = read_checkpoint(tiny_ckpt)
    ckpt["hyper_parameters"]["model"]["hidden_channels"] = 16
    torch.save(ckpt, tmp_path / "mismatch.ckpt")
    with pytest.raises(CheckpointError, match="does not match the model it describes"):
        load_module(tmp_path / "mismatch.ckpt")
    # Resuming with another model config: refused before Lightning sees the file.
    cfg = compose("train", [*TINY, "model.hidden_channels=16", f"ckpt_path={tiny_ckpt}"], tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"different model or config.*\.hydra/config\.yaml"):
        train(cfg)


def test_malicious_checkpoint_runs_no_code_anywhere(tmp_path, malicious_ckpt):
    path, marker = malicious_ckpt
    with pytest.raises(CheckpointError, match=r"refused.*asks for io\.open.*Nothing from it was executed"):
        read_checkpoint(path)
    # Resuming through iresnet-train: our check refuses it first.
    cfg = compose("train", [*TINY, f"ckpt_path={path}"], tmp_path / "run")
    with pytest.raises(CheckpointError, match="refused"):
        train(cfg)
    # Lightning's own resume path, as iresnet-train calls it, refuses it too.
    module = FlowLightningModule(model=SMALL_MODEL)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        trainer.fit(module, datamodule=Mnist5kDataModule(batch_size=8), ckpt_path=path, weights_only=True)
    assert not marker.exists()


@pytest.mark.slow
def test_installed_script_refuses_a_malicious_checkpoint_in_one_line(tmp_path, malicious_ckpt):
    path, marker = malicious_ckpt
    result = run_script("iresnet-eval", f"ckpt_path={path}", cwd=tmp_path)
    assert_user_error(result.returncode, result.stderr, "refused", "io.open")
    assert not marker.exists()


def test_cli_turns_checkpoint_problems_into_one_line(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_user_error(*call_main("invert", f"ckpt_path={_broken(tmp_path, 'x.ckpt', b'junk')}"), "is not a checkpoint")
    whole = tiny_ckpt.read_bytes()
    cut = _broken(tmp_path, "cut.ckpt", whole[: len(whole) // 3])
    assert_user_error(*call_main("sample", f"ckpt_path={cut}"), "truncated or corrupted")
    assert_user_error(*call_main("train", *TINY, "model.hidden_channels=16", f"ckpt_path={tiny_ckpt}"),
                      "different model or config")  # fmt: skip


class Crash(BaseException):
    """A process dying mid-write (not an Exception: nothing may catch and carry on)."""


def _crash_while_copying_across_devices(monkeypatch) -> None:
    """Renames between folders fail as across file systems (EXDEV), and the copy that
    ``shutil.move`` falls back to dies halfway; renames within one folder work."""
    for name in ("rename", "replace"):
        real = getattr(os, name)

        def cross_device(src, dst, *args, _real=real, **kwargs):
            if Path(src).resolve().parent != Path(dst).resolve().parent:
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            return _real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, name, cross_device)

    def half_copy(src, dst, *args, **kwargs):
        data = Path(src).read_bytes()
        Path(dst).write_bytes(data[: len(data) // 2])
        raise Crash

    monkeypatch.setattr(shutil, "copyfile", half_copy)


def _crash_while_serializing(monkeypatch) -> None:
    """``torch.save`` writes half of the checkpoint to its file, then dies (e.g. a full disk)."""
    real_save = torch.save

    def half_save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        if isinstance(f, (str, os.PathLike)):
            Path(f).write_bytes(data[: len(data) // 2])
        else:
            f.write(data[: len(data) // 2])
        raise Crash

    monkeypatch.setattr(torch, "save", half_save)


# Staged beside its target, the file never crosses file systems, so the first fault cannot hit it.
@pytest.mark.parametrize(
    "fault, saved", [(_crash_while_copying_across_devices, "new"), (_crash_while_serializing, "old")]
)
def test_a_crash_while_saving_leaves_a_whole_last_ckpt(tmp_path, tiny_ckpt, monkeypatch, fault, saved):
    checkpoint_io = AtomicCheckpointIO()
    last = tmp_path / "checkpoints" / "last.ckpt"
    old = read_checkpoint(tiny_ckpt)
    checkpoint_io.save_checkpoint(old, last)
    new = {**old, "global_step": old["global_step"] + 1}
    fault(monkeypatch)
    with contextlib.suppress(Crash):
        checkpoint_io.save_checkpoint(new, last)
    monkeypatch.undo()
    assert read_checkpoint(last)["global_step"] == {"old": old, "new": new}[saved]["global_step"]
    assert load_module(last).eval_model is not None
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind
    checkpoint_io.save_checkpoint(new, last)
    assert read_checkpoint(last)["global_step"] == new["global_step"]


def test_training_writes_checkpoints_atomically_and_every_n_steps(compose_config):
    trainer = build_trainer(compose_config("train", TINY))
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    steps = [c for c in trainer.checkpoint_callbacks if c._every_n_train_steps == 50]
    assert steps and steps[0].save_last and steps[0].dirpath == trainer.checkpoint_callback.dirpath


def _with_solver(tmp_path, ckpt: Path, **solver) -> Path:
    data = read_checkpoint(ckpt)
    data["hyper_parameters"]["model"]["inverse"].update(solver)
    path = tmp_path / "solver.ckpt"
    torch.save(data, path)
    return path


@pytest.mark.parametrize("command", ["invert", "sample"])
@pytest.mark.parametrize("on_failure", ["raise", "warn"])
def test_non_convergent_inversion_writes_no_image(tmp_path, stiff_ckpt, on_failure, command):
    """Also when the checkpoint's solver only warns and returns its last iterate."""
    ckpt = _with_solver(tmp_path, stiff_ckpt, on_failure=on_failure, max_iter=1)
    out = tmp_path / "out.png"
    cfg = compose(command, [f"ckpt_path={ckpt}", "n=4", f"out={out}"], tmp_path / "run")
    warns = pytest.warns(InverseConvergenceWarning) if on_failure == "warn" else contextlib.nullcontext()
    with warns, pytest.raises(InverseConvergenceError, match=r"residual.*max_iter"):
        {"invert": invert, "sample": sample}[command](cfg)
    assert not out.exists()


def test_cli_non_convergent_inversion_is_one_line(tmp_path, stiff_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "recon.png"
    code, stderr = call_main("invert", f"ckpt_path={stiff_ckpt}", "n=4", "max_iter=1", f"out={out}")
    assert_user_error(code, stderr, "did not converge", "residual", "max_iter")
    assert not out.exists()
