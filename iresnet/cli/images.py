"""Reading a user's own images (``images=path``) for the command-line tools, checked before use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from iresnet.data import check_images

TENSOR_SUFFIXES = (".npy", ".pt", ".pth")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _read_tensor(path: Path) -> Tensor:
    """A ``.npy`` array or a ``.pt`` tensor, loaded without running code from the file."""
    try:
        if path.suffix == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False))
        x = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"images={str(path)!r} could not be read as a {path.suffix} tensor file "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}); save the "
            "images with numpy.save or torch.save as one array (N, C, H, W) or (N, H, W)."
        ) from err
    if not isinstance(x, Tensor):
        raise ValueError(
            f"images={str(path)!r} holds a {type(x).__name__}, not a tensor; save the images with "
            "torch.save(x) where x is a tensor (N, C, H, W) or (N, H, W)."
        )
    return x


def _read_picture(path: Path, channels: int) -> Tensor:
    """A PNG or JPEG file as uint8 ``(C, H, W)``, converted to the model's channel count."""
    from torchvision.io import ImageReadMode, decode_image

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    try:
        return decode_image(str(path), mode=mode)
    except Exception as err:
        raise ValueError(
            f"{str(path)!r} could not be decoded as a PNG or JPEG image ({type(err).__name__}); "
            "check that the file is a valid picture."
        ) from err


def picture_files(folder: Path) -> list[Path]:
    """The PNG and JPEG files in ``folder``, in name order: the order :func:`read_images` reads them."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES)
    if not files:
        raise ValueError(f"images={str(folder)!r} is a folder without PNG or JPEG files; add some or pass a file.")
    return files


def read_images(path: str | Path, expected_shape: Sequence[int]) -> Tensor:
    """Images ``(N, C, H, W)`` from ``path``, valid for a model taking ``expected_shape = (C, H, W)``.

    ``path`` is a ``.npy`` / ``.pt`` file holding ``(N, C, H, W)`` or ``(N, H, W)`` (one channel)
    uint8 or float images, a PNG or JPEG file, or a folder of PNG / JPEG files (read in name
    order; grayscale or RGB to match the model). Values stay as stored: floats in [0, 1] or
    whole numbers in 0..255. Raises ``FileNotFoundError`` or ``ValueError`` naming the file,
    the problem and the fix (see :func:`iresnet.data.check_images`).
    """
    path = Path(path)
    channels = int(expected_shape[0])
    if not path.exists():
        raise FileNotFoundError(
            f"images={str(path)!r} does not exist; pass a .npy or .pt tensor file, a PNG/JPEG file, "
            "or a folder of PNG/JPEG files."
        )
    if path.is_dir():
        files = picture_files(path)
        pictures = [_read_picture(f, channels) for f in files]
        for f, picture in zip(files, pictures):
            check_images(picture, expected_shape, where=str(f))
        return torch.stack(pictures)
    suffix = path.suffix.lower()
    if suffix in PICTURE_SUFFIXES:
        x = _read_picture(path, channels).unsqueeze(0)
    elif suffix in TENSOR_SUFFIXES:
        x = _read_tensor(path)
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (N, H, W): one channel
        if x.dim() != 4:
            raise ValueError(
                f"images={str(path)!r} holds shape {tuple(x.shape)}; expected (N, C, H, W) or (N, H, W) "
                "images (add a leading batch dimension for a single image)."
            )
    else:
        raise ValueError(
            f"images={str(path)!r} has an unknown type {path.suffix!r}; use one of "
            f"{', '.join(TENSOR_SUFFIXES + PICTURE_SUFFIXES)} or a folder of pictures."
        )
    check_images(x, expected_shape, where=f"images={str(path)!r}")
    return x


def image_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images ``model`` takes; ``ValueError`` for a model of points."""
    shape = getattr(model, "input_shape", None)
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"images= needs a checkpoint of an image model; this one is a {type(model).__name__}, "
            "which models points. Leave images= out to use its data."
        )
    return tuple(int(s) for s in shape)
