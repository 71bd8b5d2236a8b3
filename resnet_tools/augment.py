"""The pipeline's pixel work on whole uint8 batches on the training device: random crop and flip as one
gather, cutout, and normalization as one multiply-add. A leaf: torch only. The random draws come from a CPU
generator, so a run is reproducible on any device and resumes to the same batches (resnet_lib._batches
makes an epoch's draws up front with augment_draws and applies crop_flip, scale_shift and cutout_at)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(
    x: torch.Tensor, generator: torch.Generator, crop: bool = True, flip: bool = True, pad: int = 4
) -> torch.Tensor:
    """Random crop (zero padding `pad`) and horizontal flip of a whole uint8 batch (B, C, H, W).

    Random draws come from `generator` (a CPU generator, so runs are reproducible on any
    device and resumable); the pixel work is one gather on x's device.
    """
    draws = augment_draws(len(x), generator, crop, flip, pad)
    dy, dx, mirror = (None if d is None else d.to(x.device) for d in draws)
    return crop_flip(x, dy, dx, mirror, pad)


def augment_draws(
    n: int, generator: torch.Generator, crop: bool, flip: bool, pad: int
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(dy, dx, mirror) for n images, drawn on the CPU in this order; None where disabled."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator) if crop else None
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator) if crop else None
    mirror = torch.rand(n, generator=generator).lt(0.5) if flip else None
    return dy, dx, mirror


def crop_flip(
    x: torch.Tensor, dy: torch.Tensor | None, dx: torch.Tensor | None, mirror: torch.Tensor | None, pad: int = 4
) -> torch.Tensor:
    """The window at (dy, dx) of each image zero-padded by `pad`, mirrored where `mirror`.

    Crop and flip are one gather of flat pixel positions per image, shared by its channels
    (few, large memory accesses: see bench/README.md for how it compares).
    dy/dx None = no crop, mirror None = no flip.
    """
    if dy is None and mirror is None:
        return x
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).expand(b, h)
    cols = torch.arange(w, device=x.device).expand(b, w)
    if mirror is not None:  # column j of a mirrored window is column w-1-j of the window
        cols = torch.where(mirror[:, None], w - 1 - cols, cols)
    if dy is not None and dx is not None:
        x = F.pad(x, (pad, pad, pad, pad))
        rows = rows + dy[:, None]
        cols = cols + dx[:, None]
    index = (rows[:, :, None] * x.shape[3] + cols[:, None, :]).view(b, 1, h * w)
    return x.reshape(b, c, -1).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one size x size square per image (centre uniform over the image, clipped at the border).

    Applied after normalization, so zero is the dataset mean.
    """
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=generator).to(x.device)
    cx = torch.randint(0, w, (b,), generator=generator).to(x.device)
    return cutout_at(x, cy, cx, size)


def cutout_at(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """Zero the size x size square centred at (cy, cx) of each image (clipped at the border)."""
    h, w = x.shape[2:]
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys - cy[:, None]).abs() <= size // 2 - (1 - size % 2) * (ys >= cy[:, None])
    in_x = (xs - cx[:, None]).abs() <= size // 2 - (1 - size % 2) * (xs >= cx[:, None])
    mask = in_y[:, :, None] & in_x[:, None, :]
    return x.masked_fill(mask[:, None], 0.0)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 (x/255 - mean) / std, as one multiply-add.

    With `channels_last`, the result is written in that memory format by the same kernel.
    """
    return scale_shift(x, *affine(mean, std), channels_last=channels_last)


def affine(mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of shape (1, C, 1, 1) with x * scale + shift == (x/255 - mean) / std."""
    return (1.0 / (255.0 * std)).view(1, -1, 1, 1), (-mean / std).view(1, -1, 1, 1)


def scale_shift(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    # One kernel: addcmul reads the uint8 pixels directly (type promotion, no float copy)
    # and writes straight into the requested layout (no separate .contiguous() copy).
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=fmt)
    return torch.addcmul(shift, x, scale, out=out)
