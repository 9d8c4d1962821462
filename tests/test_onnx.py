"""ONNX of the models (``iresnet.models.export_onnx``, ``iresnet-export format=onnx``) run by
onnxruntime on the CPU, against eager. The command on a trained checkpoint:
``test_export.py::test_exported_programs_reproduce_eval_and_invert[onnx]``."""

from __future__ import annotations

import math

import pytest
import torch

from iresnet.cli.common import user_error_in
from iresnet.cli.export import export
from iresnet.inverse import FixedPointInverse
from iresnet.logdet import PowerSeriesLogDet
from iresnet.models import export_onnx
from iresnet.models.onnx import OnnxNotInstalledError

from test_export import load_program, tiny_image_flow, toy


@pytest.fixture
def loaded(tmp_path):
    """``loaded(onnx_program)``: the program saved, as a function of tensors that onnxruntime runs."""
    pytest.importorskip("onnxruntime")

    def load(program):
        path = tmp_path / f"model{len(list(tmp_path.glob('*.onnx')))}.onnx"
        program.save(path)
        return load_program(path, "onnx")

    return load


@pytest.mark.slow
def test_toy_onnx_log_prob_and_inverse(loaded):
    model = toy(inverse=FixedPointInverse(max_iter=40, atol=0, rtol=0))  # exact log-dets
    x = torch.randn(8, 2)
    with torch.no_grad():
        log_prob, (z, _) = model.log_prob(x), model(x)
    torch.testing.assert_close(loaded(export_onnx(model, "log_prob", x))(x), log_prob, atol=1e-5, rtol=1e-5)
    assert (loaded(export_onnx(model, "sample", z))(z) - x).abs().max() < 1e-4


def fixed_probes(like: torch.Tensor, kind: str, n_probes: int) -> torch.Tensor:
    """Probes computed from their positions (traced as ops, so ONNX and eager share them)."""
    n = n_probes * like.numel()
    return torch.arange(n, dtype=like.dtype).mul(0.7).cos().mul(math.sqrt(2)).view(n_probes, *like.shape)


@pytest.mark.slow
@pytest.mark.parametrize("labels", [None, torch.tensor([0, 1, 2, 0])], ids=["unconditional", "class-conditional"])
def test_image_onnx_log_prob_equals_eager_with_the_same_probes(loaded, monkeypatch, labels):
    """The power series with LipSwish (the default) through convolutions, squeezes and the
    fully connected block: with the same probes, ONNX's log p(x) is eager's (the labels are the
    second input of a class-conditional model's file)."""
    monkeypatch.setattr("iresnet.logdet.base.sample_probe", fixed_probes)
    conditional = {} if labels is None else {"labels": labels, "num_classes": 3}
    model, x = tiny_image_flow(logdet=PowerSeriesLogDet(n_terms=3), **conditional)
    inputs = (x,) if labels is None else (x, labels)
    with torch.no_grad():
        expected = model.log_prob(*inputs)
    torch.testing.assert_close(loaded(export_onnx(model, "log_prob", *inputs))(*inputs), expected, atol=1e-4, rtol=1e-5)


@pytest.mark.slow
def test_image_onnx_draws_its_probes_and_inverts(loaded):
    """ONNX draws fresh Gaussian probes at every run: its estimates vary, and their mean is eager's
    within a few standard errors. Its fixed-iteration inverse round-trips within 1e-3."""
    model, x = tiny_image_flow(logdet=PowerSeriesLogDet(n_terms=3), inverse=FixedPointInverse(max_iter=60, atol=0, rtol=0))
    log_prob, n = loaded(export_onnx(model, "log_prob", x)), 30
    onnx_draws = torch.stack([log_prob(x) for _ in range(n)])
    torch.manual_seed(1)
    with torch.no_grad():
        eager_draws = torch.stack([model.log_prob(x) for _ in range(n)])
    assert (onnx_draws.std(0) > 0).all()
    se = ((onnx_draws.var(0) + eager_draws.var(0)) / n).sqrt()
    assert ((onnx_draws.mean(0) - eager_draws.mean(0)).abs() < 4 * se).all()
    with torch.no_grad():
        z, _ = model(x)
    assert (loaded(export_onnx(model, "sample", z))(z) - x).abs().max() < 1e-3


def test_export_command_names_the_formats_and_the_extra(compose_config, tmp_path, monkeypatch):
    args = [f"ckpt_path={tmp_path / 'none.ckpt'}"]
    with pytest.raises(ValueError, match=r"format must be one of \('pt2', 'onnx'\), got 'tflite'"):
        export(compose_config("export", [*args, "format=tflite"]))
    cfg = compose_config("export", [*args, "format=onnx"])
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *rest: None)
    with pytest.raises(OnnxNotInstalledError, match=r'onnx, onnxscript, not installed.*pip install "iresnet\[onnx\]"') as err:
        export(cfg)
    assert user_error_in(err.value) is err.value  # the command's one error line
