"""The optimizer's multi-tensor kernels and the weight average (EMA) against plain formulas; the
spectral-norm refresh after every optimizer step."""

import math

import pytest
import torch
from reliability import TINY
from torch import nn

import iresnet.training.module as module_mod
from iresnet.cli.compose import compose_config as compose
from iresnet.cli.train import train
from iresnet.training import FlowLightningModule
from iresnet.training.ema import EMA
from iresnet.training.module import build_optimizer


def _model() -> nn.Module:
    torch.manual_seed(0)
    # Batch norm first: a bias right before it would get a gradient of pure rounding noise.
    return nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 5) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 3, generator=g)
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()


@pytest.mark.parametrize("name,kernel", [("Adam", "fused"), ("Adamax", "foreach")])
def test_multi_tensor_optimizer_matches_the_per_tensor_loop(name, kernel):
    fast, plain = _model(), _model()
    kwargs = {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 1e-4}
    opt = build_optimizer({"_target_": f"torch.optim.{name}", "_partial_": True, **kwargs}, fast.parameters())
    assert opt.defaults[kernel] is True
    _train(fast, opt)
    cls = type(opt)
    _train(plain, cls(plain.parameters(), **kwargs, foreach=False))
    for a, b in zip(fast.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(fast[1].weight, _model()[1].weight)  # it did train


def test_optimizer_config_must_be_a_partial_optimizer():
    with pytest.raises(ValueError, match="_partial_: true"):
        build_optimizer({"_target_": "torch.optim.Adam", "lr": 1e-3}, _model().parameters())
    explicit = build_optimizer({"_target_": "torch.optim.Adam", "_partial_": True, "foreach": False}, _model().parameters())
    assert explicit.defaults["foreach"] is False and not explicit.defaults["fused"]  # the config's choice wins


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_follows_its_recursion_and_copies_buffers(warmup):
    model = _model()
    ema = EMA(model, decay=0.9, warmup=warmup)
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ema.update(model)  # the first update copies
    for t in range(1, 4):
        _train(model, opt, steps=1)
        d = min(0.9, (1 + t) / (10 + t)) if warmup else 0.9
        for n, p in model.named_parameters():
            expected[n] = d * expected[n] + (1 - d) * p.detach()
        ema.update(model)
    shadow = dict(ema.module.named_parameters())
    for n, value in expected.items():
        torch.testing.assert_close(shadow[n], value)
    # Buffers (running statistics, the batch counter) are copied, not averaged.
    torch.testing.assert_close(ema.module[0].running_mean, model[0].running_mean)
    assert int(ema.module[0].num_batches_tracked) == int(model[0].num_batches_tracked) == 3
    assert int(ema.n_averaged) == 4
    ema.assign(model)  # the raw weights, for evaluating them with the evaluation estimator
    assert all(torch.equal(a, b) for a, b in zip(ema.module.state_dict().values(), model.state_dict().values()))
    assert int(ema.n_averaged) == 4


def test_spectral_norm_lanczos_steps_refresh_every_layer_after_every_optimizer_step(tmp_path, monkeypatch):
    calls = []
    real = module_mod.update_spectral_norms

    def recording(model, **kwargs):
        results = real(model, **kwargs)
        if kwargs.get("lanczos_steps") == 3:  # not the evaluation's update before validation
            calls.append((kwargs, {name: r.sigma for name, r in results.items()}))
        return results

    monkeypatch.setattr(module_mod, "update_spectral_norms", recording)
    overrides = [*TINY, "trainer.limit_train_batches=4", "trainer.max_epochs=1", "~logger", "test=false",
                 "module.spectral_norm_lanczos_steps=3"]  # fmt: skip
    train(compose("train", overrides, tmp_path))
    assert len(calls) == 4  # one per optimizer step
    assert all(kw == {"max_iter": 3, "lanczos_steps": 3, "dtype": torch.float32} for kw, _ in calls)
    assert len(calls[0][1]) >= 4 and all(s > 0 for s in calls[0][1].values())  # every normalized layer


@pytest.mark.parametrize("steps", [-1, 2.5, True])
def test_spectral_norm_lanczos_steps_must_be_a_count(steps):
    with pytest.raises(ValueError, match="spectral_norm_lanczos_steps must be an integer >= 0"):
        FlowLightningModule({"_target_": "iresnet.models.ToyFlow"}, spectral_norm_lanczos_steps=steps)


def test_cosine_lr_decay_follows_warm_up_then_half_cosine_to_zero(tmp_path, monkeypatch):
    rates = []

    def recording(self, optimizer):
        rates.append(optimizer.param_groups[0]["lr"])  # the rate this step takes

    monkeypatch.setattr(module_mod.FlowLightningModule, "on_before_optimizer_step", recording)
    overrides = [*TINY, "trainer.limit_train_batches=4", "trainer.max_epochs=2", "~logger", "test=false",
                 "optim.warmup_iters=2", "optim.lr_decay=cosine", "optim.optimizer.lr=0.01"]  # fmt: skip
    train(compose("train", overrides, tmp_path))
    # Steps 0..7: a warm-up of 2, then 6 decaying from the full rate towards 0 at the run's end.
    expected = [0.005, 0.01] + [0.01 * 0.5 * (1 + math.cos(math.pi * p / 6)) for p in range(6)]
    assert rates == pytest.approx(expected)


@pytest.mark.parametrize("decay", ["linear", "Cosine"])
def test_lr_decay_must_be_a_known_schedule(decay):
    with pytest.raises(ValueError, match="optim.lr_decay must be one of"):
        FlowLightningModule({"_target_": "iresnet.models.ToyFlow"}, lr_decay=decay)


def test_evaluation_runs_in_full_float32_under_mixed_precision():
    """Validation and test steps leave autocast (trainer.precision=bf16-mixed) and TF32 off: the same
    scores as a float32 evaluation, to the bit."""
    torch.manual_seed(0)
    module = FlowLightningModule({"_target_": "iresnet.models.ToyFlow", "hidden": 32}, n_bits=None, recon_batch=0)
    module.prepare_eval_model()
    batch = (torch.randn(64, 2), torch.zeros(64, dtype=torch.long))

    def scores() -> torch.Tensor:
        torch.manual_seed(1)
        module._eval_step(batch, 1, "val")
        return module._val_scores.pop()

    plain = scores()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = scores()
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0, atol=0)
