"""Mistakes a user makes with a FlowModel, each refused once at its door with a message naming the
problem and the fix; a residual branch without spectral norm warns at construction."""

import re

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

from iresnet.flows import FlowSequential, ResidualBlock
from iresnet.lipschitz import spectral_norm
from iresnet.models import FlowModel, ResidualFlow, StandardNormal, ToyFlow


@pytest.fixture(scope="module")
def toy() -> ToyFlow:
    torch.manual_seed(0)
    return ToyFlow(n_blocks=1, hidden=8).eval()


@pytest.fixture(scope="module")
def conditional_toy() -> ToyFlow:
    torch.manual_seed(0)
    return ToyFlow(n_blocks=1, hidden=8, context_features=3).eval()


@pytest.fixture(scope="module")
def digits() -> ResidualFlow:
    torch.manual_seed(0)
    return ResidualFlow(input_shape=(1, 4, 4), n_blocks=(1,), hidden_channels=4, fc_blocks=0, num_classes=10).eval()


def _prior_of_wrong_dimension():
    return FlowModel(FlowSequential(), StandardNormal(3), input_shape=(2,))


# (mistake, call, exception, the problem, the fix): every message must match both.
MISTAKES = [
    ("x of the wrong shape", lambda m: m["toy"].log_prob(torch.randn(8, 3)), ValueError,
     r"takes x of shape \(B, 2\), got \(8, 3\)", r"reshape the data .*input_shape=\[2\]"),
    ("images of the wrong size", lambda m: m["digits"].log_prob(torch.rand(8, 1, 5, 5), torch.zeros(8, dtype=torch.long)),
     ValueError, r"takes x of shape \(B, 1, 4, 4\), got \(8, 1, 5, 5\)", r"input_shape=\[1, 4, 4\]"),
    ("x not a tensor", lambda m: m["toy"].log_prob([[0.0, 1.0]]), TypeError,
     r"x must be a torch.Tensor of shape \(B, 2\), got list", r"torch.as_tensor\(x\)"),
    ("x of integer dtype", lambda m: m["toy"].log_prob(torch.ones(8, 2, dtype=torch.uint8)), TypeError,
     r"x has dtype torch.uint8", r"x.to\(torch.float32\)"),
    ("x on another device", lambda m: m["toy"].log_prob(torch.empty(8, 2, device="meta")), ValueError,
     r"x is on meta but the model is on cpu", r"x.to\('cpu'\) or model.to\('meta'\)"),
    ("codes of the wrong shape", lambda m: m["toy"].inverse(torch.randn(8, 3)), ValueError,
     r"takes z of shape \(B, 2\), got \(8, 3\)", r"prior's event shape, as model.sample draws them"),
    ("a context given to an unconditional model", lambda m: m["toy"].log_prob(torch.randn(8, 2), torch.randn(8, 3)),
     ValueError, r"unconditional and takes no context, got one \(\(8, 3\)\)", r"drop the context argument"),
    ("a conditional model without a context", lambda m: m["conditional_toy"].log_prob(torch.randn(8, 2)), ValueError,
     r"this model is conditional", r"pass the features as the context \(features, floats of shape \(B, 3\)\)"),
    ("sampling a conditional model without a context", lambda m: m["conditional_toy"].sample(4), ValueError,
     r"this model is conditional", r"pass the features as the context \(features, floats of shape \(B, 3\)\)"),
    ("a context of the wrong width", lambda m: m["conditional_toy"].log_prob(torch.randn(8, 2), torch.randn(8, 4)),
     ValueError, r"got shape \(8, 4\)", r"give 3 features per sample"),
    ("a context of integer dtype", lambda m: m["conditional_toy"].log_prob(torch.randn(8, 2), torch.ones(8, 3, dtype=torch.long)),
     TypeError, r"context has dtype torch.int64 but the model computes in torch.float32", r"context.to\(torch.float32\)"),
    ("a context of another float dtype", lambda m: m["conditional_toy"].log_prob(torch.randn(8, 2), torch.randn(8, 3).double()),
     TypeError, r"context has dtype torch.float64", r"context.to\(torch.float32\)"),
    ("a context with too few rows", lambda m: m["conditional_toy"].log_prob(torch.randn(8, 2), torch.randn(4, 3)),
     ValueError, r"context has shape \(4, 3\) for a batch of 8", r"one row per sample"),
    ("a context on another device", lambda m: m["conditional_toy"].log_prob(torch.randn(8, 2), torch.empty(8, 3, device="meta")),
     ValueError, r"context is on meta but the model is on cpu", r"context.to\('cpu'\)"),
    ("class labels as floats", lambda m: m["digits"].log_prob(torch.rand(8, 1, 4, 4), torch.zeros(8)), ValueError,
     r"class labels, integers of shape \(B,\) in \[0, 9\]; got torch.float32", r"labels.long\(\)"),
    ("class labels one-hot", lambda m: m["digits"].log_prob(torch.rand(8, 1, 4, 4), torch.zeros(8, 10, dtype=torch.long)),
     ValueError, r"got torch.int64 of shape \(8, 10\)", r"\(B,\) integer tensor"),
    ("a class label out of range", lambda m: m["digits"].log_prob(torch.rand(8, 1, 4, 4), torch.full((8,), 10)),
     ValueError, r"class labels must lie in \[0, 9\], got values in \[10, 10\]", r"built for 10 classes"),
    ("a class-conditional model without labels", lambda m: m["digits"].sample(4), ValueError,
     r"this model is conditional", r"pass the labels as the context \(class labels, integers of shape \(B,\) in \[0, 9\]\)"),
    ("a prior of the wrong dimension", lambda m: _prior_of_wrong_dimension(), ValueError,
     r"event shape \(3,\) holds 3 values, but the flow maps x of shape \(2,\) to codes of 2", r"build the prior for dim=2"),
    ("a per-dimension prior not wrapped in Independent",
     lambda m: FlowModel(FlowSequential(), Normal(torch.zeros(2), torch.ones(2)), input_shape=(2,)), ValueError,
     r"event shape \(\) holds 1 values", r"wrapped in torch.distributions.Independent"),
    ("a preset's prior of the wrong dimension", lambda m: ToyFlow(n_blocks=1, hidden=8, prior=lambda d: StandardNormal(d + 1)),
     ValueError, r"event shape \(3,\) holds 3 values", r"build the prior for dim=2"),
]


@pytest.mark.parametrize(("call", "error", "problem", "fix"), [pytest.param(*m[1:], id=m[0]) for m in MISTAKES])
def test_each_mistake_is_refused_naming_the_problem_and_the_fix(toy, conditional_toy, digits, call, error, problem, fix):
    with pytest.raises(error) as caught:
        call({"toy": toy, "conditional_toy": conditional_toy, "digits": digits})
    message = str(caught.value)
    assert re.search(problem, message), message
    assert re.search(fix, message), message


def test_what_the_door_lets_in_still_works(toy, conditional_toy, digits):
    assert toy.log_prob(torch.randn(8, 2)).shape == (8,)
    assert conditional_toy.log_prob(torch.randn(8, 2), torch.randn(8, 3)).shape == (8,)
    labels = torch.arange(8, dtype=torch.int32)  # any integer dtype reads an embedding
    assert digits.log_prob(torch.rand(8, 1, 4, 4), labels).shape == (8,)
    model = FlowModel(FlowSequential(), Independent(Normal(torch.zeros(2), torch.ones(2)), 1))  # shape unknown: any
    assert model.log_prob(torch.randn(5, 2)).shape == (5,)


def test_a_branch_layer_without_spectral_norm_warns_at_construction():
    with pytest.warns(UserWarning, match=r"layer\(s\) 'net.2' have no spectral norm.*spectral_norm\(layer, coeff=0.97\)"):
        ResidualBlock(nn.Sequential(spectral_norm(nn.Linear(2, 8)), nn.ELU(), nn.Linear(8, 2)))
    with pytest.warns(UserWarning, match=r"'net' have no spectral norm"):
        ResidualBlock(nn.Conv2d(2, 2, 3, padding=1))


def test_normalized_branches_and_presets_build_quietly(recwarn):
    ResidualBlock(nn.Sequential(spectral_norm(nn.Linear(2, 8)), nn.ELU(), spectral_norm(nn.Linear(8, 2))))
    ToyFlow(n_blocks=1, hidden=8, context_features=3)  # the context MLP is not on the path of x
    ResidualFlow(input_shape=(1, 4, 4), n_blocks=(1,), hidden_channels=4, fc_blocks=1, num_classes=10)
    ResidualFlow(input_shape=(1, 4, 4), n_blocks=(1,), branch="densenet", dense_growth=4, fc_blocks=1)
    assert not [w for w in recwarn if "no spectral norm" in str(w.message)]
