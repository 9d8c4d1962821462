"""The sample-quality scores: the Fréchet distance against a dense matrix square root, the class
entropy's maximum, real images against noise, and the classifier's cache."""

import math

import pytest
import scipy.linalg
import torch

from iresnet.data import Mnist5kDataModule
from iresnet.quality import (
    SampleScorer,
    cached_classifier,
    class_entropy,
    frechet_distance,
    gaussian_statistics,
    recognizability,
    train_classifier,
)


def _frechet_brute_force(a, b):
    (mu_a, cov_a), (mu_b, cov_b) = a, b
    root = scipy.linalg.sqrtm(cov_a.numpy() @ cov_b.numpy()).real
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * root.trace())


def test_frechet_distance_matches_the_dense_matrix_square_root():
    torch.manual_seed(0)
    a, b = torch.randn(300, 6) @ torch.randn(6, 6), torch.randn(300, 6) @ torch.randn(6, 6) + 0.5
    sa, sb = gaussian_statistics(a), gaussian_statistics(b)
    assert frechet_distance(sa, sb) == pytest.approx(_frechet_brute_force(sa, sb), rel=1e-8)
    assert frechet_distance(sa, sb) == pytest.approx(frechet_distance(sb, sa), rel=1e-8)
    # one dimension: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2
    one = gaussian_statistics(torch.randn(500, 1) * 2 + 1), gaussian_statistics(torch.randn(500, 1) * 0.5)
    (mu_a, var_a), (mu_b, var_b) = one
    expected = float((mu_a - mu_b).pow(2).sum() + (var_a.sqrt() - var_b.sqrt()).pow(2).sum())
    assert frechet_distance(*one) == pytest.approx(expected, rel=1e-8)


def test_class_entropy_is_largest_for_a_balanced_set():
    def one_hot(labels):
        return torch.nn.functional.one_hot(torch.tensor(labels), 10).double()

    balanced = class_entropy(one_hot(list(range(10)) * 5))
    assert balanced == pytest.approx(math.log(10))
    assert class_entropy(one_hot([3] * 50)) == 0
    torch.manual_seed(0)
    for _ in range(20):  # any other histogram of 50 samples falls below the maximum
        labels = torch.randint(0, 10, (50,)).tolist()
        if sorted(labels) != sorted(list(range(10)) * 5):
            assert class_entropy(one_hot(labels)) < balanced


def test_recognizability_counts_confident_predictions():
    probs = torch.tensor([[0.95, 0.05], [0.5, 0.5], [0.1, 0.9], [0.2, 0.8]])
    assert recognizability(probs) == 0.5 and recognizability(probs, threshold=0.8) == 0.75


@pytest.fixture(scope="module")
def scorer(classifier_cache) -> SampleScorer:
    return SampleScorer.from_datamodule(Mnist5kDataModule(), classifier_cache, steps=300)


@pytest.fixture(scope="module")
def test_images() -> torch.Tensor:
    return Mnist5kDataModule().dequantized("test").inputs


def test_real_test_images_score_high_and_noise_scores_low(scorer, test_images):
    real = scorer.report(test_images[:500])  # any prefix of the test split holds the classes equally
    noise = scorer.score(torch.rand(400, 1, 28, 28))
    assert real["test_images"]["classifier_accuracy"] > 0.9
    for scores in (real["samples"], real["test_images"]):
        assert scores["recognizability"] > 0.85 and scores["class_entropy_ratio"] > 0.95
    # noise lands in a few classes (a ratio near 0.5), real digits spread over all ten (above 0.95)
    assert noise["recognizability"] < 0.5 and noise["class_entropy_ratio"] < 0.7
    assert noise["frechet_distance"] > 10 * real["samples"]["frechet_distance"]


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_noise(scorer, test_images):
    x = test_images[::3]
    _, features = scorer.classifier.predict(x)
    own = gaussian_statistics(features)
    assert frechet_distance(own, own) == pytest.approx(0, abs=1e-6)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=generator)
    distances = []
    for sigma in (0.0, 0.05, 0.1, 0.2, 0.4):
        _, noisy = scorer.classifier.predict((x + sigma * noise).clamp(0, 1))
        distances.append(frechet_distance(gaussian_statistics(noisy), own))
    assert distances[0] == pytest.approx(0, abs=1e-6)
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_scores_refuse_non_finite_images(scorer):
    with pytest.raises(ValueError, match="NaN or infinite"):
        scorer.score(torch.full((4, 1, 28, 28), float("nan")))


def test_the_classifier_is_cached_by_its_data_and_a_damaged_file_is_named(tmp_path):
    torch.manual_seed(0)
    images, labels = torch.rand(64, 1, 8, 8), torch.arange(64) % 4
    first = cached_classifier(images, labels, tmp_path, "toy", steps=3)
    (path,) = tmp_path.glob("toy-*.pt")
    again = cached_classifier(images, labels, tmp_path, "toy", steps=3)
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), again.parameters()))
    cached_classifier(images.flip(0), labels, tmp_path, "toy", steps=3)  # other data, another file
    assert len(list(tmp_path.glob("toy-*.pt"))) == 2
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="delete it"):
        cached_classifier(images, labels, tmp_path, "toy", steps=3)


def test_the_classifier_trains_the_same_under_inference_mode():
    # Lightning's validation hooks run in inference mode; the callback trains its classifier there.
    x, y = torch.rand(64, 1, 28, 28), torch.arange(64) % 10
    plain = train_classifier(x, y, 10, steps=3)
    with torch.inference_mode():
        inside = train_classifier(x.clone(), y.clone(), 10, steps=3)
    for a, b in zip(plain.parameters(), inside.parameters(), strict=True):
        assert not b.is_inference() and torch.equal(a, b)


def test_scoring_leaves_the_global_random_stream_alone(tmp_path):
    # The training callback scores between steps: drawing from torch's stream would change the run.
    dm = Mnist5kDataModule()
    state = torch.get_rng_state()
    for _ in range(2):  # trained, then read from the cache
        scorer = SampleScorer.from_datamodule(dm, tmp_path, steps=3)
        scorer.report(torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
        assert torch.equal(torch.get_rng_state(), state)
