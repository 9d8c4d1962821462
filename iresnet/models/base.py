"""A density model: any flow ``x -> z`` with any prior on ``z``, optionally conditioned on a context."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from iresnet.flows import ActNorm, Flow, ResidualBlock
from iresnet.inverse import full_float32_precision
from iresnet.lipschitz import SpectralNorm, needs_context, takes_context
from iresnet.models.inputs import check_context, check_prior, check_tensor, context_spec, prior_event_shape
from iresnet.models.priors import DistributionPrior

# Modules whose training-mode forward writes state, and computes the same function as in eval
# mode once it is written: spectral norm takes a power-iteration step and then divides by the
# estimate of the new vectors, which an eval-mode read gives again; ActNorm initializes itself.
_STATE_WRITERS = (SpectralNorm, ActNorm)


def _device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (the CPU if it has none)."""
    return next(itertools.chain(module.parameters(), module.buffers()), torch.empty(0)).device


def _dtype(module: nn.Module) -> torch.dtype:
    """The dtype ``module`` computes in: its first floating-point parameter's or buffer's."""
    tensors = (t for t in itertools.chain(module.parameters(), module.buffers()) if t.is_floating_point())
    return next(tensors, torch.empty(0)).dtype


@contextmanager
def kept_state(model: nn.Module) -> Iterator[None]:
    """Within: ``model`` writes nothing and draws nothing from the global random stream.

    Its state writers (spectral norm, ActNorm) run as in eval mode, which computes the function
    the last training-mode forward computed; the global generator (and the model's CUDA one) is
    forked, so log-det probes and roulette draws of a training-mode forward leave training's
    stream where it was.
    """
    writers = [m for m in model.modules() if isinstance(m, _STATE_WRITERS) and m.training]
    device = _device(model)
    for module in writers:
        module.training = False
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        for module in writers:
            module.training = True


class FlowModel(Flow):
    """``log p(x | c) = log p_Z(f(x; c) | c) + log |det df/dx|``; sampling inverts prior draws.

    Args:
        flow: any :class:`~iresnet.flows.Flow`, ``x -> z``; it gets the context in ``forward``
            and ``inverse`` and passes it to the layers that take one.
        prior: a ``torch.distributions.Distribution`` whose event shape is one code ``z``, e.g.
            ``Independent(Normal(torch.zeros(D), torch.ones(D)), 1)`` (kept as a
            :class:`~iresnet.models.priors.DistributionPrior`, so it moves with ``.to(device)``
            and is saved in checkpoints); or an ``nn.Module`` called as ``prior(context)`` that
            returns such a distribution with batch shape ``(B,)`` (or ``()`` if it ignores the
            context), e.g. :class:`~iresnet.models.ClassConditionalGaussian`.

        dequantizer: for discrete data, a module drawing the dequantization noise, ``x -> (y,
            log q(u | x))`` (:class:`~iresnet.models.dequantization.VariationalDequantizer`):
            ``log_prob`` is then the variational bound ``log p(y) - log q``, an unbiased estimate
            of ``E_q[...]``, in the units of a density on ``[0, 1)^D`` (bits/dim subtract
            ``D log n`` as for uniform noise). None: ``x`` is used as it comes (uniformly
            dequantized data, continuous data).
        input_shape: the shape of one ``x``, e.g. ``(1, 28, 28)``; the door then refuses other
            shapes, and the prior's event must hold as many values (checked here). None: any.

    Inputs are checked once, where they enter (``forward``, ``inverse``, ``log_prob``,
    ``sample``; :meth:`check_inputs`): ``x``'s shape, dtype and device, and the context, refused
    by an unconditional model and, for a conditional one, required and checked against what its
    context networks read (:mod:`iresnet.models.inputs`), each with the fix in the message.

    ``context``: a tensor with one row per sample (labels ``(B,)``, features ``(B, K)``) or None.

    Example::

        flow = FlowSequential(*[ResidualBlock(branch()) for _ in range(4)])
        model = FlowModel(flow, Independent(Normal(torch.zeros(2), torch.ones(2)), 1))
        model.log_prob(x)  # (B,)
    """

    task = "density"

    def __init__(
        self,
        flow: Flow,
        prior: Distribution | nn.Module,
        dequantizer: nn.Module | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(prior, (Distribution, nn.Module)):
            raise TypeError(
                f"prior must be a torch.distributions.Distribution or an nn.Module returning one, got "
                f"{type(prior).__name__}."
            )
        self.flow = flow
        self.prior = DistributionPrior(prior) if isinstance(prior, Distribution) else prior
        self.dequantizer = dequantizer
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.code_shape = prior_event_shape(self.prior)
        check_prior(self.input_shape, self.code_shape)
        self.context_spec = context_spec(flow, self.prior)

    # --------------------------------------------------------------------- door
    def check_inputs(self, x: Tensor, context: Tensor | None = None, name: str = "x") -> None:
        """Raise naming the problem and the fix unless ``x`` (or the code ``z``, ``name="z"``) and
        ``context`` are what the model takes (:mod:`iresnet.models.inputs`)."""
        device, dtype = _device(self), _dtype(self)
        if name == "x":
            shape, fix = self.input_shape, f"reshape the data (the model was built for input_shape={list(self.input_shape or ())})"
        else:
            shape, fix = self.code_shape, "codes have the prior's event shape, as model.sample draws them"
        check_tensor(name, x, shape, device, dtype, fix)
        check_context(context, len(x), self.conditional, self.context_spec, device, dtype)

    # ------------------------------------------------------------------ density
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x: (B, ...)`` -> ``z`` and ``logdet: (B,)``."""
        self.check_inputs(x, context)
        return self.flow(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """``z`` -> ``x = f^-1(z)``, of the function the last ``forward`` computed, in either mode;
        changes nothing in the model (:func:`kept_state`)."""
        self.check_inputs(z, context, "z")
        with kept_state(self):
            return self.flow.inverse(z, context)

    def prior_distribution(self, context: Tensor | None = None) -> Distribution:
        """The prior for ``context`` (a conditional prior's batch shape is ``(B,)``)."""
        return self.prior(context) if takes_context(self.prior) else self.prior()

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``x: (B, ...)`` -> ``log p(x | context): (B,)``."""
        return self.log_prob_and_logdet(x, context)[0]

    def log_prob_and_logdet(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``log p(x | context)`` and the flow's ``log |det df/dx|`` that it includes, both ``(B,)``
        (with a dequantizer: ``log p(y | context) - log q(u | x)`` for one draw ``y``)."""
        log_q = 0.0
        if self.dequantizer is not None:
            self.check_inputs(x, context)  # before the dequantizer reads x; forward checks its own
            x, log_q = self.dequantizer(x)
        z, logdet = self(x, context)
        log_pz = self.prior_distribution(context).log_prob(z)
        if log_pz.shape != logdet.shape:
            raise ValueError(
                f"the prior's log_prob of codes of shape {tuple(z.shape)} has shape {tuple(log_pz.shape)}, not "
                f"{tuple(logdet.shape)}: its event shape must be one code, {tuple(z.shape[1:])} (wrap a "
                "per-dimension distribution in torch.distributions.Independent)."
            )
        return log_pz + logdet - log_q, logdet

    @property
    def conditional(self) -> bool:
        """Whether the model uses a context: some residual branch takes one, or the prior needs one
        (its ``forward`` has a ``context`` parameter without a default)."""
        blocks = (m for m in self.flow.modules() if isinstance(m, ResidualBlock))  # not a dequantizer's own
        return needs_context(self.prior) or any(block.conditional for block in blocks)

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        n: int,
        context: Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` samples ``f^-1(z)``; with a context, ``n == len(context)``, one sample per row.
        Changes nothing in the model; the prior's draw is the only use of randomness.

        ``temperature`` scales the prior's spread about its mean, ``z = mu + T (z_0 - mu)``: for a
        Gaussian prior, draws from ``N(mu, T^2 Sigma)``. Without ``generator`` the draw comes from
        the global random stream, as ``torch.distributions`` draws do, so successive calls differ;
        ``generator`` makes it reproducible and leaves the global stream where it was (it seeds
        the prior's sampling under a forked global generator).
        """
        if context is not None and n != len(context):
            raise ValueError(f"with a context, n must equal its number of rows ({len(context)}), got n={n}.")
        check_context(context, n, self.conditional, self.context_spec, _device(self), _dtype(self))
        prior = self.prior_distribution(context)
        shape = (n,) if prior.batch_shape == () else ()
        if generator is None:
            z = prior.sample(shape)
        else:
            with torch.random.fork_rng(devices=[generator.device] if generator.device.type == "cuda" else []):
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator, device=generator.device)))
                z = prior.sample(shape)
        if temperature != 1.0:
            z = prior.mean + temperature * (z - prior.mean)
        return self.inverse(z, context)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``inverse(forward(x))``, the invertibility check, with float64 iterates. In training
        mode too it changes nothing in the model nor in the global random stream (:func:`kept_state`).

        The code is computed in the model's precision, without TF32 (as the inverse runs: a
        TF32 forward pass alone differs by ~1e-4 in image space); the inverse keeps its iterates
        in float64 while the residual branches run in the weights' dtype, which removes the
        float32 rounding floor of the fixed-point residual (about 1e-4 in image space for a
        trained MNIST flow, about 1e-6 this way).
        """
        with kept_state(self):
            with full_float32_precision():
                z, _ = self(x, context)
            return self.inverse(z.double(), context).to(x.dtype)

    # --------------------------------------------------------------- strategies
    def residual_blocks(self) -> list[ResidualBlock]:
        return [m for m in self.modules() if isinstance(m, ResidualBlock)]

    def set_logdet_estimator(self, estimator) -> None:
        """Swaps every block's log-det estimator, e.g. an unbiased one for evaluation."""
        for block in self.residual_blocks():
            block.logdet = estimator

    def set_inverse_solver(self, solver) -> None:
        for block in self.residual_blocks():
            block.solver = solver
