"""Shared fixtures: small synthetic CIFAR-10 folders in the official python format.

The tests never need the real dataset: they write what they need into tmp_path.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import resnet_lib as rl  # noqa: E402
from resnet_tools.dataset import CLASSES  # noqa: E402
from resnet_tools import cifarfiles  # noqa: E402

# Ten clearly different colours, one per class: a toy set that a model separates in a
# few epochs, even through random crops and flips.
PALETTE = np.array(
    [[230, 25, 25], [25, 230, 25], [25, 25, 230], [230, 230, 25], [230, 25, 230],
     [25, 230, 230], [240, 240, 240], [15, 15, 15], [128, 64, 0], [0, 128, 128]],
    dtype=np.float64,
)


def synthetic_images(labels: np.ndarray, rng: np.random.Generator, noise: float = 30.0) -> np.ndarray:
    """uint8 (N, 3072) channel-major rows: class colour plus Gaussian noise."""
    n = len(labels)
    img = PALETTE[labels][:, :, None] + rng.normal(0, noise, size=(n, 3, 1024))
    return np.clip(img, 0, 255).astype(np.uint8).reshape(n, 3072)


def write_batch(path: Path, data: np.ndarray, labels, batch_label: str = "synthetic") -> None:
    with open(path, "wb") as f:
        pickle.dump({"batch_label": batch_label, "labels": list(map(int, labels)), "data": data}, f, protocol=4)


def write_cifar(root: Path, per_batch: int = 40, n_test: int = 100, seed: int = 0, noise: float = 30.0) -> Path:
    """Write data_batch_1..5, test_batch and batches.meta under root/cifar-10-batches-py."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / cifarfiles.CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        labels = rng.integers(0, 10, per_batch)
        write_batch(
            folder / f"data_batch_{i}", synthetic_images(labels, rng, noise), labels, f"training batch {i} of 5"
        )
    labels = rng.integers(0, 10, n_test)
    write_batch(folder / "test_batch", synthetic_images(labels, rng, noise), labels, "testing batch 1 of 1")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CLASSES), "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return Path(root)


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    """A synthetic CIFAR-10 folder: 200 training and 100 test images."""
    return write_cifar(tmp_path / "cifar")


@pytest.fixture
def cifar(cifar_dir: Path) -> rl.CIFAR10:
    with pytest.warns(UserWarning, match="not the official CIFAR-10"):
        return rl.load_cifar10(cifar_dir, download=False)


def tiny_config(**overrides) -> rl.TrainConfig:
    """A seconds-long CPU configuration, in fp32: bf16=None (auto) would differ between processors
    with and without native bf16, and the suite must compute the same on every machine."""
    base = dict(model="lite", epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.5, device="cpu", seed=0, bf16=False)
    base.update(overrides)
    return rl.TrainConfig.from_recipe("modern", **base)


def fit_interrupted(monkeypatch, model, data, cfg, checkpoint, epoch: int = 2, step: int = 2) -> None:
    """rl.fit killed part-way: the batch iterator of epoch `epoch` (1-based) raises KeyboardInterrupt
    after `step` steps, so `checkpoint` holds the last completed epoch (epochs=1 would change the schedule)."""
    real_batches = rl._batches
    epochs_started = []

    def interrupted(*a, **k):
        epochs_started.append(1)
        for i, batch in enumerate(real_batches(*a, **k)):
            if len(epochs_started) == epoch and i == step:
                raise KeyboardInterrupt
            yield batch

    with monkeypatch.context() as m:
        m.setattr(rl, "_batches", interrupted)
        with pytest.raises(KeyboardInterrupt):
            rl.fit(model, data, cfg, checkpoint=checkpoint, progress=False)
