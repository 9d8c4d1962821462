"""inverse, sample and reconstruct invert the function forward computed, in training mode as in
eval mode, and change nothing: not the spectral-norm vectors and estimates, not ActNorm's
initialization, not the global random stream."""

import pytest
import torch

from iresnet.models import ResidualFlow, ToyFlow


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def _assert_unchanged(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    now = model.state_dict()
    assert now.keys() == state.keys()
    changed = [key for key, value in now.items() if not torch.equal(value, state[key])]
    assert not changed, f"{what} changed {changed}"


@pytest.fixture(scope="module")
def trained_toy() -> ToyFlow:
    """A ToyFlow with ActNorm after 30 Adam steps, left in training mode: its spectral-norm
    estimates trail the weights, as they do during training."""
    torch.manual_seed(0)
    model = ToyFlow(n_blocks=3, hidden=32, coeff=0.9, actnorm=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        (-model.log_prob(torch.randn(64, 2) * 2)).mean().backward()
        optimizer.step()
    return model


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_inverse_sample_and_reconstruct_keep_the_model_and_the_random_stream(trained_toy, train):
    model = trained_toy.train(train)
    x = torch.randn(64, 2) * 2
    with torch.no_grad():
        z, _ = model(x)  # in training mode this forward takes its power-iteration step
    state, rng = _state(model), torch.get_rng_state()

    x_back = model.inverse(z)
    assert (x_back - x).abs().max() < 1e-4
    _assert_unchanged(model, state, "inverse")
    assert (model.reconstruct(x) - x).abs().max() < 1e-4
    _assert_unchanged(model, state, "reconstruct")
    assert torch.equal(torch.get_rng_state(), rng)
    same = model.sample(16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), rng)  # a generator's draw leaves the global stream alone
    assert torch.equal(model.sample(16, generator=torch.Generator().manual_seed(3)), same)
    assert not torch.equal(model.sample(16), model.sample(16))  # without one, successive draws differ
    _assert_unchanged(model, state, "sample")
    assert model.training == train and all(m.training == train for m in model.modules())


def test_a_conv_flow_round_trips_in_training_mode():
    torch.manual_seed(0)
    model = ResidualFlow(input_shape=(1, 4, 4), n_blocks=(2,), hidden_channels=8, fc_blocks=0, channels_last=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        model.log_prob(torch.rand(8, 1, 4, 4)).mean().neg().backward()
        optimizer.step()
    x = torch.rand(8, 1, 4, 4)
    with torch.no_grad():
        z, _ = model(x)
    state = _state(model)
    assert (model.inverse(z) - x).abs().max() < 1e-4
    _assert_unchanged(model, state, "inverse")
    model.sample(4)
    _assert_unchanged(model, state, "sample")


def test_reconstruct_does_not_initialize_actnorm():
    torch.manual_seed(0)
    model = ToyFlow(n_blocks=1, hidden=8, actnorm=True)  # training mode, never run
    state = _state(model)
    with pytest.raises(RuntimeError, match="ActNorm.inverse called before initialization"):
        model.reconstruct(torch.randn(4, 2))
    _assert_unchanged(model, state, "reconstruct")
    assert model.training


class _Recording(torch.nn.Module):
    """A conditional branch ``g(x, c) = 0.5 tanh(x) + 0.1 c`` that records the batch sizes it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return 0.5 * torch.tanh(x) + 0.1 * context.view(-1, 1, 1, 1)


def test_inverse_evaluates_the_branch_on_the_estimators_chunks_with_their_context_rows():
    """The solver sees the whole batch; the branch at most the estimator's chunk of it, with
    the context rows of those samples: the same solution and stats as without chunks."""
    from iresnet.flows import ResidualBlock
    from iresnet.logdet import RouletteLogDet

    torch.manual_seed(0)
    y, context = torch.randn(7, 2, 4, 4), torch.randn(7)
    results = []
    for chunk_size in (None, 3):
        branch = _Recording()
        block = ResidualBlock(branch, logdet=RouletteLogDet(chunk_size=chunk_size))
        x = block.inverse(y, context)
        results.append((x, block.last_inverse_stats, branch.sizes))
    (x_whole, stats_whole, sizes_whole), (x_chunked, stats_chunked, sizes_chunked) = results
    assert max(sizes_whole) == 7 and max(sizes_chunked) == 3
    torch.testing.assert_close(x_chunked, x_whole, atol=0, rtol=0)
    assert stats_chunked == stats_whole
    torch.testing.assert_close(x_chunked + 0.5 * torch.tanh(x_chunked) + 0.1 * context.view(-1, 1, 1, 1), y)
