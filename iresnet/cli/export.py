"""``iresnet-export ckpt_path=... what=log_prob|sample out=model.pt2``: a checkpoint as a torch.export
``ExportedProgram`` (load it with ``torch.export.load(out).module()``), or with ``format=onnx`` as
the ONNX model of the same program (run it with onnxruntime)."""

from __future__ import annotations

import copy
import math

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from iresnet.cli.common import hydra_command, writable_output
from iresnet.inverse import InverseSolver
from iresnet.logdet import PowerSeriesLogDet
from iresnet.models import FlowModel
from iresnet.models.export import WHATS, export_model
from iresnet.models.onnx import input_names, onnx_program, require_onnx
from iresnet.training.checkpoint import load_module

FORMATS = ("pt2", "onnx")


def example_inputs(model: FlowModel, what: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs of the program's shape: images in [0, 1] (or points) for ``log_prob``, codes for
    ``sample``; labels for a class-conditional model."""
    shape = tuple(getattr(model, "input_shape", None) or (model.dim,))
    example = torch.rand(batch_size, *shape) if what == "log_prob" else torch.randn(batch_size, math.prod(shape))
    context = torch.zeros(batch_size, dtype=torch.long) if getattr(model, "class_conditional", False) else None
    return example, context


def fixed_iterations(solver: InverseSolver, max_iter: int) -> InverseSolver:
    """The same kind of solver, with its settings, taking exactly ``max_iter`` steps."""
    fixed = copy.copy(solver)
    fixed.atol, fixed.rtol, fixed.max_iter = 0.0, 0.0, max_iter
    return fixed


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def export(cfg: DictConfig) -> torch.export.ExportedProgram:
    """Exports the checkpoint's weight average (spectral norms brought to tolerance) and writes it."""
    if cfg.what not in WHATS:
        raise ValueError(f"what must be one of {WHATS}, got {cfg.what!r}.")
    if cfg.format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {cfg.format!r}.")
    if cfg.format == "onnx":
        require_onnx()
    batch_size = positive_int("batch_size", cfg.batch_size)
    if cfg.what == "log_prob":
        estimator = instantiate(cfg.logdet) if cfg.get("logdet") else PowerSeriesLogDet(positive_int("n_terms", cfg.n_terms))
    else:
        max_iter = positive_int("max_iter", cfg.max_iter)
    out = writable_output(cfg.out, cfg.overwrite)
    model = load_module(cfg.ckpt_path).prepare_eval_model()
    if cfg.what == "log_prob":
        model.set_logdet_estimator(estimator)
    else:
        for block in model.residual_blocks():
            block.solver = fixed_iterations(block.solver, max_iter)
    example, context = example_inputs(model, cfg.what, batch_size)
    program = export_model(model, cfg.what, example, context)
    names = input_names(program, cfg.what)
    if cfg.format == "onnx":
        onnx_program(program, cfg.what).save(out)
        feeds = ", ".join(f"'{name}': ..." for name in names)
        run = f"onnxruntime.InferenceSession(path).run(None, {{{feeds}}})"
    else:
        torch.export.save(program, out)
        run = f"torch.export.load(path).module()({', '.join(names)})"
    print(f"wrote {out}: {cfg.what} of batches of {batch_size}; run {run}")
    return program


main = hydra_command(export, "export")


if __name__ == "__main__":
    main()
