"""``iresnet-sample ckpt_path=... n=64 [temperature=0.8|[0.5,0.7,1.0]] [label=3|all] [score=true] out=samples.png``."""

from __future__ import annotations

import json

import torch
from omegaconf import DictConfig, ListConfig

from iresnet.cli.common import checkpoint_datamodule, class_labels, hydra_command, require_converged, writable_output
from iresnet.quality import SampleScorer
from iresnet.pretrained_models import module_from
from iresnet.visualize import save_image_grid, save_points_plot


def sample(cfg: DictConfig) -> torch.Tensor:
    """Draws ``n`` samples from the checkpoint's EMA model and writes them as a PNG.

    A class-conditional model draws ``n`` of class ``label``, or with ``label=all`` (its
    default) ``n`` of every class, one row per class. ``temperature`` null: the one the
    checkpoint's experiment names; a list (``temperature=[0.5,0.7,0.85,1.0]``): a sweep, the same
    ``n`` draws at each temperature, one block of rows per temperature in the grid. ``score=true`` also prints
    (and writes beside the PNG, as JSON) the samples' quality scores at each temperature and the
    test images' own (:mod:`iresnet.quality`).
    """
    if cfg.n < 1:
        raise ValueError(f"n must be a positive number of samples, got {cfg.n}.")
    out = writable_output(cfg.out, cfg.overwrite)
    scores_out = writable_output(out.with_suffix(".scores.json"), cfg.overwrite) if cfg.score else None
    module = module_from(cfg.get("ckpt_path"), cfg.get("pretrained"), cfg.device)
    temperatures = sample_temperatures(cfg.temperature, module.hparams.get("sample_temperature", 1.0))
    model = module.prepare_eval_model()
    labels, per_row = class_labels(model, cfg.get("label"), cfg.n)
    if labels is None and model.conditional:
        raise ValueError(
            "this checkpoint's model is conditioned on features, which iresnet-sample cannot choose; sample it from "
            "Python with model.sample(n, context)."
        )
    n = cfg.n if labels is None else len(labels)
    scorer = None
    if cfg.score:
        if n < 4:
            raise ValueError(f"score=true needs at least 4 samples to score, got n={cfg.n}; use n=500 or more.")
        scorer = SampleScorer.from_datamodule(checkpoint_datamodule(cfg, module), cfg.paths.cache_dir)
    draws = []
    for temperature in temperatures:  # the same draws at every temperature: columns compare
        generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
        draws.append(model.sample(n, labels, temperature, generator=generator))
        require_converged(model)
    samples = torch.cat(draws)
    shown = ", ".join(str(t) for t in temperatures)
    if samples.dim() == 2:
        save_points_plot(samples, out, f"{n} samples, T={shown}")
    else:
        sweep_row = max(d for d in range(1, min(n, 16) + 1) if n % d == 0)  # whole rows per temperature
        save_image_grid(samples, out, nrow=cfg.nrow or per_row or (sweep_row if len(temperatures) > 1 else None))
    which = "" if labels is None else f" of class {cfg.label}" if per_row is None else ", one row per class"
    print(f"wrote {n} samples{which} at temperature {shown} to {out}")
    if scorer is not None:
        reports = [{"temperature": t, **scorer.report(x.float().cpu())} for t, x in zip(temperatures, draws)]
        for report in reports:
            print(f"temperature {report['temperature']}:\n{format_scores(report)}")
        scores_out.write_text(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
        print(f"wrote {scores_out}")
    return samples


def sample_temperatures(value: object, default: float) -> list[float]:
    """``temperature=`` as a list: null gives the checkpoint's ``default``; a number or a list of
    positive numbers."""
    values = [default] if value is None else list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    for t in values:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
            raise ValueError(f"temperature must be a positive number or a list of them, got {value!r}.")
    if not values:
        raise ValueError("temperature=[] names no temperature; give one (0.7) or a list ([0.5,0.7,1.0]).")
    return [float(t) for t in values]


def format_scores(report: dict) -> str:
    """The samples' scores beside the test images' (the ceiling), as a small table."""
    rows = [("recognizability (p >= 0.9)", "recognizability", "{:.1%}"), ("class entropy / max", "class_entropy_ratio", "{:.1%}"),
            ("Fréchet distance (classifier features)", "frechet_distance", "{:.1f}")]  # fmt: skip
    samples, ceiling = report["samples"], report["test_images"]
    lines = [f"{'':40s}{'samples':>12s}{'test images':>14s}   (n={samples['n']})"]
    lines += [f"{label:40s}{fmt.format(samples[key]):>12s}{fmt.format(ceiling[key]):>14s}" for label, key, fmt in rows]
    return "\n".join(lines)


main = hydra_command(sample, "sample")


if __name__ == "__main__":
    main()
