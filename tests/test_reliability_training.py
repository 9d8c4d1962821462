"""Training faults: NaN/Inf stops with the last good weights saved; the invertibility audit warns
and names the layer; the same seed and config give the same bits/dim."""

import math

import pytest
import pytorch_lightning as pl
import torch
from reliability import TINY, assert_user_error, call_main
from torch import nn

from iresnet.cli.compose import compose_config as compose
from iresnet.cli.train import train
from iresnet.data import Mnist5kDataModule
from iresnet.inverse import FixedPointInverse
from iresnet.training import FlowLightningModule, InvertibilityAudit, InvertibilityWarning, TrainingDivergedError
from iresnet.training.checkpoint import load_module, read_checkpoint

FAIL_AT = 3  # optimizer steps done when the bad batch arrives
RUN = [*TINY, "trainer.limit_train_batches=8", "trainer.max_epochs=1", "~logger",
       "callbacks.step_checkpoint.every_n_train_steps=2"]  # fmt: skip


@pytest.fixture
def poison(monkeypatch):
    """``poison(kind)`` makes training step ``FAIL_AT + 1`` produce a NaN loss or NaN gradients
    (with a finite loss); returns the module's state just before that step."""
    before: dict = {}
    real = FlowLightningModule.per_sample_loss

    def install(kind: str) -> dict:
        def per_sample_loss(self, model, batch):
            out = real(self, model, batch)
            if model is self.model and self.trainer.global_step == FAIL_AT:
                before.update({k: v.clone() for k, v in self.state_dict().items()})
                if kind == "loss":
                    out = {**out, "loss": out["loss"] * math.nan, "score": out["score"] * math.nan}
                else:
                    next(self.model.parameters()).register_hook(lambda grad: grad * math.nan)
            return out

        monkeypatch.setattr(FlowLightningModule, "per_sample_loss", per_sample_loss)
        return before

    return install


def _assert_saved_last_good_state(last, before: dict) -> None:
    ckpt = read_checkpoint(last)
    assert ckpt["global_step"] == FAIL_AT
    for key, value in before.items():
        assert torch.equal(ckpt["state_dict"][key], value), key
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_nan_loss_stops_training_with_a_one_line_error(tmp_path, monkeypatch, poison):
    before = poison("loss")
    monkeypatch.chdir(tmp_path)
    code, stderr = call_main("train", *RUN, f"run_dir={tmp_path / 'run'}")
    assert_user_error(code, stderr, f"train/bpd is nan at step {FAIL_AT + 1}",
                      "last finite train/bpd was", f"at step {FAIL_AT}", "Lower optim.lr")  # fmt: skip
    _assert_saved_last_good_state(tmp_path / "run" / "checkpoints" / "last.ckpt", before)


def test_nan_gradient_never_reaches_the_weights(tmp_path, poison):
    before = poison("grad")
    cfg = compose("train", RUN, tmp_path / "run")
    with pytest.raises(TrainingDivergedError, match=f"a gradient is NaN or Inf .* at step {FAIL_AT + 1}"):
        train(cfg)
    # The step checkpoint of step 2 was overwritten by the guard's, of step 3: finite, pre-NaN weights.
    _assert_saved_last_good_state(tmp_path / "run" / "checkpoints" / "last.ckpt", before)


def _validate_with_audit(module: FlowLightningModule, **audit) -> None:
    trainer = pl.Trainer(logger=False, callbacks=[InvertibilityAudit(**audit)], limit_val_batches=1,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)  # fmt: skip
    trainer.validate(module, datamodule=Mnist5kDataModule(eval_batch_size=16), verbose=False)


def test_audit_names_the_layer_whose_bound_reaches_one(tiny_ckpt):
    module = load_module(tiny_ckpt)
    block = module.eval_model._scales[1][0]
    name = next(name for name, m in module.eval_model.named_modules() if m is block).replace(".", r"\.")
    net = block.net
    # As if a layer had escaped spectral normalization: a plain conv with the same weights.
    plain = nn.Conv2d(net[1].in_channels, net[1].out_channels, net[1].kernel_size, padding=net[1].padding)
    plain.load_state_dict({"weight": net[1].weight.detach(), "bias": net[1].bias.detach()})
    net[1] = plain
    expected = rf"'{name}' has no Lipschitz bound: its layers {name}\.net\.1 are not"
    with pytest.warns(InvertibilityWarning, match=expected):
        _validate_with_audit(module)
    assert module.trainer.callback_metrics["val/max_branch_bound"] == math.inf


def test_audit_names_the_block_that_inverts_badly(stiff_ckpt):
    module = load_module(stiff_ckpt)
    module.eval_model.set_inverse_solver(FixedPointInverse(max_iter=1, on_failure="warn"))
    expected = r"error .* exceeds max_recon_error=0\.001; block '[\w.]+' left the largest residual, .*did not converge"
    with pytest.warns(InvertibilityWarning, match=expected):
        _validate_with_audit(module)
    assert module.trainer.callback_metrics["val/max_branch_bound"] < 1


def test_audit_is_quiet_for_a_healthy_model(tiny_ckpt, recwarn):
    _validate_with_audit(load_module(tiny_ckpt))
    assert not [w for w in recwarn if issubclass(w.category, InvertibilityWarning)]


def test_same_seed_and_config_give_the_same_bpd(tmp_path):
    runs = [*TINY, "trainer.limit_train_batches=3", "trainer.max_epochs=1", "~logger", "seed=3"]
    first = train(compose("train", runs, tmp_path / "a"))
    second = train(compose("train", runs, tmp_path / "b"))
    for key in ("train/bpd", "val/bpd", "test/bpd"):
        assert math.isfinite(first[key]) and abs(first[key] - second[key]) <= 1e-6, key
