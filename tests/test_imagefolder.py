"""Image-folder datasets (train/<class>/*, test/<class>/*): layout, pixels, cache, errors, labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import resnet_lib as rl
from resnet_tools.dataset import CLASSES as CIFAR10_CLASSES
from resnet_tools import errors
from resnet_tools import imagefolder as imf

# Deliberately not in sorted order, so the tests see the loader sort them.
CLASSES = ("dog", "ape", "cat")
COLOURS = {"ape": (200, 30, 30), "cat": (30, 200, 30), "dog": (30, 30, 200)}
# Names whose sorted order ("10", "a", "b", "c") differs from the order they are written in.
TRAIN_NAMES = ("b", "a", "10", "c")
TEST_NAMES = ("y", "x")


def noisy(colour, seed: int) -> np.ndarray:
    """A 32x32 RGB image: the class colour plus noise, so a transposed layout cannot pass."""
    rng = np.random.default_rng(seed)
    img = np.asarray(colour, dtype=np.int16) + rng.integers(-25, 26, size=(32, 32, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_folder(root: Path, suffix: str = ".png", classes=CLASSES) -> dict[Path, np.ndarray]:
    """3 classes x 4 train + 2 test images; returns {path: HWC pixels written}."""
    written = {}
    seed = 0
    for split, names in (("train", TRAIN_NAMES), ("test", TEST_NAMES)):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for name in names:
                seed += 1
                path = folder / f"{name}{suffix}"
                pixels = noisy(COLOURS[c], seed)
                Image.fromarray(pixels).save(path, quality=95)
                written[path] = pixels
    return written


def load(root, **kw):
    kw.setdefault("progress", False)
    return imf.load_image_folder(root, **kw)


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def decode_fails(monkeypatch):
    def boom(paths):
        raise AssertionError("decoded although the cache should have been used")

    monkeypatch.setattr(imf, "_decode_chunk", boom)


@pytest.fixture
def png_root(tmp_path) -> tuple[Path, dict[Path, np.ndarray]]:
    root = tmp_path / "toy"
    return root, make_folder(root)


# ---------------------------------------------------------------------------------------
# Layout, labels, pixels
# ---------------------------------------------------------------------------------------
def test_layout_labels_and_exact_png_pixels(png_root):
    root, written = png_root
    data = load(root)
    assert data.classes == ("ape", "cat", "dog")
    assert data.train_x.shape == (12, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    assert data.train_x.dtype == np.uint8 and data.train_x.flags.c_contiguous and data.test_x.flags.c_contiguous
    assert data.train_y.dtype == np.int64 and data.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.label == "image folder: toy"
    assert len(data.fingerprint) == 64 and int(data.fingerprint, 16) >= 0
    # Classes in order, files sorted by name within a class, pixels channel-major and exact.
    for split, x, names in (("train", data.train_x, TRAIN_NAMES), ("test", data.test_x, TEST_NAMES)):
        expected = [written[root / split / c / f"{n}.png"] for c in data.classes for n in sorted(names)]
        assert len(expected) == len(x)
        for img, ref in zip(x, expected):
            assert np.array_equal(img, ref.transpose(2, 0, 1))


def test_parallel_decode_matches_in_process_and_reports_bad_files(png_root, tmp_path, monkeypatch):
    root, _ = png_root
    serial = load(root, cache_dir=tmp_path / "c1", workers=1)
    monkeypatch.setattr(imf, "_PARALLEL_MIN", 1)  # force the process pool on 18 files
    parallel = load(root, cache_dir=tmp_path / "c2", workers=2)
    assert np.array_equal(serial.train_x, parallel.train_x) and np.array_equal(serial.test_x, parallel.test_x)
    bad = root / "test" / "cat" / "x.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(errors.DataError, match=r"x\.png: cannot read the image") as e:
        load(root, cache_dir=tmp_path / "c3", workers=2)
    assert str(bad) in str(e.value) and e.value.__cause__ is None  # one line, no remote traceback chained


def test_jpeg_uppercase_suffix_and_non_images_ignored(tmp_path):
    root = tmp_path / "shots"
    make_folder(root, suffix=".JPG")
    (root / "train" / "ape" / "notes.txt").write_text("not an image")
    (root / "train" / "ape" / ".DS_Store").write_bytes(b"\0\1")
    (root / "train" / "ape" / "folder.jpg").mkdir()  # a folder with an image suffix is not an image
    Image.fromarray(noisy(COLOURS["ape"], 99)).save(root / "train" / "ape" / "z.jpeg")
    data = load(root)
    assert data.train_y.tolist() == [0] * 5 + [1] * 4 + [2] * 4
    # JPEG is lossy: check each image's mean colour is its class colour
    for img, y in zip(data.train_x, data.train_y):
        mean = img.reshape(3, -1).mean(axis=1)
        assert np.abs(mean - COLOURS[data.classes[y]]).max() < 6, (mean, y)


def test_grayscale_rgba_and_palette_become_rgb(tmp_path):
    root = tmp_path / "modes"
    make_folder(root)
    ape = root / "train" / "ape"
    Image.new("L", (32, 32), 77).save(ape / "a.png")
    Image.new("RGBA", (32, 32), (10, 20, 30, 0)).save(ape / "b.png")  # fully transparent: alpha dropped
    pal = Image.new("P", (32, 32), 1)
    pal.putpalette([0, 0, 0, 140, 150, 160] + [0] * 762)
    pal.save(ape / "c.png")
    x = load(root).train_x  # ape is class 0: its sorted files are 10, a, b, c
    assert np.all(x[1] == 77)
    assert np.array_equal(x[2][:, 0, 0], [10, 20, 30]) and np.all(x[2] == x[2][:, :1, :1])
    assert np.array_equal(x[3][:, 5, 7], [140, 150, 160]) and np.all(x[3] == x[3][:, :1, :1])


# ---------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------
def test_cache_written_beside_the_data_and_reused(png_root, monkeypatch):
    root, _ = png_root
    before = {p for p in tree(root) if p.startswith(("train", "test"))}
    first = load(root)
    cache = root / ".cache" / f"cifar-cache-{first.fingerprint[:16]}.npz"
    assert cache.is_file() and [p.name for p in (root / ".cache").iterdir()] == [cache.name]  # no temp file left
    assert {p for p in tree(root) if p.startswith(("train", "test"))} == before  # nothing written in train/, test/
    decode_fails(monkeypatch)
    second = load(root)
    assert second.fingerprint == first.fingerprint and second.classes == first.classes
    for a, b in zip(first[:4], second[:4]):
        assert np.array_equal(a, b) and a.dtype == b.dtype
    assert second.train_x.flags.c_contiguous and second.test_x.flags.c_contiguous


def test_cache_invalidated_by_an_added_or_edited_file(png_root, monkeypatch):
    root, _ = png_root
    first = load(root)
    calls = []
    real = imf._decode_chunk
    monkeypatch.setattr(imf, "_decode_chunk", lambda paths: calls.append(len(paths)) or real(paths))
    Image.fromarray(noisy(COLOURS["cat"], 500)).save(root / "train" / "cat" / "d.png")
    added = load(root)
    assert calls and added.fingerprint != first.fingerprint and len(added.train_y) == 13
    assert added.train_y.tolist() == [0] * 4 + [1] * 5 + [2] * 4
    assert (root / ".cache" / f"cifar-cache-{added.fingerprint[:16]}.npz").is_file()
    calls.clear()
    edited = root / "test" / "dog" / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(edited)
    st = edited.stat()
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a distinct mtime even on coarse clocks
    changed = load(root)
    assert calls and changed.fingerprint != added.fingerprint
    assert np.all(changed.test_x[-2] == 0) and not np.all(changed.test_x[-1] == 0)  # dog: x.png, then y.png


def test_corrupt_cache_is_ignored_and_rewritten(png_root, monkeypatch):
    root, _ = png_root
    first = load(root)
    cache = root / ".cache" / f"cifar-cache-{first.fingerprint[:16]}.npz"
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated, e.g. by a full disk elsewhere
    with pytest.warns(UserWarning, match=r"unreadable image cache.*decoding the images again"):
        again = load(root)
    assert np.array_equal(again.train_x, first.train_x)
    decode_fails(monkeypatch)  # the rewritten cache is good again
    assert np.array_equal(load(root).test_x, first.test_x)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cache_with_a_pickle_or_wrong_content_is_never_trusted(png_root, tmp_path, monkeypatch):
    root, _ = png_root
    monkeypatch.chdir(tmp_path)
    first = load(root)
    cache = root / ".cache" / f"cifar-cache-{first.fingerprint[:16]}.npz"
    with open(cache, "wb") as f:
        np.savez(f, train_x=np.array([Evil()], dtype=object), test_x=first.test_x,
                 fingerprint=np.array(first.fingerprint), classes=np.array(first.classes))
    assert b"posix" in cache.read_bytes() or b"system" in cache.read_bytes()
    with pytest.warns(UserWarning, match="unreadable image cache"):
        assert np.array_equal(load(root).train_x, first.train_x)
    assert not (tmp_path / "pwned").exists()
    # Right name and fingerprint, wrong shape (say, written by a buggy tool): silently decoded again.
    np.savez(cache, train_x=first.train_x[:3], test_x=first.test_x, fingerprint=np.array(first.fingerprint),
             classes=np.array(first.classes))
    assert load(root).train_x.shape == (12, 3, 32, 32)
    with np.load(cache, allow_pickle=False) as z:
        assert z["train_x"].shape == (12, 3, 32, 32)  # and rewritten


def test_cache_dir_argument_and_fallbacks(png_root, tmp_path, monkeypatch):
    root, _ = png_root
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    data = load(root, cache_dir=tmp_path / "given")
    assert (tmp_path / "given" / f"cifar-cache-{data.fingerprint[:16]}.npz").is_file()
    assert not (root / ".cache").exists() and not home.exists()
    # root/.cache cannot be a folder (it is a file: as a read-only root would, even for root users)
    (root / ".cache").write_text("in the way")
    load(root)
    assert (home / ".cache" / "compact-resnets" / f"cifar-cache-{data.fingerprint[:16]}.npz").is_file()
    decode_fails(monkeypatch)
    assert np.array_equal(load(root).train_x, data.train_x)  # found again in the home folder
    monkeypatch.undo()
    # An unwritable cache_dir: no cache, no error.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    assert load(root, cache_dir=blocked / "sub").train_x.shape == (12, 3, 32, 32)


# ---------------------------------------------------------------------------------------
# Errors: one line, naming the file or folder
# ---------------------------------------------------------------------------------------
def test_missing_split_and_no_class_folders(png_root, tmp_path):
    root, _ = png_root
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(errors.DataError, match=r"test: folder missing.*train/<class>/\*\.jpg\|png") as e:
        load(empty)
    assert str(empty / "test") in str(e.value)
    (empty / "test").mkdir()
    (empty / "train" / "loose.png").write_bytes(b"")
    with pytest.raises(errors.DataError, match=r"train: no class folders"):
        load(empty)


def test_empty_class_folder_names_it_and_the_accepted_suffixes(png_root):
    root, _ = png_root
    folder = root / "test" / "ape"
    for p in folder.iterdir():
        p.unlink()
    (folder / "readme.txt").write_text("")
    (folder / "img.bmp").write_bytes(b"BM")
    with pytest.raises(errors.DataError) as e:
        load(root)
    msg = str(e.value)
    assert msg.startswith(str(folder)) and "no image files" in msg and ".png, .jpg, .jpeg" in msg and "\n" not in msg


def test_train_and_test_with_different_classes(png_root):
    root, _ = png_root
    (root / "test" / "ape").rename(root / "test" / "eel")
    (root / "test" / "fox").mkdir()
    with pytest.raises(errors.DataError, match=r"different classes: only in train/: ape; only in test/: eel, fox"):
        load(root)


@pytest.mark.parametrize("content, reason", [
    (b"garbage, not a PNG", "cannot identify image file"),
    ("truncated", "truncated|broken|Truncated"),
])
def test_unreadable_image_names_the_file_and_the_reason(png_root, content, reason):
    root, _ = png_root
    bad = root / "train" / "dog" / "a.png"
    if content == "truncated":
        content = bad.read_bytes()[:200]
    bad.write_bytes(content)
    with pytest.raises(errors.DataError, match=rf"cannot read the image .*({reason})") as e:
        load(root)
    assert str(e.value).startswith(f"{bad}: ")


def test_wrong_size_names_the_file_and_the_size(png_root):
    root, _ = png_root
    bad = root / "test" / "cat" / "y.png"
    Image.new("RGB", (31, 32)).save(bad)
    with pytest.raises(errors.DataError, match=r"y\.png: image is 31x32 pixels, expected 32x32") as e:
        load(root)
    assert str(bad) in str(e.value)


def test_symlink_loop_and_broken_link_are_named(png_root):
    root, _ = png_root
    loop = root / "train" / "zebra"
    loop.symlink_to(loop)
    assert imf.is_image_folder(root)  # so the loader, not a fallback, reports the problem
    with pytest.raises(errors.DataError, match=r"zebra: cannot follow the link \(Too many levels of symbolic links\)"):
        load(root)
    loop.unlink()
    broken = root / "train" / "cat" / "gone.png"
    broken.symlink_to(root / "nowhere.png")
    with pytest.raises(errors.DataError, match=r"gone\.png: cannot read the file \(No such file or directory\)"):
        load(root)


# ---------------------------------------------------------------------------------------
# Detection and labels
# ---------------------------------------------------------------------------------------
def test_is_image_folder(png_root, tmp_path, cifar_dir):
    root, _ = png_root
    assert imf.is_image_folder(root) and imf.is_image_folder(str(root))
    assert not imf.is_image_folder(tmp_path / "nowhere")
    assert not imf.is_image_folder(cifar_dir)  # the official python layout
    only_files = tmp_path / "flat"
    for split in ("train", "test"):
        (only_files / split).mkdir(parents=True)
        (only_files / split / "a.png").write_bytes(b"")
    assert not imf.is_image_folder(only_files)
    (only_files / "train" / "cls").mkdir()
    assert not imf.is_image_folder(only_files)  # test/ still has no class folder
    (only_files / "test" / "cls").mkdir()
    assert imf.is_image_folder(only_files)


def test_dataset_label_is_cifar_jpeg_copy_only_for_the_exact_case():
    cifar = CIFAR10_CLASSES
    assert imf.dataset_label(cifar, 50_000, 10_000, {".jpg"}, "x") == "CIFAR-10 (JPEG copy)"
    assert imf.dataset_label(list(cifar), 50_000, 10_000, [".JPEG", ".jpg"], "x") == "CIFAR-10 (JPEG copy)"
    assert imf.dataset_label(cifar, 50_000, 10_000, {".png"}, "cifar10-png") == "image folder: cifar10-png"
    assert imf.dataset_label(cifar, 50_000, 10_000, {".jpg", ".png"}, "mixed") == "image folder: mixed"
    assert imf.dataset_label(cifar, 49_999, 10_000, {".jpg"}, "short") == "image folder: short"
    assert imf.dataset_label(cifar, 50_000, 9_000, {".jpg"}, "short") == "image folder: short"
    assert imf.dataset_label(cifar, 90_000, 90_000, {".png"}, "CINIC-10") == "image folder: CINIC-10"
    assert imf.dataset_label(cifar[:9], 50_000, 10_000, {".jpg"}, "nine") == "image folder: nine"
    renamed = ("plane",) + cifar[1:]
    assert imf.dataset_label(renamed, 50_000, 10_000, {".jpg"}, "renamed") == "image folder: renamed"
    assert imf.dataset_label(cifar, 50_000, 10_000, set(), "none") == "image folder: none"


def test_small_cifar_named_jpeg_folder_is_not_labelled_the_jpeg_copy(tmp_path):
    root = tmp_path / "cifar-subset"
    for split in ("train", "test"):
        for c in CIFAR10_CLASSES:
            (root / split / c).mkdir(parents=True)
            Image.new("RGB", (32, 32), (1, 2, 3)).save(root / split / c / "0.jpg")
    data = load(root)
    assert data.classes == CIFAR10_CLASSES and data.train_y.tolist() == list(range(10))
    assert data.label == "image folder: cifar-subset"


def test_load_cifar10_reads_an_image_folder(tmp_path):
    """--data-dir / DATA_DIR accept an image folder: the same CIFAR10 object, labelled by its folder."""
    names = [f"c{i}" for i in range(10)]
    for split, n in (("train", 2), ("test", 1)):
        for i, name in enumerate(names):
            folder = tmp_path / "imgs" / split / name
            folder.mkdir(parents=True)
            for k in range(n):
                Image.new("RGB", (32, 32), (20 * i, k, 0)).save(folder / f"{k}.png")
    data = rl.load_cifar10(tmp_path / "imgs", download=False)
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (10, 3, 32, 32)
    assert data.classes == tuple(names) and data.label == "image folder: imgs" and not data.official
    assert data.train_y.tolist() == [i for i in range(10) for _ in range(2)]
    assert int(data.train_x[2, 0, 0, 0]) == 20  # class c1's red channel
    small = data.head(5, 5)  # files load sorted by class: a subset spreads over all of them
    assert small.label == "subset of image folder: imgs"
    assert small.train_y.tolist() == [0, 2, 4, 6, 8] and small.test_y.tolist() == [0, 2, 4, 6, 8]


def test_load_cifar10_refuses_an_image_folder_without_ten_classes(tmp_path):
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(tmp_path / split / name / "a.png")
    with pytest.raises(errors.DataError, match=r"2 class folders \(cat, dog\); the models need exactly 10"):
        rl.load_cifar10(tmp_path, download=False)
