"""``torch.compile`` of the models: compiled equals eager, the roulette draw is not baked in, and
compiled training steps give finite (for exact log-dets: equal) gradients.

The default tier traces with Dynamo (``backend="eager"``, ``"aot_eager"`` for gradients), which
checks the capture itself in seconds; the ``slow`` tier runs Inductor.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from iresnet.logdet import ExactLogDet, PowerSeriesLogDet, RouletteLogDet
from iresnet.models import ResidualFlow, ToyFlow

PRESETS = {
    "resflow": {},
    "idensenet": dict(branch="densenet", dense_depth=2, dense_growth=8, activation="clipswish"),
    "class-conditional": dict(num_classes=3),
    "hybrid": dict(num_classes=3, task="hybrid", classifier_hidden=8),
}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Every test compiles from scratch (no code cache or recompile count carried over)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def toy(logdet=None, seed: int = 0) -> ToyFlow:
    torch.manual_seed(seed)
    return ToyFlow(n_blocks=2, hidden=16, hidden_layers=1, activation="elu", logdet=logdet)


def tiny_residual_flow(preset: str, logdet=None) -> tuple[ResidualFlow, torch.Tensor, torch.Tensor | None]:
    """A preset's layout at 1x8x8 with ActNorm initialized, in eval mode; its images and context."""
    torch.manual_seed(0)
    model = ResidualFlow(
        input_shape=(1, 8, 8), n_blocks=(1, 1), hidden_channels=8, fc_blocks=1, fc_hidden=8, coeff=0.9,
        logdet=logdet, **PRESETS[preset],
    )  # fmt: skip
    x = torch.rand(4, 1, 8, 8)
    context = torch.tensor([0, 1, 2, 0]) if preset == "class-conditional" else None
    model.train()
    model.log_prob(x, context)
    return model.eval(), x, context


def seeded(fn, *args, seed: int = 1):
    torch.manual_seed(seed)
    return fn(*args)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_toy_log_prob_is_captured_in_one_graph():
    """Power series, fullgraph: no graph break, no data-dependent branch, the same values."""
    model = toy(PowerSeriesLogDet(n_terms=3)).eval()
    x = torch.randn(8, 2)
    compiled = torch.compile(model.log_prob, backend="eager", fullgraph=True)
    torch.testing.assert_close(seeded(compiled, x), seeded(model.log_prob, x))


@pytest.mark.slow
def test_toy_log_prob_compiled_by_inductor_equals_eager():
    model = toy(PowerSeriesLogDet(n_terms=3)).eval()
    x = torch.randn(8, 2)
    with torch._inductor.config.patch(fallback_random=True):  # the probes of eager's generator
        compiled = seeded(torch.compile(model.log_prob, fullgraph=True), x)
    assert relative_error(compiled, seeded(model.log_prob, x)) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_residual_flow_log_prob_compiles_fullgraph_and_equals_eager(preset):
    model, x, context = tiny_residual_flow(preset, PowerSeriesLogDet(n_terms=3))
    with torch._inductor.config.patch(fallback_random=True):
        compiled = seeded(torch.compile(model.log_prob, fullgraph=True), x, context)
    assert relative_error(compiled, seeded(model.log_prob, x, context)) < 1e-4


def roulette_draws(log_prob, x: torch.Tensor, context, n: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([log_prob(x, context)[0] for _ in range(n)])


def assert_same_distribution(compiled: torch.Tensor, eager: torch.Tensor) -> None:
    """Means within four standard errors, and the compiled draws vary."""
    se = (compiled.var() / len(compiled) + eager.var() / len(eager)).sqrt()
    assert abs(compiled.mean() - eager.mean()) < 4 * se
    assert compiled.std() > 0.2 * eager.std()


def test_conditional_model_compiles_without_warnings():
    """Which layers take the context is a constant of the graph, not a traced cache lookup."""
    model, x, context = tiny_residual_flow("class-conditional", PowerSeriesLogDet(n_terms=2))
    compiled = torch.compile(model.log_prob, backend="eager", fullgraph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled(x, context)


def test_roulette_draws_are_not_baked_into_the_graph():
    estimator = RouletteLogDet(n_exact_terms=1, eval_exact_terms=1)
    model = toy(estimator).eval()
    x = torch.randn(4, 2)
    torch.manual_seed(2)
    compiled = torch.compile(model.log_prob, backend="eager")
    draws = []
    values = []
    for _ in range(60):
        values.append(roulette_draws(compiled, x, None, 1))
        draws.append(estimator.last_draw)
    assert len(set(draws)) >= 3  # the number of terms is drawn at every call
    assert_same_distribution(torch.cat(values), roulette_draws(model.log_prob, x, None, 60))


@pytest.mark.slow
def test_residual_flow_roulette_compiles_and_draws_as_eager():
    """The preset's own estimator under Inductor: graph breaks where N is drawn, same distribution."""
    model, x, context = tiny_residual_flow("resflow", RouletteLogDet(eval_exact_terms=2))
    torch.manual_seed(3)
    compiled = roulette_draws(torch.compile(model.log_prob), x, context, 40)
    assert_same_distribution(compiled, roulette_draws(model.log_prob, x, context, 40))


def training_step(model):
    def step(x, context=None):
        return -model.log_prob(x, context).mean()

    return step


def gradients(model, step, x, context=None) -> list[torch.Tensor]:
    model.zero_grad()
    step(x, context).backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_exact_logdet_compiled_gradients_equal_eager():
    """A training-mode step (spectral norm's power iteration included) from the same state, captured
    in one graph: no host synchronization, no graph break."""
    model = toy(ExactLogDet()).train()
    twin = copy.deepcopy(model)
    x = torch.randn(8, 2)
    compiled = gradients(model, torch.compile(training_step(model), backend="aot_eager", fullgraph=True), x)
    eager = gradients(twin, training_step(twin), x)
    assert len(compiled) == len(eager) > 0
    assert max(relative_error(c, e) for c, e in zip(compiled, eager)) < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("logdet", [ExactLogDet(), PowerSeriesLogDet(n_terms=3)], ids=["exact", "series"])
def test_image_flow_compiled_gradients_equal_eager_in_float64(logdet):
    """LipSwish and ops.Conv2d inside a traced estimator: in float64 the compiled step's gradients are
    eager's (float32 leaves a few percent on the near-zero gradients of data-initialized ActNorm)."""
    model, x, _ = tiny_residual_flow("resflow", logdet)
    model = model.double().train()
    twin, x = copy.deepcopy(model), x.double()
    compiled = seeded(gradients, model, torch.compile(training_step(model), backend="aot_eager"), x)
    eager = seeded(gradients, twin, training_step(twin), x)
    assert len(compiled) == len(eager) > 0
    assert max(relative_error(c, e) for c, e in zip(compiled, eager)) < 1e-8


@pytest.mark.slow
def test_exact_logdet_gradients_under_inductor_equal_eager():
    model = toy(ExactLogDet()).train()
    twin = copy.deepcopy(model)
    x = torch.randn(8, 2)
    compiled = gradients(model, torch.compile(training_step(model)), x)
    eager = gradients(twin, training_step(twin), x)
    assert max(relative_error(c, e) for c, e in zip(compiled, eager)) < 1e-3


def test_compiled_roulette_training_step_has_finite_gradients():
    """Roulette, Neumann gradient, memory-efficient backward (which runs outside the graph)."""
    model = toy(RouletteLogDet(memory_efficient=True, grad="neumann")).train()
    step = torch.compile(training_step(model), backend="aot_eager")
    for _ in range(3):
        grads = gradients(model, step, torch.randn(8, 2))
        assert grads and all(torch.isfinite(g).all() for g in grads)


def test_compiled_training_step_breaks_only_where_the_estimator_runs_eagerly():
    """No host synchronization or data-dependent branch in a step (those would break the graph
    too): the only breaks are the memory-efficient estimator's calls."""
    model, x, _ = tiny_residual_flow("resflow")
    model.train()
    explained = torch._dynamo.explain(training_step(model))(x)
    assert explained.break_reasons
    for reason in explained.break_reasons:
        assert "torch.compiler.disable" in reason.reason
        assert reason.user_stack[-1].filename.endswith("logdet/base.py")
        assert "_memory_efficient_call" in reason.user_stack[-1].line


def test_roulette_draws_do_not_recompile_a_training_step():
    """The number of terms varies from step to step; the compiled graphs do not."""
    model, x, _ = tiny_residual_flow("resflow")
    model.train()
    step = torch.compile(training_step(model), backend="aot_eager")
    frames, draws = [], set()
    for seed in range(10):
        torch.manual_seed(seed)
        step(x).backward()
        frames.append(torch._dynamo.utils.counters["frames"]["total"])
        draws.add(model.residual_blocks()[0].logdet.last_n_terms)
    assert len(draws) >= 3
    assert frames[-1] == frames[0]


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_residual_flow_compiled_training_step_has_finite_gradients(preset):
    model, x, context = tiny_residual_flow(preset)  # the preset's roulette, memory-efficient
    model.train()
    step = torch.compile(training_step(model))
    for _ in range(2):
        grads = gradients(model, step, x, context)
        assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
def test_train_and_eval_commands_compile(compose_config, tmp_path, capsys):
    from iresnet.cli.eval import evaluate
    from iresnet.cli.train import train

    overrides = ["experiment=toy2d", "model.n_blocks=2", "model.hidden=16", "model.hidden_layers=1", "model.activation=elu",
                 "trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
                 "trainer.limit_test_batches=1", "callbacks.sample_grid.n=16", "compile=true"]  # fmt: skip
    metrics = train(compose_config("train", overrides))
    assert math.isfinite(metrics["test/nll"]) and "compiled" in capsys.readouterr().out
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    compiled, eager = (
        evaluate(compose_config("eval", [f"ckpt_path={ckpt}", f"out={tmp_path / f'{c}.json'}", f"compile={c}"]))
        for c in ("true", "false")
    )
    assert compiled["mean"] == pytest.approx(eager["mean"], rel=1e-4)


def test_compile_mode_reaches_torch_compile(monkeypatch):
    """``compile_mode`` is passed to ``nn.Module.compile``; an unknown mode names the choices."""
    from iresnet.cli.common import COMPILE_MODES, compile_models

    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: seen.append(kwargs))
    compile_models(toy(), toy(seed=1), mode="reduce-overhead")
    assert seen == [{"mode": "reduce-overhead"}] * 2
    with pytest.raises(ValueError, match="compile_mode must be one of default, reduce-overhead"):
        compile_models(toy(), mode="fast")
    assert "max-autotune" in COMPILE_MODES


def test_train_command_refuses_an_unknown_compile_mode(compose_config):
    from iresnet.cli.train import train

    cfg = compose_config("train", ["experiment=toy2d", "compile=true", "compile_mode=fast"])
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        train(cfg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_training_step_does_not_synchronize_on_cuda():
    """Once its graphs are compiled, a step (roulette, Neumann gradient, memory-efficient backward)
    makes no host synchronization: CUDA's sync debug mode turns one into an error."""
    model, x, _ = tiny_residual_flow("resflow")
    model, x = model.cuda().train(), x.cuda()
    step = torch.compile(training_step(model))
    for _ in range(3):
        step(x).backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(x).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
