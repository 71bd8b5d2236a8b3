"""CIFAR-10 in memory: the class names, the `CIFAR10` container every loader returns
(resnet_tools.cifarfiles, resnet_tools.imagefolder, resnet_lib.load_cifar10) and `channel_stats`.
Imports torch only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class CIFAR10:
    """CIFAR-10 in memory: uint8 images (N, 3, 32, 32) and int64 labels, as CPU tensors."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    root: str = ""
    official: bool = True  # every file matched its official md5
    classes: tuple[str, ...] = CLASSES
    # Which data this is, in results and tables: "CIFAR-10 (official)", "CIFAR-10 (JPEG copy)",
    # "image folder: NAME", "non-official CIFAR-10 files: NAME", or "subset of ..." after head().
    label: str = "in-memory data"
    _stats: tuple[tuple[float, ...], tuple[float, ...]] | None = field(default=None, init=False, repr=False)
    _fingerprint: dict[str, Any] | None = field(default=None, init=False, repr=False)

    @property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel of all training images (validation split included:
        pixel statistics carry no label information), computed once with channel_stats."""
        if self._stats is None:
            self._stats = channel_stats(self.train_x)
        return self._stats

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Which data this is, for checkpoints: label, root, counts and a SHA-256 of the training
        (and of the test) images and labels, computed once. A run resumed on other data is refused."""
        if self._fingerprint is None:

            def sha256(*tensors: torch.Tensor) -> str:
                h = hashlib.sha256()
                for t in tensors:
                    h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
                return h.hexdigest()

            self._fingerprint = {
                "label": self.label,
                "root": str(self.root),
                "n_train": len(self.train_y),
                "n_test": len(self.test_y),
                "train_sha256": sha256(self.train_x, self.train_y),
                "test_sha256": sha256(self.test_x, self.test_y),
            }
        return self._fingerprint

    def head(self, n_train: int, n_test: int) -> "CIFAR10":
        """n_train training and n_test test images spread evenly over each split (every k-th; smoke
        runs), labelled a subset: every class is in it even where files load sorted by class."""
        label = self.label if self.label.startswith("subset of ") else f"subset of {self.label}"

        def spread(n: int, total: int) -> torch.Tensor:  # n indices, evenly spaced over 0..total-1
            return torch.arange(total) if n >= total else torch.arange(n) * total // n

        tr, te = spread(n_train, len(self.train_y)), spread(n_test, len(self.test_y))
        return CIFAR10(
            self.train_x[tr],
            self.train_y[tr],
            self.test_x[te],
            self.test_y[te],
            root=self.root,
            official=self.official,
            classes=self.classes,
            label=label,
        )

    def __repr__(self) -> str:
        return f"CIFAR10({len(self.train_y):,} train, {len(self.test_y):,} test, {self.label}, root={self.root!r})"


def channel_stats(x: torch.Tensor, chunk: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, 3, H, W), pixels scaled to [0, 1].

    Accumulates sums in float64 over chunks, so the full training set needs little memory.
    """
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for i in range(0, len(x), chunk):
        b = x[i : i + chunk].to(torch.float64) / 255.0
        total += b.sum(dim=(0, 2, 3))
        total_sq += (b * b).sum(dim=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = total / n
    std = (total_sq / n - mean * mean).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
