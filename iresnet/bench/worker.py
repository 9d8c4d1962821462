"""Peak memory of one training forward + backward, in a fresh process per configuration.

``python -m iresnet.bench.worker SPEC`` builds the model of ``SPEC`` (JSON: ``model`` config with
``_target_`` and the log-det estimator to measure, ``batch_size``, ``seed``, ``device``, and the
``runtime`` settings the commands apply), warms
it up with a 1-term estimator (ActNorm's initialization, allocator caches, ``.grad`` buffers),
then runs one forward + backward of the bits/dim loss with the estimator of ``SPEC`` and prints
one JSON line. Its cost is the growth of the peak RSS over the peak after warm-up, as in
``resource.getrusage`` but from ``VmHWM`` (see :func:`iresnet.bench.memory.peak_rss_mib`).
Inputs are uniform noise images: memory depends on shapes, not pixel values. The worker imports
neither Lightning nor the data modules, so it starts fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import torch
from hydra.utils import instantiate

from iresnet.bench.memory import peak_cuda_mib, peak_rss_mib
from iresnet.bench.runs import BenchmarkError
from iresnet.logdet import PowerSeriesLogDet
from iresnet.metrics import bits_per_dim
from iresnet.runtime import apply_runtime


def _loss_backward(model: torch.nn.Module, x: torch.Tensor) -> None:
    bits_per_dim(model.log_prob(x), x[0].numel()).mean().backward()


def measure(spec: dict) -> dict[str, object]:
    """Runs one configuration in this process; returns its peak memory and time."""
    torch.manual_seed(spec["seed"])
    device = torch.device(spec["device"])
    model = instantiate(spec["model"]).to(device).train()
    estimator = model.residual_blocks()[0].logdet
    x = torch.rand(spec["batch_size"], *spec["model"]["input_shape"], device=device)
    model.set_logdet_estimator(PowerSeriesLogDet(n_terms=1, grad="neumann", memory_efficient=True))
    _loss_backward(model, x)
    model.set_logdet_estimator(estimator)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    # the growth of the memory the step runs in: the CUDA allocator's on a GPU, else the process's
    baseline = torch.cuda.memory_allocated(device) / 2**20 if on_cuda else peak_rss_mib()
    start = time.perf_counter()
    _loss_backward(model, x)
    if on_cuda:
        torch.cuda.synchronize(device)
    peak = peak_cuda_mib(device) if on_cuda else peak_rss_mib()
    return {
        "step_s": time.perf_counter() - start,
        "n_terms": estimator.last_n_terms,
        "peak_rss_mib": peak_rss_mib(),
        "peak_growth_mib": None if peak is None or baseline is None else peak - baseline,  # None: no RSS (Windows)
        "peak_cuda_mib": peak_cuda_mib(device),
    }


def measure_in_subprocess(spec: dict) -> dict[str, object]:
    """:func:`measure` in a fresh interpreter, so that its peak is its own."""
    command = [sys.executable, "-m", "iresnet.bench.worker", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchmarkError(f"memory worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    apply_runtime(spec.get("runtime", {}))  # as the command-line tools do
    print(json.dumps(measure(spec)))
