"""Image folders you can trust: a cache keyed by content, correct pixels for every mode Pillow opens,
EXIF orientation, files that are not loaded named, class names that are not CIFAR-10's announced."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps, features

import resnet_lib as rl
from resnet_tools.dataset import CLASSES
from resnet_tools import errors
from resnet_tools import imagefolder as imf


def pixels(seed: int, shape=(32, 32, 3), high: int = 256, dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(dtype)


def load(root, **kw):
    kw.setdefault("progress", False)
    return imf.load_image_folder(root, **kw)


def quiet_load(root, **kw):
    """load(), with any warning (Pillow's included) an error: the cases below must load silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load(root, **kw)


def uncompressed_folder(root: Path, classes=("ape", "cat"), per_class=(2, 1)) -> None:
    """Uncompressed PNGs: every 32x32 RGB file has the same byte size (3,172), whatever its pixels."""
    seed = 0
    for split, n in zip(("train", "test"), per_class):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                seed += 1
                Image.fromarray(pixels(seed)).save(root / split / c / f"{k}.png", compress_level=0)


def single_image_folder(root: Path, write) -> Path:
    """One class, a; train/a/ holds the file write(folder) returns, test/a/ one plain RGB image."""
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
    Image.fromarray(pixels(0)).save(root / "test" / "a" / "0.png")
    return write(root / "train" / "a")


# ---------------------------------------------------------------------------------------
# 1. The cache follows the content of the files, not their size and mtime
# ---------------------------------------------------------------------------------------
def test_same_size_replacement_with_its_mtime_put_back_invalidates_the_cache(tmp_path):
    root = tmp_path / "toy"
    uncompressed_folder(root)
    first = load(root)
    victim = root / "test" / "cat" / "0.png"
    st = victim.stat()
    new = pixels(999)
    Image.fromarray(new).save(victim, compress_level=0)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns) == (3172, st.st_mtime_ns)
    again = load(root)
    assert again.fingerprint != first.fingerprint
    assert np.array_equal(again.test_x[1], new.transpose(2, 0, 1))  # test: ape/0.png, cat/0.png
    assert np.array_equal(again.test_x[0], first.test_x[0]) and np.array_equal(again.train_x, first.train_x)


def test_a_new_mtime_alone_keeps_the_cache(tmp_path, monkeypatch):
    root = tmp_path / "toy"
    uncompressed_folder(root)
    first = load(root)
    touched = root / "train" / "ape" / "1.png"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    def boom(paths):
        raise AssertionError("decoded although no file's content changed")

    monkeypatch.setattr(imf, "_decode_chunk", boom)
    again = load(root)
    assert again.fingerprint == first.fingerprint and np.array_equal(again.train_x, first.train_x)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_replaced_after_hashing_is_an_error_not_a_cache(tmp_path, monkeypatch, workers):
    root = tmp_path / "toy"
    uncompressed_folder(root)
    victim = root / "train" / "cat" / "1.png"
    real = imf._decode_all

    def replace_then_decode(*args, **kw):  # after the cache key was computed, before decoding
        Image.fromarray(pixels(12345)).save(victim, compress_level=0)
        return real(*args, **kw)

    monkeypatch.setattr(imf, "_decode_all", replace_then_decode)
    monkeypatch.setattr(imf, "_PARALLEL_MIN", 1)  # workers=2: the check also holds for the process pool
    with pytest.raises(errors.DataError, match=r"1\.png: the file changed while the folder was being loaded") as e:
        load(root, cache_dir=tmp_path / "cache", workers=workers)
    assert str(victim) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.npz"))  # nothing cached


# ---------------------------------------------------------------------------------------
# 2. Pixels for every mode Pillow opens: alpha dropped (colour channels as stored), 16 bits -> high byte
# ---------------------------------------------------------------------------------------
def png_rgb16(path: Path, samples: np.ndarray) -> Path:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one): grey samples in all three channels."""
    rgb = np.repeat(samples[:, :, None], 3, axis=2).astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in rgb)  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", samples.shape[1], samples.shape[0], 16, 2, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def palette(info_transparency=None) -> Image.Image:
    img = Image.fromarray(pixels(3, (32, 32), high=16), "L").convert("P")
    img.putpalette(pixels(4, (256 * 3,)).tolist())
    if info_transparency is not None:
        img.info["transparency"] = info_transparency
    return img


# mode name -> (image written, file name, save options); each file is loaded and checked against its reference
MODES = {
    "1": (lambda: Image.fromarray(pixels(1, (32, 32), high=2).astype(bool)), "x.png", {}),
    "L": (lambda: Image.fromarray(pixels(1, (32, 32)), "L"), "x.png", {}),
    "L+tRNS": (lambda: Image.fromarray(pixels(1, (32, 32)), "L"), "x.png", {"transparency": 7}),
    "LA": (lambda: Image.fromarray(pixels(2, (32, 32, 2)), "LA"), "x.png", {}),
    "P": (lambda: palette(), "x.png", {}),
    "P+transparent index": (lambda: palette(3), "x.png", {}),
    "P+alpha per entry": (lambda: palette(bytes(pixels(5, (256,)))), "x.png", {}),
    "RGB": (lambda: Image.fromarray(pixels(6)), "x.png", {}),
    "RGBA": (lambda: Image.fromarray(pixels(7, (32, 32, 4)), "RGBA"), "x.png", {}),
    "CMYK": (lambda: Image.fromarray(pixels(8, (32, 32, 4)), "CMYK"), "x.jpg", {"quality": 95}),
    # exact: libwebp would otherwise rewrite the colour under alpha 0
    "RGBA webp": (lambda: Image.fromarray(pixels(9, (32, 32, 4)), "RGBA"), "x.webp", {"lossless": 1, "exact": 1}),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_8bit_modes_match_convert_rgb_with_alpha_dropped(tmp_path, mode):
    make, name, options = MODES[mode]
    if name.endswith(".webp") and not features.check("webp"):
        pytest.skip("this Pillow reads no WebP")
    img = make()

    def write(folder):
        img.save(folder / name, **options)
        return folder / name

    path = single_image_folder(tmp_path / "m", write)
    with Image.open(path) as reopened:
        assert reopened.mode == mode.split("+")[0].split()[0]  # the file really holds this mode
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # P with alpha bytes: Pillow suggests RGBA; RGB's values are the same
            reference = np.asarray(reopened.convert("RGB"))
    if mode in ("LA", "RGBA", "RGBA webp"):  # dropped, not composited: the stored colour even where alpha is 0
        stored = np.asarray(img)[:, :, :-1]
        assert np.array_equal(reference, np.repeat(stored, 3, axis=2) if mode == "LA" else stored)
    x = quiet_load(tmp_path / "m").train_x
    assert np.array_equal(x[0], reference.transpose(2, 0, 1)), mode


def test_16bit_grey_keeps_the_high_byte_as_pillow_does_for_16bit_colour(tmp_path):
    samples = pixels(11, (32, 32), high=65536, dtype=np.uint16)
    samples[0, :4] = [0, 255, 256, 65535]  # <256 becomes 0, not clipped to 255 as convert("RGB") would

    def write(folder):
        Image.fromarray(samples).save(folder / "grey16.png")
        png_rgb16(folder / "rgb16.png", samples)
        return folder / "grey16.png"

    path = single_image_folder(tmp_path / "m", write)
    with Image.open(path) as grey, Image.open(path.with_name("rgb16.png")) as rgb16:
        assert grey.mode == "I;16" and rgb16.mode == "RGB"
        pillow_reduction = np.asarray(rgb16.convert("RGB"))  # Pillow's own 16 -> 8 bits for colour PNGs
    expected = np.repeat((samples >> 8).astype(np.uint8)[None], 3, axis=0)
    assert np.array_equal(pillow_reduction.transpose(2, 0, 1), expected)
    x = quiet_load(tmp_path / "m").train_x  # sorted: grey16.png, rgb16.png
    assert np.array_equal(x[0], expected) and np.array_equal(x[1], expected)
    assert x[0][0, 0, :4].tolist() == [0, 0, 1, 255]


def test_32bit_and_float_images_are_scaled_or_refused(tmp_path):
    """Pillow opens any format whatever the suffix: a TIFF named .png can hold mode I or F."""
    samples = pixels(12, (32, 32), high=65536, dtype=np.int32)

    def write(folder):
        Image.fromarray(samples, "I").save(folder / "i.png", format="TIFF")
        return folder / "i.png"

    path = single_image_folder(tmp_path / "i", write)
    with Image.open(path) as img:
        assert img.mode == "I"
    expected = np.repeat((samples >> 8).astype(np.uint8)[None], 3, axis=0)
    assert np.array_equal(quiet_load(tmp_path / "i").train_x[0], expected)
    Image.fromarray(samples * 2**15, "I").save(path, format="TIFF")
    with pytest.raises(errors.DataError, match=r"i\.png: 32-bit image \(mode I\) with values outside 0-65535"):
        load(tmp_path / "i")
    Image.fromarray(samples.astype(np.float32) / 65535, "F").save(path, format="TIFF")
    with pytest.raises(errors.DataError, match=r"i\.png: floating-point image \(mode F\) has no 0-255 scale") as e:
        load(tmp_path / "i")
    assert str(e.value).startswith(str(path))


# ---------------------------------------------------------------------------------------
# 3. EXIF orientation applied; files that are not loaded named; WebP read
# ---------------------------------------------------------------------------------------
# EXIF orientation tag (0x0112) -> what displaying the stored pixels means (EXIF 2.32, section 4.6.4 A)
ORIENTED = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", list(ORIENTED))
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_applied(tmp_path, orientation, suffix):
    stored = np.zeros((32, 32, 3), np.uint8)
    stored[:8, :, 0] = 250  # red top rows, green left columns: every orientation looks different
    stored[:, :8, 1] = 250
    stored[20:, 24:, 2] = 250

    def write(folder):
        exif = Image.Exif()
        exif[0x0112] = orientation
        options = {"quality": 95} if suffix == ".jpg" else {}
        Image.fromarray(stored).save(folder / f"x{suffix}", exif=exif, **options)
        return folder / f"x{suffix}"

    path = single_image_folder(tmp_path / "o", write)
    with Image.open(path) as img:
        unrotated = np.asarray(img.convert("RGB"))
        reference = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    if suffix == ".png":  # lossless: the reference is the EXIF rule itself
        assert np.array_equal(reference, ORIENTED[orientation](stored))
    assert not np.array_equal(reference, unrotated)
    assert np.array_equal(quiet_load(tmp_path / "o").train_x[0], reference.transpose(2, 0, 1))


def test_files_not_loaded_are_counted_and_named_in_one_warning(tmp_path):
    root = tmp_path / "toy"
    uncompressed_folder(root, classes=("ape", "cat", "dog"))
    nested = root / "train" / "cat" / "extra"
    (nested / "deeper").mkdir(parents=True)
    Image.fromarray(pixels(1)).save(nested / "a.png")
    Image.fromarray(pixels(2)).save(nested / "deeper" / "b.png")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    (root / "train" / "ape" / "pic.bmp").write_bytes(b"BM")
    Image.fromarray(pixels(3)).save(root / "test" / "loose.png")  # in no class folder
    (root / "train" / "ape" / ".DS_Store").write_bytes(b"\0")  # hidden: skipped without a word
    (root / "train" / "dog" / ".ipynb_checkpoints").mkdir()
    Image.fromarray(pixels(4)).save(root / "train" / "dog" / ".ipynb_checkpoints" / "c.png")
    for _ in range(2):  # a cached load says it again
        with pytest.warns(UserWarning) as record:
            data = load(root)
        messages = [str(w.message) for w in record]
        assert len(messages) == 1 and "\n" not in messages[0], messages
        assert messages[0].startswith(
            f"{root}: 5 files not loaded: train/ape/pic.bmp, train/cat/extra/a.png, train/cat/extra/deeper/b.png "
            "and 2 more (images are .png, .jpg, .jpeg"
        ), messages[0]
        assert len(data.train_y) == 6 and len(data.test_y) == 3


def test_a_class_folder_with_images_only_in_a_subfolder_says_so(tmp_path):
    root = tmp_path / "toy"
    uncompressed_folder(root)
    cat = root / "test" / "cat"
    (cat / "cat").mkdir()
    (cat / "0.png").rename(cat / "cat" / "0.png")  # unzipped one level too deep
    with pytest.raises(errors.DataError, match=r"cat: no image files .*; it holds only cat/0\.png$") as e:
        load(root)
    assert str(e.value).startswith(str(cat))


@pytest.mark.skipif(not features.check("webp"), reason="this Pillow reads no WebP")
def test_webp_images_are_loaded(tmp_path):
    root = tmp_path / "toy"
    uncompressed_folder(root)
    img = pixels(77)
    Image.fromarray(img).save(root / "train" / "cat" / "2.webp", lossless=True)
    data = quiet_load(root)
    assert data.train_y.tolist() == [0, 0, 1, 1, 1]
    assert np.array_equal(data.train_x[4], img.transpose(2, 0, 1))
    assert data.label == "image folder: toy"


# ---------------------------------------------------------------------------------------
# 4. Class folders not named as CIFAR-10's
# ---------------------------------------------------------------------------------------
def cifar_like(root: Path, names) -> None:
    for split in ("train", "test"):
        for i, name in enumerate(names):
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (32, 32), (20 * i, 0, 0)).save(root / split / name / "0.png")


def test_renamed_class_folders_are_accepted_with_a_warning_naming_them(tmp_path):
    names = ["car" if c == "automobile" else c for c in CLASSES]
    cifar_like(tmp_path / "renamed", names)
    with pytest.warns(UserWarning) as record:
        data = rl.load_cifar10(tmp_path / "renamed", download=False)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and "\n" not in messages[0], messages
    assert messages[0].startswith(
        f"{tmp_path / 'renamed'}: class folders are not CIFAR-10's (not in CIFAR-10: car; missing: automobile); "
        "labels follow the sorted folder names: 0 airplane, 1 bird, 2 car, 3 cat,"
    ), messages[0]
    assert data.classes == tuple(sorted(names)) and data.classes[2] == "car"
    car = data.train_y[data.train_x[:, 0, 0, 0] == 20 * names.index("car")].tolist()
    assert car == [2]  # the labels do follow the sorted names
    assert data.head(10, 10).classes == data.classes


def test_cifar_class_folders_load_without_a_warning(tmp_path):
    cifar_like(tmp_path / "cifar", CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = rl.load_cifar10(tmp_path / "cifar", download=False)
    assert data.classes == CLASSES
