"""The JSON report as markdown tables, one per section, with the reference's figures beside ours.

The reference's figures are the report's ``reference`` dict, read from the JSON file the
``bench`` config's ``reference`` names (see :func:`iresnet.bench.reference.load_reference`); with
none, the tables have no reference rows, and a figure the file lacks shows as "–".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; floats get 3 significant digits."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _mib(row: dict) -> object:
    return row.get("peak_cuda_mib") or row.get("peak_rss_mib")


def _train(rows: list[dict], ref: dict) -> str:
    body = [[r["variant"], r["batch_size"], r["threads"], r["timed_steps"], r["step_s"], r["step_s_median"],
             r["images_per_s"], _mib(r)] for r in rows]  # fmt: skip
    if ref:
        body.append(["reference (roulette)", ref.get("batch_size"), ref.get("threads"), "", "", "",
                     ref.get("train_images_per_s"), ref.get("peak_rss_mib")])  # fmt: skip
    return table(["variant", "batch", "threads", "timed steps", "s/step", "median s/step", "images/s", "peak MiB"],
                 body)  # fmt: skip


def _memory(rows: list[dict], ref: dict) -> str:
    body = [[r["mode"], r["n_terms"], r["batch_size"], r["peak_growth_mib"], _mib(r), r["step_s"]] for r in rows]
    return table(["gradient", "terms", "batch", "peak growth MiB", "peak MiB", "s (fwd+bwd)"], body)


def _eval(result: dict, ref: dict) -> str:
    rows = []
    for name in ("standard", "high_accuracy"):
        r = result[name]
        rows.append([name, r["estimator"], r["images"], r["seconds"], 1000 * r["seconds"] / r["images"],
                     f"{r['bpd']:.4f} ± {r['bpd_se']:.4f}"])  # fmt: skip
    if ref:
        rows.append(["reference", "20 exact + roulette", 1000, ref.get("eval_seconds_1000_images"),
                     ref.get("eval_seconds_1000_images"), ""])  # fmt: skip
    ha = result["high_accuracy"]
    return (
        f"{result['model']} (EMA warm-up: {_fmt(result['ema_warmup'])}); high accuracy minus standard on the "
        f"same images: {ha['difference']:.4f} ± {ha['difference_se']:.4f} bpd\n\n"
        + table(["estimate", "estimator", "images", "seconds", "s per 1000", "bpd"], rows)
    )


def _inversion(rows: list[dict], ref: dict) -> str:
    body = [[r["coeff"], r["solver"], r["images"], r["atol"], r["seconds"], r["net_evals"], r["max_block_iterations"],
             r["max_abs_error"], r["converged"]] for r in rows]  # fmt: skip
    if ref:
        body.append(["reference", "", 64, "", ref.get("invert_64_images_seconds"), "", "",
                     ref.get("invert_64_images_max_abs_error"), ""])  # fmt: skip
    return table(["coeff", "solver", "images", "atol", "seconds", "net evals", "max iters/block", "max-abs error",
                  "converged"], body)  # fmt: skip


def _logdet(rows: list[dict], ref: dict) -> str:
    body = [[r["block"], r["coeff"], r["jacobian_norm_max"], r["exact_logdet_mean"], r["estimator"], r["mean_terms"],
             f"{r['bias']:.3g} ± {r['bias_se']:.2g}", r["std"]] for r in rows]  # fmt: skip
    return table(["block", "coeff", "max ‖J‖", "exact", "estimator", "mean terms", "bias ± se", "std/draw"], body)


def _spectral(rows: list[dict], ref: dict) -> str:
    body = [[r["layer"], "x".join(map(str, r["input_shape"])), r["trials"], r["max_rel_error_after_construction"],
             r["max_steps_to_tol"], r["mean_update_iterations"], r["max_update_rel_error"], r["max_normalized_norm"],
             r["coeff"]] for r in rows]  # fmt: skip
    return table(["layer", "input", "trials", "rel. error at construction", "steps to tol",
                  "update_spectral_norms steps", "its rel. error", "normalized norm", "coeff"], body)  # fmt: skip


def _samples(result: dict, ref: dict) -> str:
    rows = [[r["temperature"], r["n"], r["seconds"], f"{r['recognizability']:.1%}", f"{r['class_entropy_ratio']:.1%}",
             r["frechet_distance"]] for r in result["rows"]]  # fmt: skip
    c = result["test_images"]
    rows.append(["test images", c["n"], "", f"{c['recognizability']:.1%}", f"{c['class_entropy_ratio']:.1%}",
                 c["frechet_distance"]])  # fmt: skip
    return f"{result['model']}; classifier accuracy on the test images {c.get('classifier_accuracy', 0):.1%}\n\n" + table(
        ["temperature", "samples", "seconds to draw", "recognizable (p >= 0.9)", "class entropy / max", "Fréchet distance"],
        rows,
    )


def _ddp(result: dict, ref: dict) -> str:
    body = [[r["processes"], r["threads"], r["batch_size"], r["timed_steps"], r["step_s_median"], r["images_per_s"],
             r["speedup"]] for r in result["rows"]]  # fmt: skip
    return table(["processes", "threads each", "batch each", "timed steps", "median s/step", "images/s", "speedup"],
                 body)  # fmt: skip


def _full(r: dict, ref: dict) -> str:
    inversion = ", ".join(f"{i['solver']} {i['max_abs_error']:.2e}" for i in r["inversion_raw"])
    body = [
        ["ours", r["epochs"], r["steps"], r["wall_s"], r["images_per_s"], r["peak_rss_mib"],
         f"{r['test_bpd_raw']:.4f} ± {r['test_bpd_raw_se']:.4f}",
         f"{r['test_bpd_ema']:.4f} ± {r['test_bpd_ema_se']:.4f}", r["ema_warmup"], inversion],
    ]  # fmt: skip
    if ref:
        body.append(["reference", ref.get("epochs"), ref.get("steps"), "", ref.get("train_images_per_s"),
                     ref.get("peak_rss_mib"), ref.get("test_bpd_raw"), ref.get("test_bpd_ema"), False,
                     ref.get("inversion_raw_max_abs_error")])  # fmt: skip
    return table(["run", "epochs", "steps", "wall s", "images/s", "peak MiB", "test bpd (raw)", "test bpd (EMA)",
                  "EMA warm-up", "inversion error (raw)"], body)  # fmt: skip


SECTION_TABLES: dict[str, tuple[str, Callable[[object, dict], str]]] = {
    "train": ("Training throughput", _train),
    "memory": ("Peak memory versus series terms", _memory),
    "eval": ("Evaluation", _eval),
    "inversion": ("Inversion", _inversion),
    "logdet": ("Log-determinant accuracy", _logdet),
    "spectral": ("Spectral norm", _spectral),
    "samples": ("Sample quality", _samples),
    "ddp": ("Data-parallel scaling (CPU, gloo)", _ddp),
    "full": ("Full protocol", _full),
}


def markdown(report: dict) -> str:
    """The report's sections as markdown, headed by the machine it ran on."""
    env = report["environment"]
    settings = report["settings"]
    lines = [
        f"# iresnet-bench: {report['protocol']}",
        "",
        f"{env['device_name']} ({env['device']}), {env['cpu_count']} CPUs, {env['threads']} threads, torch "
        f"{env['torch']}, iresnet {env['iresnet']} ({env['git']}), load average {env['load_average']}, {env['time']}. "
        f"Protocol overrides: {' '.join(settings['protocol']) or 'none'}; total {report['seconds']:.0f} s.",
    ]
    if ref := report["reference"]:
        source, machine = ref.get("source", "unnamed"), ref.get("machine", "an unnamed machine")
        lines += ["", f"Reference rows: {source}, measured on {machine}."]
    for name, result in report["sections"].items():
        title, render = SECTION_TABLES[name]
        lines += ["", f"## {title}", "", render(result, report["reference"])]
    return "\n".join(lines) + "\n"
