"""Bad input: the user's own images (images=...), data and config mistakes end with one
``error: ...`` line naming the problem and the fix, exit code 2, no traceback."""

import json

import numpy as np
import pytest
import torch
from reliability import TINY, assert_user_error, call_main
from torchvision.io import write_png

from iresnet.cli.compose import compose_config as compose
from iresnet.cli.eval import evaluate
from iresnet.cli.images import read_images
from iresnet.cli.invert import invert
from iresnet.data import Mnist5kDataModule

MNIST = (1, 28, 28)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """The first 32 mnist5k test digits, uint8 (32, 1, 28, 28)."""
    return Mnist5kDataModule().split("test").inputs[:32]


def _save(path, x):
    if path.suffix == ".npy":
        np.save(path, x.numpy())
    else:
        torch.save(x, path)
    return path


def test_tensor_files_and_pictures_are_read_as_nchw(tmp_path, digits):
    assert torch.equal(read_images(_save(tmp_path / "a.npy", digits[:, 0]), MNIST), digits)  # (N, H, W)
    floats = digits.float() / 255
    assert torch.equal(read_images(_save(tmp_path / "b.pt", floats), MNIST), floats)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(digits[:3]):
        write_png(image.expand(3, -1, -1).contiguous(), str(folder / f"{i}.png"))  # RGB: read as gray
    assert torch.equal(read_images(folder, MNIST), digits[:3])
    assert torch.equal(read_images(folder / "1.png", MNIST), digits[1:2])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x: x.float().div(255).index_put_((torch.tensor(0),), torch.tensor(float("nan"))), "NaN or Inf"),
        (lambda x: x.float() / 127.5 - 1, "neither floats in \\[0, 1\\] nor whole numbers in 0..255"),
        (lambda x: x.expand(-1, 3, -1, -1), "expected 1 channel"),
        (lambda x: x.permute(0, 2, 3, 1), "expected 1 channel.*channels first"),
        (lambda x: torch.nn.functional.pad(x, (2, 2, 2, 2)), "expected 28x28 images, got 32x32; resize"),
        (lambda x: x[:0], "empty"),
        (lambda x: x[0, 0, 0], "holds shape \\(28,\\)"),
    ],
    ids=["nan", "range", "channels", "hwc", "size", "empty", "shape"],
)
def test_bad_images_are_named_with_the_fix(tmp_path, digits, make, match):
    with pytest.raises(ValueError, match=match):
        read_images(_save(tmp_path / "x.npy", make(digits.clone())), MNIST)


def test_bad_image_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_images(tmp_path / "nope.npy", MNIST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder without PNG or JPEG"):
        read_images(tmp_path / "empty", MNIST)
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="unknown type '.gif'"):
        read_images(tmp_path / "x.gif", MNIST)
    torch.save({"x": torch.zeros(1)}, tmp_path / "d.pt")
    with pytest.raises(ValueError, match="holds a dict, not a tensor"):
        read_images(tmp_path / "d.pt", MNIST)
    np.save(tmp_path / "o.npy", np.array([object()]), allow_pickle=True)
    with pytest.raises(ValueError, match="could not be read"):  # no pickled objects
        read_images(tmp_path / "o.npy", MNIST)


def test_eval_on_images_matches_eval_on_the_same_test_digits(tmp_path, tiny_ckpt, digits):
    """images= is dequantized exactly as the data modules dequantize evaluation batches."""
    split = evaluate(compose("eval", [f"ckpt_path={tiny_ckpt}", "trainer.limit_test_batches=1",
                                         "data=mnist5k", "data.eval_batch_size=32"], tmp_path / "split"))  # fmt: skip
    images = _save(tmp_path / "digits.npy", digits)
    own = evaluate(compose("eval", [f"ckpt_path={tiny_ckpt}", f"images={images}", "batch_size=32"],
                              tmp_path / "own"))  # fmt: skip
    assert own["n"] == split["n"] == 32 and own["split"] == "images"
    assert own["mean"] == pytest.approx(split["mean"], abs=1e-5)
    assert json.loads((tmp_path / "own" / "eval.json").read_text())["images"] == str(images)


def test_invert_on_a_picture_folder(tmp_path, tiny_ckpt, digits):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(digits[:4]):
        write_png(image, str(folder / f"{i}.png"))
    out = tmp_path / "recon.png"
    cfg = compose("invert", [f"ckpt_path={tiny_ckpt}", f"images={folder}", f"out={out}"], tmp_path / "r")
    assert invert(cfg) < 1e-3
    assert out.stat().st_size > 0


def test_cli_image_and_data_errors_are_one_line(tmp_path, tiny_ckpt, digits, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nan = _save(tmp_path / "nan.pt", digits.float().div(255).index_put_((torch.tensor(0),), torch.tensor(float("nan"))))
    ckpt = f"ckpt_path={tiny_ckpt}"
    assert_user_error(*call_main("eval", ckpt, f"images={nan}"), "NaN or Inf", "nan.pt")
    assert_user_error(*call_main("invert", ckpt, f"images={tmp_path / 'nope'}"), "does not exist")
    wide = _save(tmp_path / "wide.npy", torch.nn.functional.pad(digits, (2, 2, 2, 2)))
    assert_user_error(*call_main("invert", ckpt, f"images={wide}"), "expected 28x28 images")
    assert_user_error(*call_main("eval", ckpt, "data=toy2d"), "takes images of shape (1, 28, 28)", "(2,)")
    assert_user_error(*call_main("train", "data=mnist", f"paths.data_dir={tmp_path / 'nowhere'}"), "MNIST not found")
    assert_user_error(*call_main("train", "experiment=toy2d", "data.num_train=0", "~logger"), "train split is empty")


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["model.coeff=1.0"], ["coeff must satisfy 0 < coeff < 1", "coeff=1.0"]),
        (["model.coeff=0"], ["coeff must satisfy 0 < coeff < 1"]),
        (["model.logdet._target_=iresnet.logdet.Nope"], ["unknown _target_ 'iresnet.logdet.Nope'", "logdet"]),
        (["model.inverse._target_=iresnet.inverse.Newton"], ["unknown _target_ 'iresnet.inverse.Newton'"]),
        (["model/logdet=series", "model.logdet.n_terms=0"], ["n_terms must be an integer >= 1"]),
        (["data.batch_size=5000"], ["batch_size=5000 exceeds the 3500 training examples", "data.drop_last=false"]),
    ],
    ids=["coeff1", "coeff0", "estimator", "solver", "n_terms", "batch"],
)
def test_config_mistakes_are_one_line(tmp_path, monkeypatch, overrides, words):
    monkeypatch.chdir(tmp_path)
    assert_user_error(*call_main("train", *TINY, "trainer.max_epochs=1", "~logger", *overrides), *words)


def test_hydra_reports_unknown_keys_and_options_without_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args, words in [(["trainer.max_epoch=1"], "Could not override 'trainer.max_epoch'"),
                        (["model/logdet=nope"], "Could not find 'model/logdet/nope'")]:  # fmt: skip
        code, stderr = call_main("train", *args)
        assert code == 2 and words in stderr and "Traceback" not in stderr, stderr
    assert_user_error(*call_main("eval"), "ckpt_path is required")
