"""The benchmark sections, run in order on the protocol: each returns its part of the JSON report."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from iresnet.bench.environment import environment
from iresnet.bench.evaluation import eval_estimator, evaluate, paired_difference, spread, spread_images
from iresnet.bench.inversion import SOLVERS, invert_to_tolerance
from iresnet.bench.logdet_accuracy import estimator_specs, logdet_accuracy
from iresnet.bench.reference import load_reference
from iresnet.bench.runs import run_training, series_overrides
from iresnet.bench.settings import MEMORY_MODES, check_settings
from iresnet.bench.spectral import spectral_accuracy
from iresnet.bench.timing import steady_state
from iresnet.bench.worker import measure_in_subprocess
from iresnet.lipschitz import update_spectral_norms
from iresnet.logdet import RouletteLogDet
from iresnet.quality import SampleScorer
from iresnet.training import FlowLightningModule
from iresnet.training.checkpoint import load_module

# Builds the protocol's module and data from Hydra overrides of mnist5k_bench (given by the CLI).
Builder = Callable[[Sequence[str]], tuple[FlowLightningModule, pl.LightningDataModule]]
SCHEMA_VERSION = 1


class Suite:
    """Runs the sections of the ``bench`` config ``cfg`` with modules from ``build``, writing runs
    under ``workdir``. ``cfg.<section>`` holds each section's sizes; ``cfg.protocol`` the Hydra
    overrides of the protocol; ``cfg.runtime.threads`` the torch threads of every training run;
    ``cfg.reference`` the JSON file of the reference's figures (:func:`load_reference`)."""

    def __init__(self, cfg: DictConfig, build: Builder, workdir: Path, log: Callable[[str], None] = print):
        check_settings(cfg)
        self.reference = load_reference(cfg.get("reference"))
        self.cfg = cfg
        self.build = build
        self.workdir = Path(workdir)
        self.log = log
        self.device = torch.device(cfg.device)
        self.threads = cfg.runtime.get("threads")
        self._modules: dict[tuple[str, ...], tuple[FlowLightningModule, pl.LightningDataModule]] = {}

    # ------------------------------------------------------------------ shared
    def module(self, extra: Sequence[str] = ()) -> tuple[FlowLightningModule, pl.LightningDataModule]:
        """A fresh protocol module as training starts (ActNorm initialized on one training batch,
        EMA equal to the weights), or the ``--ckpt`` module; on the benchmark's device. Cached."""
        key = tuple(extra)
        if key not in self._modules:
            if self.cfg.ckpt:
                module = load_module(self.cfg.ckpt, self.device)
                self._modules[key] = module, instantiate(module.hparams.data)
            else:
                self._modules[key] = self._fresh(extra)
        return self._modules[key]

    def _fresh(self, extra: Sequence[str]) -> tuple[FlowLightningModule, pl.LightningDataModule]:
        torch.manual_seed(self.cfg.seed)
        module, datamodule = self.build([*self.cfg.protocol, *extra])
        module = module.to(self.device)
        x = next(iter(datamodule.train_dataloader()))[0].to(self.device)
        module.model.train()
        with torch.no_grad():
            module.model(x)
        module.ema.update(module.model)  # the first update copies the weights
        return module, datamodule

    @property
    def model_label(self) -> str:
        """Which model the eval and inversion sections measure."""
        return "EMA of " + (self.cfg.ckpt or "a fresh model")

    def trainer_overrides(self) -> list[str]:
        """Overrides every timed training run gets: the protocol's and the batch size."""
        batch = [f"data.batch_size={self.cfg.train.batch_size}"] if self.cfg.train.batch_size else []
        return [*self.cfg.protocol, *batch]

    def steps(self) -> list[str]:
        """Overrides that stop a timed run after the warm-up and timed steps."""
        total = self.cfg.train.warmup_steps + self.cfg.train.timed_steps
        return [f"trainer.max_steps={total}", "trainer.max_epochs=-1"]

    # ---------------------------------------------------------------- sections
    def train(self) -> list[dict]:
        """Images/s and peak memory of the train command, per estimator variant."""
        device = ["trainer=gpu"] if self.device.type == "cuda" else []
        rows = []
        for variant in self.cfg.train.variants:
            self.log(f"train: {variant}")
            estimator = [] if variant == "roulette" else series_overrides(int(variant.removeprefix("series-")))
            record = run_training(
                [*self.trainer_overrides(), *estimator, *self.steps(), *device], self.workdir / f"train-{variant}",
                threads=self.threads,
            )
            rows.append({"variant": variant, **_timed(record, self.cfg.train.warmup_steps)})
        return rows

    def memory(self) -> list[dict]:
        """Peak memory of a forward + backward versus the number of power-series terms, per gradient mode."""
        module, _ = self.module()
        model = {k: v for k, v in module.hparams.model.items() if k != "logdet"}
        rows = []
        settings = self.cfg.memory
        for mode in settings.modes:
            grad, memory_efficient = MEMORY_MODES[mode]
            for n in settings.terms:
                self.log(f"memory: {mode}, {n} terms")
                logdet = {"_target_": "iresnet.logdet.PowerSeriesLogDet", "n_terms": n, "grad": grad,
                          "memory_efficient": memory_efficient}  # fmt: skip
                spec = {"model": {**model, "logdet": logdet}, "batch_size": settings.batch_size, "seed": self.cfg.seed,
                        "device": str(self.device), "runtime": OmegaConf.to_container(self.cfg.runtime)}  # fmt: skip
                rows.append({"mode": mode, "n_terms": n, "batch_size": spec["batch_size"],
                             **measure_in_subprocess(spec)})  # fmt: skip
        return rows

    def eval(self) -> dict:
        """Seconds and bpd ± standard error of the EMA model on the test images; a high-accuracy
        estimate of some of them, and its paired difference with the standard one."""
        s = self.cfg.eval
        module, datamodule = self.module()
        model = module.prepare_eval_model()
        x = spread_images(datamodule.test_dataloader(), s.images)
        batch = datamodule.eval_batch_size
        self.log(f"eval: {len(x)} images")
        torch.manual_seed(self.cfg.seed)
        standard, scores = evaluate(module, model, x, eval_estimator(module, s.terms, s.probes, s.chunk), batch)
        self.log(f"eval: high accuracy, {s.high_accuracy_images} images")
        precise = RouletteLogDet(eval_exact_terms=s.high_accuracy_terms, n_probes=s.high_accuracy_probes)
        subset = spread(len(x), s.high_accuracy_images)
        high, high_scores = evaluate(module, model, x[subset], precise, batch)
        return {
            "model": self.model_label,
            "ema_warmup": module.hparams.ema_warmup,
            "standard": standard,
            "high_accuracy": {**high, **paired_difference(scores[subset], high_scores)},
        }

    def inversion(self) -> list[dict]:
        """Seconds and net evaluations to invert test images to ``invert_tol``, per coeff and solver."""
        s = self.cfg.inversion
        protocol_coeff = self.module()[0].hparams.model["coeff"]
        coeffs = [protocol_coeff] if self.cfg.ckpt else s.coeffs
        rows = []
        for coeff in coeffs:
            module, datamodule = self.module([] if coeff == protocol_coeff else [f"model.coeff={coeff}"])
            model = module.prepare_eval_model()
            x = spread_images(datamodule.test_dataloader(), s.images).to(self.device)
            for solver in SOLVERS:
                self.log(f"inversion: coeff {module.hparams.model['coeff']}, {solver}")
                result = invert_to_tolerance(model, x, solver, s.tol)
                rows.append({"model": self.model_label, "coeff": module.hparams.model["coeff"], **result})
        return rows

    def logdet(self) -> list[dict]:
        """Bias and spread of the estimators against the exact log-det, by terms and coeff."""
        s = self.cfg.logdet
        self.log("logdet: estimator accuracy")
        specs = estimator_specs(s.series_terms, s.roulette_exact)
        return logdet_accuracy(s.coeffs, specs, s.draws, s.samples, self.cfg.seed, self.device)

    def spectral(self) -> list[dict]:
        """Power-iteration estimates against exact spectral norms, per layer type."""
        s = self.cfg.spectral
        self.log("spectral: power iteration accuracy")
        return spectral_accuracy(s.tol, trials=s.trials, seed=self.cfg.seed, device=self.device)

    def samples(self) -> dict:
        """Seconds to draw ``n`` samples of the EMA model and their quality scores, per temperature,
        beside the test images' own at the same ``n`` (the ceiling)."""
        s = self.cfg.samples
        module, datamodule = self.module()
        model = module.prepare_eval_model()
        self.log("samples: the dataset's classifier")
        scorer = SampleScorer.from_datamodule(datamodule, self.cfg.paths.cache_dir, steps=s.classifier_steps)
        rows = []
        for temperature in s.temperatures:
            self.log(f"samples: {s.n} at temperature {temperature}")
            generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
            start = time.perf_counter()
            x = model.sample(s.n, None, temperature, generator=generator)
            seconds = time.perf_counter() - start
            report = scorer.report(x.float().cpu())
            rows.append({"temperature": temperature, "seconds": seconds, **report["samples"]})
        return {"model": self.model_label, "rows": rows, "test_images": report["test_images"]}

    def ddp(self) -> dict:
        """Images/s of the train command with 1 and 2 processes on CPU (gloo), cores split between them."""
        cores = self.threads or os.cpu_count() or 1
        rows = []
        for processes in self.cfg.ddp.processes:
            self.log(f"ddp: {processes} process(es)")
            trainer = ["trainer=cpu"] if processes == 1 else ["trainer=ddp_cpu", f"trainer.devices={processes}"]
            record = run_training(
                [*self.trainer_overrides(), *self.steps(), *trainer], self.workdir / f"ddp-{processes}",
                threads=max(1, cores // processes),
            )
            rows.append({"processes": processes, **_timed(record, self.cfg.train.warmup_steps)})
        base = rows[0]["images_per_s"]
        for row in rows:
            row["speedup"] = row["images_per_s"] / base
        return {"rows": rows}

    def full(self) -> dict:
        """The train command for ``epochs`` epochs; test bpd of the EMA (from the run) and of the raw
        weights, and inversion of the raw weights, from its last checkpoint."""
        epochs = self.cfg.full.epochs
        run_dir = self.workdir / "full-protocol"
        device = ["trainer=gpu"] if self.device.type == "cuda" else []
        self.log(f"full protocol: {epochs} epoch(s) in {run_dir}")
        record = run_training(
            [*self.cfg.protocol, f"trainer.max_epochs={epochs}", *device], run_dir, full=True, threads=self.threads
        )
        metrics = json.loads((run_dir / "metrics.json").read_text())
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        module = load_module(ckpt, self.device)
        datamodule = instantiate(module.hparams.data)
        raw = module.model.eval()
        update_spectral_norms(raw)
        x = spread_images(datamodule.test_dataloader(), self.cfg.eval.images)
        self.log("full protocol: raw weights")
        torch.manual_seed(self.cfg.seed)
        raw_eval, _ = evaluate(module, raw, x, eval_estimator(module), datamodule.eval_batch_size)
        x = x[: self.cfg.inversion.images].to(self.device)
        return {
            "epochs": epochs,
            "steps": len(record["step_s"]),
            "wall_s": record["wall_s"],
            "train_s": sum(record["step_s"]),
            "images_per_s": len(record["step_s"]) * record["batch_size"] / sum(record["step_s"]),  # all steps
            "peak_rss_mib": record["peak_rss_mib"],
            "ema_warmup": module.hparams.ema_warmup,
            "test_bpd_ema": metrics.get("test/bpd"),
            "test_bpd_ema_se": metrics.get("test/bpd_se"),
            "test_bpd_raw": raw_eval["bpd"],
            "test_bpd_raw_se": raw_eval["bpd_se"],
            "test_images_raw": raw_eval["images"],
            "inversion_raw": [invert_to_tolerance(raw, x, solver, self.cfg.inversion.tol) for solver in SOLVERS],
            "ckpt": str(ckpt),
        }

    # -------------------------------------------------------------------- all
    def run(self) -> dict:
        """Every section of ``cfg.sections``, in order, with the environment and the reference numbers."""
        start = time.perf_counter()
        report = {
            "schema_version": SCHEMA_VERSION,
            "protocol": "mnist5k-bench",
            "environment": environment(self.device),
            "settings": OmegaConf.to_container(self.cfg, resolve=True),
            "reference": self.reference,
            "sections": {},
            "section_seconds": {},
        }
        for name in self.cfg.sections:
            section_start = time.perf_counter()
            report["sections"][name] = getattr(self, name)()
            report["section_seconds"][name] = time.perf_counter() - section_start
        report["seconds"] = time.perf_counter() - start
        return report


def _timed(record: dict, warmup_steps: int) -> dict:
    """The JSON entry of one timed training run."""
    return {
        **steady_state(record, warmup_steps),
        "batch_size": record["batch_size"],
        "world_size": record["world_size"],
        "threads": record["threads"],
        "peak_rss_mib": record["peak_rss_mib"],
        "peak_cuda_mib": record["peak_cuda_mib"],
        "wall_s": record["wall_s"],
    }
