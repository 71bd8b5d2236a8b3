"""Loader (official format, md5, safety, errors) and the batched augmentation."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import resnet_lib as rl
from resnet_tools import dataset, errors
from conftest import write_cifar
from resnet_tools import cifarfiles
from resnet_tools.safeio import file_md5
from resnet_tools.augment import augment, cutout, normalize


def test_loads_official_layout_as_uint8_tensors(cifar_dir):
    expected = r"not the official CIFAR-10 \(md5 differs\): 200 training and 100 test images"
    with pytest.warns(UserWarning, match=expected) as w:
        data = rl.load_cifar10(cifar_dir, download=False)
    assert w[0].filename == __file__  # the warning points at the caller's line, not inside the loader
    assert data.train_x.shape == (200, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (100, 3, 32, 32) and data.test_y.dtype == torch.int64
    assert not data.official
    # channel-major rows: the first 1024 bytes of a row are the red plane
    raw = pickle.load(open(cifar_dir / cifarfiles.CIFAR10_FOLDER / "data_batch_1", "rb"))
    assert np.array_equal(data.train_x[0, 0].numpy().ravel(), raw["data"][0, :1024])
    assert data.train_y[:40].tolist() == raw["labels"]


def test_official_md5_means_no_warning(cifar_dir, monkeypatch):
    folder = cifar_dir / cifarfiles.CIFAR10_FOLDER
    monkeypatch.setattr(
        cifarfiles, "CIFAR10_TRAIN_MD5", {f"data_batch_{i}": file_md5(folder / f"data_batch_{i}") for i in range(1, 6)}
    )
    monkeypatch.setattr(cifarfiles, "CIFAR10_TEST_MD5", {"test_batch": file_md5(folder / "test_batch")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = rl.load_cifar10(cifar_dir, download=False)
    assert data.official


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_restricted_unpickler_refuses_code_and_runs_nothing(cifar_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = cifar_dir / cifarfiles.CIFAR10_FOLDER / "data_batch_3"
    with open(path, "wb") as f:
        pickle.dump({"data": Evil(), "labels": [0]}, f)
    with pytest.raises(errors.DataError, match=r"data_batch_3.*'posix.system' is not allowed"):
        rl.load_cifar10(cifar_dir, download=False)
    assert not (tmp_path / "pwned").exists()


def test_truncated_file_names_the_file(cifar_dir):
    path = cifar_dir / cifarfiles.CIFAR10_FOLDER / "test_batch"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(errors.DataError, match=r"test_batch: truncated or corrupt"):
        rl.load_cifar10(cifar_dir, download=False)


def test_missing_data_without_download_says_where_and_how(tmp_path):
    with pytest.raises(errors.DataError) as e:
        rl.load_cifar10(tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / cifarfiles.CIFAR10_FOLDER) in msg and "--data-dir" in msg and "DATA_DIR" in msg


def test_offline_download_fails_clearly(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(errors.DataError, match=r"(?s)could not download CIFAR-10 .*name resolution.*--data-dir") as e:
        rl.load_cifar10(tmp_path, download=True)
    assert e.value.__cause__ is None and e.value.__suppress_context__  # one message, no chained traceback


def test_download_uses_official_url_and_md5(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    calls = []

    def fake(url, root, md5=None):
        calls.append((url, md5))
        write_cifar(Path(root))

    monkeypatch.setattr(tvu, "download_and_extract_archive", fake)
    with pytest.warns(UserWarning):
        data = rl.load_cifar10(tmp_path, download=True)
    assert calls == [(cifarfiles.CIFAR10_URL, "c58f30108f718f92721af3b95e74349a")]
    assert len(data.train_y) == 200


def test_data_dir_environment_variable(cifar_dir, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(cifar_dir))
    assert rl.default_data_dir() == cifar_dir
    with pytest.warns(UserWarning):
        assert len(rl.load_cifar10(download=False).test_y) == 100


def test_channel_stats_match_numpy():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = dataset.channel_stats(x, chunk=7)
    ref = x.numpy().astype(np.float64) / 255
    assert np.allclose(mean, ref.mean(axis=(0, 2, 3)))
    assert np.allclose(std, ref.std(axis=(0, 2, 3)))


def test_flip_really_flips_and_crop_is_a_shifted_window():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    flipped = augment(x, g, crop=False, flip=True)
    same = [torch.equal(a, b) for a, b in zip(flipped, x)]
    mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(flipped, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 10 < sum(mirrored) < 54  # about half

    g = torch.Generator().manual_seed(1)
    cropped = augment(x, g, crop=True, flip=False)
    assert cropped.shape == x.shape and cropped.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):  # every output is some 32x32 window of the zero-padded image
        windows = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(padded[i, :, dy : dy + 32, dx : dx + 32], cropped[i])]
        assert windows, i


def test_crop_offsets_cover_the_range_and_stay_in_bounds():
    x = torch.full((2000, 1, 32, 32), 255, dtype=torch.uint8)
    out = augment(x, torch.Generator().manual_seed(0), crop=True, flip=False)
    # zero rows/cols from the padding: at most 4 on any side
    rows_zero = (out[:, 0].amax(dim=2) == 0).sum(1)
    cols_zero = (out[:, 0].amax(dim=1) == 0).sum(1)
    assert rows_zero.max() == 4 and cols_zero.max() == 4
    assert (rows_zero == 0).any()
    assert set(rows_zero.tolist()) == {0, 1, 2, 3, 4}


def test_augment_is_reproducible_from_the_generator():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(200, 3, 32, 32)
    out = cutout(x, 8, torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert zeros.max() == 64 and zeros.min() >= 16  # full square inside, clipped at a corner
    assert torch.equal((out == 0).all(1), (out[:, :1] == 0).all(1))  # same square in every channel


def test_normalize_uses_mean_and_std():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    ref = (x.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(normalize(x, mean, std), ref, atol=1e-5)
