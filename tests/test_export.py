"""``torch.export`` of the models: the forward, the fixed-iteration solvers, the inverse, and
``iresnet-export``, each against eager."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from iresnet.cli.export import export
from iresnet.inverse import AndersonInverse, FixedPointInverse
from iresnet.logdet import PowerSeriesLogDet, RouletteLogDet
from iresnet.models import ResidualFlow, ToyFlow, export_model

from test_logdet_nets import contractive_mlp

SOLVERS = [FixedPointInverse, AndersonInverse]


class Solve(nn.Module):
    def __init__(self, net: nn.Module, solver) -> None:
        super().__init__()
        self.net, self.solver = net, solver

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.solver(self.net, y)[0]


class CountingNet(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


@pytest.mark.parametrize("solver_cls", SOLVERS)
def test_fixed_iteration_solver_takes_exactly_max_iter_steps(solver_cls):
    net = CountingNet(contractive_mlp(3, 0.99))
    y = torch.randn(5, 3)
    x, stats = solver_cls(max_iter=4, atol=0, rtol=0)(net, y)  # far from converged, and no error
    assert net.calls == 4 and stats.iterations == 4 and math.isnan(stats.residual)
    if solver_cls is FixedPointInverse:
        expected = y
        for _ in range(4):
            expected = y - net.net(expected)
        torch.testing.assert_close(x, expected)


@pytest.mark.parametrize("solver_cls", SOLVERS)
def test_fixed_iteration_solver_exports(solver_cls):
    torch.manual_seed(0)
    net = contractive_mlp(3, 0.5)
    y = torch.randn(5, 3)
    program = torch.export.export(Solve(net, solver_cls(max_iter=30, atol=0, rtol=0)), (y,))
    x = program.module()(y)
    torch.testing.assert_close(x + net(x), y, atol=1e-5, rtol=0)


def toy(**kwargs) -> ToyFlow:
    torch.manual_seed(0)
    return ToyFlow(n_blocks=2, hidden=16, hidden_layers=1, activation="elu", **kwargs).eval()


def test_toy_forward_exports_and_equals_eager():
    model = toy()  # exact log-dets
    x = torch.randn(8, 2)
    z, logdet = torch.export.export(model, (x,)).module()(x)
    z_eager, logdet_eager = model(x)
    torch.testing.assert_close(z, z_eager, atol=1e-5, rtol=0)
    torch.testing.assert_close(logdet, logdet_eager, atol=1e-5, rtol=0)


def test_toy_exported_inverse_round_trips(tmp_path):
    model = toy(inverse=FixedPointInverse(max_iter=40, atol=0, rtol=0))
    x = torch.randn(8, 2)
    z, _ = model(x)
    program = export_model(model, "sample", z)
    torch.export.save(program, tmp_path / "sample.pt2")
    loaded = torch.export.load(tmp_path / "sample.pt2").module()
    assert (loaded(z) - x).abs().max() < 1e-4


def test_export_refuses_a_drawn_number_of_terms_or_a_stopping_rule():
    with pytest.raises(ValueError, match="roulette.*PowerSeriesLogDet"):
        export_model(toy(logdet=RouletteLogDet()), "log_prob", torch.randn(4, 2))
    with pytest.raises(ValueError, match="atol=0, rtol=0"):
        export_model(toy(), "sample", torch.randn(4, 2))


def tiny_image_flow(labels: torch.Tensor | None = None, **kwargs) -> tuple[ResidualFlow, torch.Tensor]:
    """A small image flow in eval, ActNorm initialized on 4 images (with ``labels`` if conditional)."""
    torch.manual_seed(0)
    model = ResidualFlow(input_shape=(1, 8, 8), n_blocks=(1, 1), hidden_channels=8, fc_blocks=1, fc_hidden=8,
                         coeff=0.9, **kwargs)  # fmt: skip
    x = torch.rand(4, 1, 8, 8)
    model.train()
    model.log_prob(x, labels)  # initializes ActNorm
    return model.eval(), x


@pytest.mark.slow
def test_image_flow_forward_and_inverse_export():
    model, x = tiny_image_flow(logdet=PowerSeriesLogDet(n_terms=3), inverse=FixedPointInverse(max_iter=60, atol=0, rtol=0))
    program = torch.export.export(model, (x,)).module()
    torch.manual_seed(1)
    z, logdet = program(x)
    torch.manual_seed(1)  # the program draws the same probes from the global generator
    z_eager, logdet_eager = model(x)
    torch.testing.assert_close(z, z_eager, atol=1e-5, rtol=0)
    torch.testing.assert_close(logdet, logdet_eager, atol=1e-5, rtol=1e-5)
    decoded = export_model(model, "sample", z_eager).module()(z_eager)
    assert (decoded - x).abs().max() < 1e-3


@pytest.mark.slow
def test_export_command_writes_a_program_of_the_checkpoint(compose_config, tmp_path):
    """iresnet-export of a toy checkpoint: log_prob with the exact log-det, and sample."""
    from iresnet.cli.train import train

    train(compose_config("train", ["experiment=toy2d", "model.n_blocks=2", "model.hidden=16", "model.hidden_layers=1", "model.activation=elu",
                                   "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                                   "trainer.limit_test_batches=1", "callbacks.sample_grid.n=16"]))  # fmt: skip
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = tmp_path / "lp.pt2"
    export(compose_config("export", [f"ckpt_path={ckpt}", "what=log_prob", "batch_size=4", f"out={out}",
                                     "logdet={_target_:iresnet.logdet.ExactLogDet}"]))  # fmt: skip
    from iresnet.training.checkpoint import load_module

    model = load_module(ckpt).prepare_eval_model()
    x = torch.randn(4, 2)
    torch.testing.assert_close(torch.export.load(out).module()(x), model.log_prob(x), atol=1e-5, rtol=1e-5)
    out = tmp_path / "sample.pt2"
    export(compose_config("export", [f"ckpt_path={ckpt}", "what=sample", "batch_size=4", "max_iter=60", f"out={out}"]))
    z, _ = model(x)
    assert (torch.export.load(out).module()(z) - x).abs().max() < 1e-4
    with pytest.raises(FileExistsError, match="overwrite=true"):
        export(compose_config("export", [f"ckpt_path={ckpt}", "what=sample", f"out={out}"]))


def load_program(path, fmt: str):
    """The written program as a function of tensors: ``torch.export.load`` (pt2), or an
    onnxruntime session on the CPU (onnx)."""
    if fmt == "pt2":
        return torch.export.load(path).module()
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda *inputs: torch.from_numpy(session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0])


def saved_images(tmp_path) -> list[str]:
    images = tmp_path / "images.pt"
    torch.save((torch.rand(16, 1, 28, 28) * 255).to(torch.uint8), images)
    return [f"images={images}"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_exported_log_prob_reproduces_eval(compose_config, tmp_path, tiny_ckpt, fmt):
    """An image checkpoint's exported log_prob gives iresnet-eval's bits/dim on the same images (the
    same series estimator; its probes are the only difference), as a torch.export program and as
    ONNX run by onnxruntime."""
    from iresnet.cli.eval import draws_of, evaluate, images_split
    from iresnet.metrics import bits_per_dim
    from iresnet.training.checkpoint import load_module

    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    module = load_module(tiny_ckpt)
    series = "{_target_:iresnet.logdet.PowerSeriesLogDet,n_terms:10,n_probes:4}"
    common = [f"ckpt_path={tiny_ckpt}", *saved_images(tmp_path)]
    eval_cfg = compose_config("eval", [*common, "batch_size=16", f"out={tmp_path / 'eval.json'}", f"logdet={series}"])
    result = evaluate(eval_cfg)
    export(compose_config("export", [f"ckpt_path={tiny_ckpt}", "batch_size=16", f"logdet={series}", f"format={fmt}",
                                     f"out={tmp_path / f'lp.{fmt}'}"]))  # fmt: skip
    log_prob = load_program(tmp_path / f"lp.{fmt}", fmt)
    ((x, _),) = list(draws_of(images_split(eval_cfg, module), module.hparams.n_bits, eval_cfg.seed, 16)(0))
    bpd = bits_per_dim(log_prob(x), x[0].numel(), n_bins=2**module.hparams.n_bits)
    assert float(bpd.mean()) == pytest.approx(result["mean"], abs=result["se"])


@pytest.mark.slow
def test_exported_sample_reproduces_invert(compose_config, tmp_path, tiny_ckpt):
    """The exported inverse decodes an image checkpoint's codes to iresnet-invert's accuracy (ONNX's
    inverse: tests/test_onnx.py, on a small image flow)."""
    from iresnet.cli.invert import invert
    from iresnet.training.checkpoint import load_module

    common = [f"ckpt_path={tiny_ckpt}", *saved_images(tmp_path)]
    error = invert(compose_config("invert", [*common, "n=16", f"out={tmp_path / 'recon.png'}"]))
    export(compose_config("export", [f"ckpt_path={tiny_ckpt}", "what=sample", "batch_size=16", "max_iter=30",
                                     f"out={tmp_path / 'sample.pt2'}"]))  # fmt: skip
    model = load_module(tiny_ckpt).prepare_eval_model()
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        z, _ = model(x)
    decoded = load_program(tmp_path / "sample.pt2", "pt2")(z)
    assert error < 1e-3 and (decoded - x).abs().max() < 1e-3
