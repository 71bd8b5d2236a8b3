"""predict, the submission CLI, and safetensors export / load_pretrained."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import resnet_lib as rl
from resnet_tools.dataset import CLASSES
from resnet_tools import errors, inference
from conftest import ROOT, tiny_config
from resnet_tools.inference import read_unlabeled, stats_of
from resnet_tools.evaluation import evaluate, logits_of


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Lite model trained for 3 epochs on the separable toy set, with its checkpoint."""
    from conftest import write_cifar

    root = tmp_path_factory.mktemp("inf")
    with pytest.warns(UserWarning):
        data = rl.load_cifar10(write_cifar(root / "cifar"), download=False)
    model = rl.build_model("lite", seed=0)
    rl.fit(model, data, tiny_config(epochs=3, lr=0.1), checkpoint=root / "ck.pt", progress=False)
    return model, data, root / "ck.pt"


def test_predict_accepts_every_layout_and_matches_evaluate(trained):
    model, data, _ = trained
    x = data.test_x
    labels, probs = inference.predict(model, x, stats=data.stats)
    assert labels.shape == (100,) and probs.shape == (100, 10)
    assert torch.allclose(probs.sum(1), torch.ones(100), atol=1e-5)
    assert torch.equal(labels, evaluate(model, data).predictions)
    nhwc = x.permute(0, 2, 3, 1).numpy()
    assert torch.equal(inference.predict(model, nhwc, stats=data.stats)[0], labels)
    flat = x.reshape(100, -1).numpy()
    assert torch.equal(inference.predict(model, flat, stats=data.stats, layout="nchw")[0], labels)
    tta_labels, _ = inference.predict(model, x, stats=data.stats, tta=True)
    assert torch.equal(tta_labels, evaluate(model, data, tta=True).predictions)
    assert (labels == data.test_y).float().mean() >= 0.7  # it learned the toy set (chance: 0.1)
    with pytest.raises(ValueError, match="uint8"):
        inference.predict(model, x.float())
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        inference.predict(model, torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


def test_export_round_trip_same_logits(trained, tmp_path):
    model, data, ck = trained
    out = inference.export_safetensors(ck, tmp_path / "m.safetensors")
    loaded, meta = inference.load_pretrained(out, device="cpu")
    assert meta["num_params"] == 78_042 and meta["config"]["model"] == "lite"
    ref, _ = inference.load_checkpoint(ck, device="cpu")
    stats = stats_of(meta)
    assert torch.equal(logits_of(loaded, data.test_x, stats), logits_of(ref, data.test_x, stats))
    assert stats == data.stats


def test_load_pretrained_refuses_a_mismatch(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    _, _, ck = trained
    out = inference.export_safetensors(ck, tmp_path / "m.safetensors")
    state = load_file(str(out))
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    liar = dict(meta, config=meta["config"].replace('"lite"', '"improved"'))
    save_file(state, str(tmp_path / "liar.safetensors"), metadata=liar)
    with pytest.raises(ValueError, match=r"holds 78,042 parameters .* model 'improved' has 4,903,242; refusing"):
        inference.load_pretrained(tmp_path / "liar.safetensors")
    state["fc.weight"] = torch.zeros(64, 10)  # same count, wrong shape
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="tensors do not match model 'lite'"):
        inference.load_pretrained(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        inference.load_pretrained(tmp_path / "junk.safetensors")


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "resnet_lib.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_predict_from_pickle_and_npy_and_export(trained, tmp_path):
    model, data, ck = trained
    images = data.test_x[:30].permute(0, 2, 3, 1).numpy()  # the NHWC layout of competition files
    with open(tmp_path / "unlabeled.pkl", "wb") as f:
        pickle.dump({"data": images, "ids": np.arange(1000, 1030)}, f)
    proc = run_cli(
        "predict",
        "--checkpoint",
        ck,
        "--input",
        tmp_path / "unlabeled.pkl",
        "--out",
        tmp_path / "sub.csv",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "sub.csv").read_text().splitlines()
    assert lines[0] == "ID,Labels" and len(lines) == 31
    expected, _ = inference.predict(model, images, stats=data.stats, tta=True)  # as the run (modern) was evaluated
    assert [line.split(",") for line in lines[1:]] == [[str(1000 + i), str(int(c))] for i, c in enumerate(expected)]
    assert "30 predictions (flip TTA, as the run was evaluated)" in proc.stdout and "airplane" in proc.stdout

    np.save(tmp_path / "x.npy", images)
    exported = tmp_path / "m.safetensors"
    proc = run_cli("export", "--checkpoint", ck, "--out", exported)
    assert proc.returncode == 0 and "78,042 params" in proc.stdout, proc.stderr
    proc = run_cli(
        "predict",
        "--checkpoint",
        exported,
        "--input",
        tmp_path / "x.npy",
        "--out",
        tmp_path / "sub2.csv",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    lines2 = (tmp_path / "sub2.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in lines2[1:]] == [line.split(",")[1] for line in lines[1:]]
    assert lines2[1].startswith("0,")  # no ids in a .npy: 0..N-1


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cli_predict_refuses_a_malicious_input_file(trained, tmp_path):
    _, _, ck = trained
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"data": Evil()}, f)
    proc = subprocess.run([sys.executable, str(ROOT / "resnet_lib.py"), "predict", "--checkpoint", str(ck), "--input",
                           str(tmp_path / "evil.pkl"), "--out", str(tmp_path / "s.csv")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and "refused" in proc.stderr and "system" in proc.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "s.csv").exists()


def test_cli_predicts_png_and_jpeg_files_a_folder_and_the_image_folder_layout(trained, tmp_path):
    from PIL import Image

    model, data, ck = trained
    images = data.test_x[:6].permute(0, 2, 3, 1).numpy()
    layout = tmp_path / "photos" / "test"  # the image-folder layout: test/<class>/<file>
    for i, img in enumerate(images):
        folder = layout / CLASSES[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")  # lossless: the same pixels as the array
    Image.fromarray(images[0]).resize((96, 96), Image.Resampling.NEAREST).save(tmp_path / "big.png")
    Image.fromarray(images[1]).save(tmp_path / "one.jpg", quality=95)

    proc = run_cli("predict", "--checkpoint", ck, "--input", tmp_path / "photos", "--out", tmp_path / "sub.csv",
                   "--device", "cpu", "--no-tta")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(",") for line in (tmp_path / "sub.csv").read_text().splitlines()[1:]]
    expected, _ = inference.predict(model, images, stats=data.stats)
    by_name = {f"test/{CLASSES[i % 2]}/{i}.png": str(int(c)) for i, c in enumerate(expected)}
    assert dict(rows) == by_name  # every file, named by its path under the folder

    x, ids = read_unlabeled(tmp_path / "big.png")  # a larger photo: resized to 32x32
    assert ids == ["big.png"] and x.shape == (1, 3, 32, 32)
    assert torch.equal(x[0], data.test_x[0])  # area averaging undoes a 3x enlargement exactly
    x, ids = read_unlabeled(tmp_path / "one.jpg")
    distance = [(x[0].float() - data.test_x[i].float()).abs().mean() for i in range(6)]
    assert ids == ["one.jpg"] and min(distance) == distance[1]  # JPEG: lossy, still nearest its own picture
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.DataError, match="no .png, .jpg or .jpeg images"):
        read_unlabeled(tmp_path / "empty")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(errors.DataError, match="cannot read the image"):
        read_unlabeled(tmp_path / "bad.png")


def test_cli_evaluate_scores_a_checkpoint_and_writes_its_confusion_matrix(trained, tmp_path):
    model, data, ck = trained
    out = tmp_path / "cm.csv"
    proc = run_cli("evaluate", "--checkpoint", ck, "--data-dir", data.root, "--out", out, "--device", "cpu", "--no-tta")
    assert proc.returncode == 0, proc.stderr
    expected = evaluate(model, data, "test", stats=data.stats)
    assert f"accuracy {expected.accuracy:.2%} (no TTA)" in proc.stdout and "100 images" in proc.stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "true \\ predicted," + ",".join(CLASSES) and len(lines) == 11
    counts = np.array([[int(n) for n in line.split(",")[1:]] for line in lines[1:]])
    assert counts.sum() == 100 and np.trace(counts) == round(100 * expected.accuracy)
    assert counts.sum(axis=1).tolist() == np.bincount(data.test_y.numpy(), minlength=10).tolist()
    proc = run_cli("evaluate", "--checkpoint", ck, "--data-dir", tmp_path / "none", "--out", out, "--device", "cpu")
    assert proc.returncode == 2 and proc.stderr.startswith("error: CIFAR-10 files missing")  # no traceback
