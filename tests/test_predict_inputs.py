"""Prediction inputs without guessing: layouts of flat rows, ids kept as given, .npy/.npz told
by content, and every header's sizes checked against the file before memory is allocated."""

from __future__ import annotations

import csv
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import resnet_lib as rl
from resnet_tools import errors
import resnet_tools.cli as cli
import resnet_tools.inference as inference
from conftest import synthetic_images, write_batch


@pytest.fixture
def nhwc() -> np.ndarray:
    """Eight synthetic images as (N, 32, 32, 3) uint8, with noise so a transposed read cannot match."""
    rng = np.random.default_rng(0)
    return synthetic_images(rng.integers(0, 10, 8), rng).reshape(8, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def as_nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


@pytest.fixture
def untrained_model(monkeypatch):
    """The CLI's model loader, replaced by a seeded untrained Lite model: these tests are about
    reading inputs and writing ids, not accuracy, so they need no training."""
    model = rl.build_model("lite", seed=0).eval()
    loaded = (model, (rl.CIFAR10_MEAN, rl.CIFAR10_STD), {"tta": False})
    monkeypatch.setattr(cli, "load_for_inference_with_config", lambda path, device="auto": loaded)
    return model


def predict_cli(tmp_path: Path, capsys, input_path: Path, *extra: str) -> tuple[int, str, Path]:
    out = tmp_path / "sub.csv"
    argv = ["predict", "--checkpoint", str(tmp_path / "ck.pt"), "--input", str(input_path), "--out", str(out),
            "--device", "cpu", *extra]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err, out


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def save_npz(path: Path, compressed: bool = False, **arrays: np.ndarray) -> Path:
    """np.savez into exactly `path` (np.savez adds .npz to a name ending in .NPZ)."""
    with open(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return path


# ---------------------------------------------------------------------------------------
# 1. Layouts: flat rows need --layout; 4-D shapes and CIFAR's pickle rows say their own
# ---------------------------------------------------------------------------------------
def test_flat_npy_rows_are_refused_without_a_layout_and_read_as_told(tmp_path, nhwc):
    path = tmp_path / "flat.npy"
    np.save(path, nhwc.reshape(8, -1))  # pixel-major rows, as many competition files
    with pytest.raises(errors.DataError, match=r"flat rows of shape \(8, 3072\) .* --layout nchw or --layout nhwc"):
        inference.read_unlabeled(path)
    x, ids = inference.read_unlabeled(path, layout="nhwc")
    assert torch.equal(x, as_nchw(nhwc)) and ids == list(range(8))
    x, _ = inference.read_unlabeled(path, layout="nchw")  # the same bytes read channel-major
    assert torch.equal(x, torch.from_numpy(nhwc.reshape(8, 3, 32, 32)))


def test_cli_predict_on_flat_rows_needs_layout_and_then_matches_the_nhwc_file(tmp_path, capsys, nhwc,
                                                                             untrained_model):
    np.save(tmp_path / "flat.npy", nhwc.reshape(8, -1))
    np.save(tmp_path / "nhwc.npy", nhwc)
    code, err, out = predict_cli(tmp_path, capsys, tmp_path / "flat.npy")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {tmp_path / 'flat.npy'}: flat rows of shape (8, 3072)") and "--layout" in err
    assert not out.exists()
    code, err, out = predict_cli(tmp_path, capsys, tmp_path / "flat.npy", "--layout", "nhwc")
    assert code == 0, err
    from_flat = out.read_text()
    code, err, out = predict_cli(tmp_path, capsys, tmp_path / "nhwc.npy")
    assert code == 0, err
    assert out.read_text() == from_flat  # the same images, so the same labels
    expected, _ = inference.predict(untrained_model, nhwc)
    assert [row[1] for row in csv_rows(out)[1:]] == [str(int(c)) for c in expected]


def test_cifar_pickle_rows_stay_channel_major_and_layout_overrides(tmp_path, nhwc):
    path = tmp_path / "test_batch"  # the official format: 'data' rows are 1024 R, 1024 G, 1024 B
    chw_rows = nhwc.transpose(0, 3, 1, 2).reshape(8, -1)
    write_batch(path, chw_rows, [0] * 8)
    x, _ = inference.read_unlabeled(path)
    assert torch.equal(x, as_nchw(nhwc))
    with open(tmp_path / "hwc.pkl", "wb") as f:  # told otherwise: the caller knows its file
        pickle.dump({"data": nhwc.reshape(8, -1)}, f)
    x, _ = inference.read_unlabeled(tmp_path / "hwc.pkl", layout="nhwc")
    assert torch.equal(x, as_nchw(nhwc))


def test_unambiguous_shapes_keep_their_layout_and_a_contradicting_layout_is_refused(tmp_path, nhwc):
    np.save(tmp_path / "nhwc.npy", nhwc)
    np.save(tmp_path / "nchw.npy", nhwc.transpose(0, 3, 1, 2))
    for name, own in (("nhwc.npy", "nhwc"), ("nchw.npy", "nchw")):
        assert torch.equal(inference.read_unlabeled(tmp_path / name)[0], as_nchw(nhwc))
        assert torch.equal(inference.read_unlabeled(tmp_path / name, layout=own)[0], as_nchw(nhwc))
    with pytest.raises(errors.DataError, match=r"shape \(8, 32, 32, 3\) are nhwc, not the layout 'nchw' given"):
        inference.read_unlabeled(tmp_path / "nhwc.npy", layout="nchw")
    with pytest.raises(ValueError, match="layout must be one of nchw, nhwc"):
        inference.read_unlabeled(tmp_path / "nhwc.npy", layout="hwc")


def test_library_predict_needs_a_layout_for_flat_rows(nhwc):
    model = rl.build_model("lite", seed=0).eval()
    flat = nhwc.reshape(8, -1)
    with pytest.raises(ValueError, match=r"flat rows of shape \(8, 3072\)"):
        inference.predict(model, flat)
    assert torch.equal(inference.as_nchw_uint8(flat, layout="nhwc"), as_nchw(nhwc))
    assert torch.equal(inference.predict(model, flat, layout="nhwc")[0], inference.predict(model, nhwc)[0])


# ---------------------------------------------------------------------------------------
# 2. Ids keep their text: strings as given, integers as integers, floats refused
# ---------------------------------------------------------------------------------------
def test_float_ids_in_a_pickle_are_refused_naming_the_file_and_id(tmp_path, capsys, nhwc, untrained_model):
    path = tmp_path / "x.pkl"
    with open(path, "wb") as f:
        pickle.dump({"data": nhwc, "ids": np.arange(1, 9, dtype=np.float64)}, f)
    with pytest.raises(errors.DataError, match=r"id 1\.0 \(image 0\) is a float: its text as given is lost"):
        inference.read_unlabeled(path)
    code, err, out = predict_cli(tmp_path, capsys, path)
    assert code == 2 and err.startswith(f"error: {path}: id 1.0 (image 0)") and err.count("\n") == 1, err
    assert not out.exists()


def test_integer_and_string_ids_are_written_exactly(tmp_path, capsys, nhwc, untrained_model):
    path = tmp_path / "x.pkl"
    ids = [np.int64(7), 8, "007", "9.50", b"img-1.png", np.str_("a b"), -3, 2**70]
    with open(path, "wb") as f:
        pickle.dump({"data": nhwc, "ids": ids}, f)
    code, err, out = predict_cli(tmp_path, capsys, path)
    assert code == 0, err
    assert [row[0] for row in csv_rows(out)[1:]] == ["7", "8", "007", "9.50", "img-1.png", "a b", "-3", str(2**70)]


@pytest.mark.parametrize(
    "bad, message",
    [(1.0, r"id 1\.0 \(row 2\) is a float"), (np.float32(3), r"\(row 2\) is a float"),
     (True, r"id True \(row 2\) is a boolean"), (b"\xff\xfe", r"is bytes that are not UTF-8"),
     ((1, 2), r"id \(1, 2\) \(row 2\) is a tuple: ids must be strings or integers")],
)
def test_write_submission_refuses_ids_it_would_reformat(tmp_path, bad, message):
    path = tmp_path / "sub.csv"
    with pytest.raises(ValueError, match=message):
        inference.write_submission(path, ["a", bad], torch.zeros(2, dtype=torch.long))
    assert not path.exists()


# ---------------------------------------------------------------------------------------
# 3. .npy and .npz told by content, whatever the name
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["x.NPY", "x.Npy", "x.pkl", "images.bin"])
def test_npy_is_recognised_by_content(tmp_path, nhwc, name):
    np.save(tmp_path / "x.npy", nhwc)
    path = (tmp_path / "x.npy").rename(tmp_path / name)
    x, ids = inference.read_unlabeled(path)
    assert torch.equal(x, as_nchw(nhwc)) and ids == list(range(8))


def test_cli_predicts_an_uppercase_npy(tmp_path, capsys, nhwc, untrained_model):
    np.save(tmp_path / "x.npy", nhwc)
    path = (tmp_path / "x.npy").rename(tmp_path / "X.NPY")
    code, err, out = predict_cli(tmp_path, capsys, path)
    assert code == 0, err
    assert [row[0] for row in csv_rows(out)[1:]] == [str(i) for i in range(8)]


@pytest.mark.parametrize("name", ["x.npz", "x.NPZ", "x.data"])
@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_npz_single_array_or_named_images_with_ids(tmp_path, nhwc, name, compressed):
    x, ids = inference.read_unlabeled(save_npz(tmp_path / name, compressed, arr_0=nhwc))  # np.savez(f, images)
    assert torch.equal(x, as_nchw(nhwc)) and ids == list(range(8))
    for key in inference.NPZ_IMAGE_NAMES:
        path = save_npz(tmp_path / f"{key}-{name}", compressed, **{key: nhwc}, ids=np.array([f"im{i}" for i in
                                                                                            range(8)]))
        x, ids = inference.read_unlabeled(path)
        assert torch.equal(x, as_nchw(nhwc)) and ids == [f"im{i}" for i in range(8)]
    path = save_npz(tmp_path / f"flat-{name}", compressed, data=nhwc.reshape(8, -1), ids=np.arange(100, 108))
    with pytest.raises(errors.DataError, match=r"flat rows of shape \(8, 3072\)"):
        inference.read_unlabeled(path)
    x, ids = inference.read_unlabeled(path, layout="nhwc")
    assert torch.equal(x, as_nchw(nhwc)) and ids == list(range(100, 108)) and type(ids[0]) is int


@pytest.mark.parametrize(
    "arrays",
    [{"images": "nhwc", "labels": "ids8"}, {"a": "nhwc", "b": "nhwc"}, {"data": "nhwc", "x": "nhwc"},
     {"foo": "nhwc", "ids": "ids8"}, {}],
    ids=["images+labels", "two unnamed", "data and x", "unnamed+ids", "empty"],
)
def test_npz_of_another_layout_is_refused_in_one_line(tmp_path, capsys, nhwc, untrained_model, arrays):
    values = {"nhwc": nhwc, "ids8": np.arange(8)}
    path = save_npz(tmp_path / "x.npz", **{k: values[v] for k, v in arrays.items()})
    with pytest.raises(errors.DataError, match=rf"holds arrays \[.*\]; expected one array, or one named data, x or"):
        inference.read_unlabeled(path)
    code, err, out = predict_cli(tmp_path, capsys, path)
    assert code == 2 and err.startswith(f"error: {path}: holds arrays") and err.count("\n") == 1, err
    assert not out.exists()


def test_npz_is_read_without_pickles(tmp_path, monkeypatch):
    path = tmp_path / "x.npz"
    with open(path, "wb") as f:
        np.savez(f, data=np.array([{"evil": 1}, None], dtype=object))  # np.savez pickles object arrays
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads ran on a .npz"))
    with pytest.raises(errors.DataError, match=r"array 'data': holds Python objects, not uint8 images"):
        inference.read_unlabeled(path)


# ---------------------------------------------------------------------------------------
# 4. Sizes claimed against the bytes the file holds, before anything is allocated
# ---------------------------------------------------------------------------------------
def npy_bytes(shape: tuple, payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def _set_uncompressed_size(raw: bytearray, size: int) -> bytearray:
    """Rewrite the size a zip's local and central headers give its one member."""
    local, central = raw.find(b"PK\x03\x04"), raw.rfind(b"PK\x01\x02")
    raw[local + 22: local + 26] = size.to_bytes(4, "little")
    raw[central + 24: central + 28] = size.to_bytes(4, "little")
    return raw


def test_npz_member_header_claiming_more_than_the_file_is_refused_before_loading(tmp_path, monkeypatch):
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.npy", npy_bytes((10**10, 32, 32, 3), b"\0" * 100))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load ran before the size check"))
    with pytest.raises(errors.DataError, match=r"array 'data': its header says shape \(10000000000, 32, 32, 3\) "
                                           r"of uint8 \(30,720,000,000,000 bytes\), but the archive holds 100 bytes"):
        inference.read_unlabeled(path)


def test_npz_zip_directory_claiming_more_than_deflate_can_hold_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("data.npy", npy_bytes((2**31 // 3072, 32, 32, 3), b"\0" * 100))
    path.write_bytes(_set_uncompressed_size(bytearray(path.read_bytes()), 2**31))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load ran before the size check"))
    message = rf"{path}: array 'data': the zip directory says 2,147,483,648 bytes from"
    with pytest.raises(errors.DataError, match=message):
        inference.read_unlabeled(path)


def test_pickle_length_claiming_more_than_the_file_is_refused_before_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "x.pkl"
    # protocol 4: BINBYTES8 whose length says 10 TB, then 3 bytes; the unpickler would allocate the 10 TB first
    path.write_bytes(b"\x80\x04\x8e" + (10**13).to_bytes(8, "little") + b"abc")
    monkeypatch.setattr(inference, "safe_loads", lambda *a: pytest.fail("unpickled before the length check"),
                        raising=False)  # raising=False: so the test also runs on code without safe_loads
    with pytest.raises(errors.DataError, match=r"expected 10000000000000 bytes in a bytes8, but only 3 remain\); "
                                           r"truncated or damaged"):
        inference.read_unlabeled(path)


def test_pickle_of_repeated_references_is_refused_before_it_is_expanded(tmp_path, monkeypatch):
    path = tmp_path / "x.pkl"
    row = list(range(256)) * 12  # one image of 3072 values, pickled once and referenced 1000 times
    path.write_bytes(pickle.dumps({"data": [row] * 1000}))
    monkeypatch.setattr(np, "asarray", lambda *a, **k: pytest.fail("np.asarray expanded the list"))
    with pytest.raises(errors.DataError, match=rf"'data' is lists of 3,072,000 values, more than its "
                                           rf"{path.stat().st_size:,} bytes hold"):
        inference.read_unlabeled(path)


def test_a_list_of_image_arrays_is_still_read(tmp_path, nhwc):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"data": list(nhwc), "ids": [f"im{i}" for i in range(8)]}))
    x, ids = inference.read_unlabeled(path)
    assert torch.equal(x, as_nchw(nhwc)) and ids[7] == "im7"
