"""Bounds on the discrete log-likelihood against brute force, on 2-D data of 4 levels per value:
the importance-weighted bound converges to log P(x) as K grows, and the variational bound never
exceeds it (in bits/dim: never falls below it)."""

import math

import pytest
import torch

from iresnet.flows import FlowSequential, LogitTransform, ResidualBlock
from iresnet.lipschitz import update_spectral_norms
from iresnet.logdet import ExactLogDet
from iresnet.metrics import bits_per_dim
from iresnet.models import FlowModel, StandardNormal, VariationalDequantizer
from iresnet.models.blocks import fc_branch
from iresnet.training.likelihood import importance_weighted_bpd, log_mean_exp

N_BINS = 4
POINTS = torch.tensor([[0, 0], [1, 3], [2, 1], [3, 3]])  # discrete values in {0, .., 3}^2


def _model(variational: bool) -> FlowModel:
    torch.manual_seed(0)
    blocks = [ResidualBlock(fc_branch(2, 16, 1, coeff=0.9).double(), logdet=ExactLogDet()) for _ in range(2)]
    with torch.no_grad():  # weights at their bound, so that the density bends inside a cell
        for block in blocks:
            for p in block.net.parameters():
                p.mul_(4)
    dequantizer = VariationalDequantizer((2,), N_BINS, hidden=16, n_blocks=2, logdet=ExactLogDet()) if variational else None
    model = FlowModel(FlowSequential(LogitTransform(0.05), *blocks), StandardNormal(2), dequantizer).double()
    update_spectral_norms(model)
    return model.eval()


def _exact_log_probability(model: FlowModel) -> torch.Tensor:
    """``log P(x) = log integral_cell p(y) dy`` by the midpoint rule on a 400 x 400 grid per cell."""
    m = 400
    offsets = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    grid = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), -1).view(-1, 2)
    flow_only = FlowModel(model.flow, model.prior)  # the density p itself, without the dequantizer
    with torch.no_grad():
        return torch.stack([
            log_mean_exp(flow_only.log_prob((x + grid) / N_BINS)) - 2 * math.log(N_BINS) for x in POINTS.double()
        ])  # fmt: skip


def _log_weights(model: FlowModel, draws: int) -> torch.Tensor:
    """``(draws, points)`` of ``log w - D log n``: uniform noise, or the model's dequantizer's."""
    torch.manual_seed(1)
    x = POINTS.double().repeat(draws, 1)
    uniform = (x + torch.rand_like(x)) / N_BINS
    with torch.no_grad():
        return (model.log_prob(uniform) - 2 * math.log(N_BINS)).view(draws, len(POINTS))


def _bound_over_sets(log_w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``K = k`` bound per point, its mean over ``len(log_w) / k`` independent sets and the
    standard error of that mean."""
    sets = log_mean_exp(log_w.view(-1, k, log_w.shape[1]), dim=1)
    return sets.mean(0), sets.std(0) / math.sqrt(len(sets))


def test_importance_weighted_bound_converges_to_the_exact_log_probability():
    model = _model(variational=False)
    exact = _exact_log_probability(model)
    log_w = _log_weights(model, 20_000)
    single, single_se = _bound_over_sets(log_w, 1)
    assert (single < exact - 5 * single_se).all()  # strictly below: p varies inside the cell
    # all 20,000 draws estimate log P itself; by the delta method its error is std(w) / mean(w) / sqrt(N)
    w = (log_w - log_w.max(0).values).exp()
    assert ((log_mean_exp(log_w) - exact).abs() < 4 * w.std(0) / w.mean(0) / math.sqrt(len(w))).all()
    # K = 100, over 200 independent sets: above the single-draw bound, below log P (Jensen), and
    # most of the way there
    mean_100, se_100 = _bound_over_sets(log_w, 100)
    assert (mean_100 > single + 5 * se_100).all() and (mean_100 < exact + 3 * se_100).all()
    assert ((exact - mean_100).clamp(min=0) < 0.2 * (exact - single)).all()


def test_importance_weighted_bound_rises_with_k_under_the_variational_proposal():
    # an untrained q(u | x) has lighter tails than p inside the cell: its weights are heavy-tailed
    # and the bound creeps up slowly, but it rises with K and stays below log P
    model = _model(variational=True)
    exact = _exact_log_probability(model)
    log_w = _log_weights(model, 20_000)
    (single, _), (mean_10, se_10), (mean_100, se_100) = (_bound_over_sets(log_w, k) for k in (1, 10, 100))
    assert (single < mean_10 - 3 * se_10).all() and (mean_10 < mean_100 - 3 * se_100).all()
    assert (mean_100 < exact + 3 * se_100).all()

def test_variational_bound_never_exceeds_the_exact_log_probability():
    model = _model(variational=True)
    exact = _exact_log_probability(model)
    log_w = _log_weights(model, 4000)
    mean, se = log_w.mean(0), log_w.std(0) / math.sqrt(len(log_w))
    assert (mean <= exact + 3 * se).all()
    bpd_bound = -mean / (2 * math.log(2))
    assert (bpd_bound >= -exact / (2 * math.log(2)) - 3 * se).all()  # in bits/dim it never falls below


class _Module:
    """What importance_weighted_bpd needs of a FlowLightningModule: the model and its per-image score."""

    def __init__(self, model):
        self.model = model

    def prepare_eval_model(self):
        return self.model

    def per_sample_loss(self, model, batch):
        return {"score": bits_per_dim(model.log_prob(batch[0]), 2, n_bins=N_BINS)}


def test_importance_weighted_bpd_reports_the_bound_its_gain_and_the_estimators_noise():
    model = _model(variational=False)
    exact_bpd = float(-_exact_log_probability(model).mean() / (2 * math.log(2)))
    points = POINTS.double().repeat(25, 1)  # 100 images, each point 25 times

    def draws(j):
        generator = torch.Generator().manual_seed(j)
        return [((points + torch.rand(points.shape, dtype=torch.float64, generator=generator)) / N_BINS,
                 torch.zeros(len(points)))]  # fmt: skip

    one = importance_weighted_bpd(_Module(model), draws, 1, progress=False)
    many = importance_weighted_bpd(_Module(model), draws, 400, progress=False)
    assert one["iw_bpd"] == pytest.approx(one["bound_bpd"]) and one["gain_bpd"] == pytest.approx(0)
    assert exact_bpd < many["iw_bpd"] < one["iw_bpd"] and many["iw_bpd"] - exact_bpd < 0.1 * (one["iw_bpd"] - exact_bpd)
    assert many["importance_samples"] == 400 and many["images"] == 100
    # the exact log-determinant has no noise: nothing to bias the weighted bound
    assert many["estimator_std_nats"] == 0 and many["noise_bias_bound_bpd"] == 0
