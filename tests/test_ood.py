"""Out-of-distribution detection: the metrics against brute force, the scores, and iresnet-ood."""

import itertools
import json

import numpy as np
import pytest
import torch

from iresnet.cli.ood import detect
from iresnet.ood import aupr, auroc, compressed_bits, detection_metrics, fpr_at_tpr, ood_scores, roc_curve
from reliability import assert_user_error, call_main

rng = np.random.default_rng(0)
CASES = [
    (rng.normal(0, 1, 40), rng.normal(1, 1, 30)),
    (rng.integers(0, 5, 25).astype(float), rng.integers(2, 7, 35).astype(float)),  # many ties
    (np.array([1.0, 2.0]), np.array([3.0, 4.0])),  # separated
]


def brute_auroc(s_in, s_out):
    pairs = [(o > i) + 0.5 * (o == i) for i, o in itertools.product(s_in, s_out)]
    return float(np.mean(pairs))


def brute_flags(s_in, s_out):
    """(fpr, tpr, precision) of flagging ``score >= t`` at every distinct t, highest first."""
    rows = []
    for t in sorted(set(s_in) | set(s_out), reverse=True):
        tp, fp = (s_out >= t).sum(), (s_in >= t).sum()
        rows.append((fp / len(s_in), tp / len(s_out), tp / (tp + fp)))
    return rows


@pytest.mark.parametrize("s_in, s_out", CASES)
def test_metrics_match_brute_force(s_in, s_out):
    assert auroc(s_in, s_out) == pytest.approx(brute_auroc(s_in, s_out))
    rows = brute_flags(s_in, s_out)
    recall = [0.0] + [r[1] for r in rows]
    assert aupr(s_in, s_out) == pytest.approx(sum((recall[k + 1] - recall[k]) * rows[k][2] for k in range(len(rows))))
    assert fpr_at_tpr(s_in, s_out) == pytest.approx(next(fpr for fpr, tpr, _ in rows if tpr >= 0.95))
    fpr, tpr = roc_curve(s_in, s_out)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1) and (np.diff(fpr) >= 0).all()


def test_metrics_conventions():
    low, high = np.zeros(10), np.ones(10)
    assert detection_metrics(low, high) == {"auroc": 1.0, "aupr": 1.0, "fpr95": 0.0}  # OOD scores higher: found
    assert auroc(high, low) == 0.0 and fpr_at_tpr(high, low) == 1.0
    with pytest.raises(ValueError, match="non-finite"):
        auroc(np.array([np.nan]), high)


def test_compressed_bits_measure_complexity():
    flat = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    noise = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for codec in ("png", "zlib"):
        bits_flat, bits_noise = compressed_bits(flat, codec), compressed_bits(noise, codec)
        assert bits_flat.shape == (3,) and (bits_flat < bits_noise / 5).all()
        assert (bits_noise > 0.9 * 8 * 784).all()  # noise does not compress
        np.testing.assert_array_equal(compressed_bits(noise.float() / 255, codec), bits_noise)
    with pytest.raises(ValueError, match="codec"):
        compressed_bits(flat, "gif")


def test_ood_scores_formulas():
    scores = ood_scores(np.array([1.0, 2.0]), np.array([100.0, 50.0]), dims=784, typical_bpd=1.5)
    np.testing.assert_allclose(scores["nll"], [784, 1568])
    np.testing.assert_allclose(scores["complexity"], [684, 1518])
    np.testing.assert_allclose(scores["typicality"], [0.5, 0.5])


def test_the_known_failure_and_its_correction(compose_config, tmp_path):
    """A Fashion-MNIST model gives MNIST digits higher likelihood than its own test images (NLL's
    AUROC below 0.5); the complexity-corrected score tells them apart (AUROC at least 0.9)."""
    out = tmp_path / "ood.json"
    result = detect(compose_config("ood", [
        "pretrained=fashion_mnist", "ood=mnist5k", "max_images=100", "typical_images=100", f"out={out}",
    ]))  # fmt: skip
    written = json.loads(out.read_text())
    assert written["scores"] == result["scores"] and set(written["scores"]) == {"nll", "complexity", "typicality"}
    assert written["n_in"] == written["n_ood"] == 100
    assert written["scores"]["nll"]["auroc"] < 0.5
    assert written["scores"]["complexity"]["auroc"] >= 0.9
    for score in ("nll", "complexity", "typicality"):
        assert set(written["scores"][score]) == {"auroc", "aupr", "fpr95"}
        assert (tmp_path / f"ood_{score}.png").stat().st_size > 0


def test_own_images_as_the_ood_set(compose_config, tmp_path):
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    np.save(tmp_path / "noise.npy", images.numpy())
    result = detect(compose_config("ood", [
        "pretrained=mnist5k_small", f"images={tmp_path / 'noise.npy'}", "max_images=8", "typical_images=8",
        f"out={tmp_path / 'ood.json'}",
    ]))  # fmt: skip
    assert result["n_ood"] == 8 and result["scores"]["nll"]["auroc"] == 1.0  # noise is unlikely under any digit model


@pytest.mark.parametrize("args, words", [
    (["pretrained=mnist5k_small"], ["exactly one of ood="]),
    (["pretrained=mnist5k_small", "ood=cifar"], ["ood must be one of"]),
    (["pretrained=mnist5k_quality", "ood=fashion_mnist"], ["class-conditional"]),
    (["ood=fashion_mnist"], ["ckpt_path is required"]),
])  # fmt: skip
def test_user_errors(args, words, tmp_path):
    assert_user_error(*call_main("ood", *args, f"out={tmp_path / 'o.json'}"), *words)
