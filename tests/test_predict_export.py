"""dlstrat validate, predict and export: what users reach for after a fit.

validate must score the split the run validated on (ModelCheckpoint's best score comes back);
predict must preprocess images and tensors exactly as the training data (probabilities equal the
network's on the same pixels); every export format is loaded back by its own runtime
(onnxruntime, torch.export.load, torch.jit.load) and compared with the eager network.
"""

import csv
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from _helpers import ROOT, assert_clean_failure, run_dir_of
from lightning_dlstrat.cli import app
from lightning_dlstrat.data import DigitsDataModule
from lightning_dlstrat.export_formats import read_metadata
from lightning_dlstrat.hub import ARCHITECTURES, load_model

runner = CliRunner()
ZOO = ROOT / "zoo"
ATOL = 1e-5  # exported vs eager, float32 on CPU; measured up to 2.4e-06 (ONNX, darts-digits), 0 for pt2 and TorchScript


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlp")
    result = runner.invoke(app, ["fit", "--model", "mlp", "--max-epochs", "2", "--model.hidden=[16]", "--trainer.limit_train_batches=4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return run_dir_of(result.output)


@pytest.fixture(scope="module")
def digits():
    """20 test images of the digits as raw pixels in [0, 1], quantised to 8 bits as a PNG holds them, and their labels."""
    dm = DigitsDataModule()
    dm.setup("test")
    x, y = dm.test_set[list(range(20))]
    pixels = (dm.denormalize(x).clamp(0, 1) * 255).round() / 255  # (20, 1, 8, 8)
    return pixels, y


def _probs_of(net, pixels, mean=0.307, std=0.3762):
    with torch.no_grad():
        return net((pixels - mean) / std).softmax(dim=1)  # (N, 10)


# --- validate -----------------------------------------------------------------------------------------
def test_validate_scores_the_split_the_run_validated_on(mlp_run, tmp_path):
    best = mlp_run / "checkpoints" / "best.ckpt"
    result = runner.invoke(app, ["validate", "--checkpoint", str(best)])
    assert result.exit_code == 0, result.output
    shown = dict(kv.split("=") for kv in result.output.strip().splitlines()[-1].split(", "))
    ckpt = torch.load(best, weights_only=True)
    kept = next(v["best_model_score"] for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert float(shown["val/loss"]) == pytest.approx(float(kept), abs=1e-4)  # the score ModelCheckpoint kept best.ckpt for
    assert set(shown) == {"val/acc", "val/loss"}


def test_validate_and_test_refuse_a_generator(tmp_path):
    fit = runner.invoke(app, ["fit", "--model", "gan", "--data", "ring8", "--out", str(tmp_path), "--trainer.max_steps=2"])
    assert fit.exit_code == 0, fit.output
    ckpt = run_dir_of(fit.output) / "checkpoints" / "last.ckpt"
    assert_clean_failure(runner.invoke(app, ["validate", "--checkpoint", str(ckpt)]), "has no validation split to score; draw from it with `dlstrat sample")
    assert_clean_failure(runner.invoke(app, ["predict", "--checkpoint", str(ckpt), str(tmp_path)]), "is a generator")
    # a GAN checkpoint exports its EMA generator
    result = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "g.pt2")])
    assert result.exit_code == 0, result.output
    from lightning_dlstrat.recipes.gan import generator_from_checkpoint

    net = generator_from_checkpoint(ckpt)[0].eval()
    z = torch.randn(7, net.latent_dim)
    assert torch.allclose(torch.export.load(tmp_path / "g.pt2").module()(z), net(z), atol=ATOL)
    # inference reaches the generator through the recipe's network_from_checkpoint hook
    from lightning_dlstrat.inference import load

    loaded = load(checkpoint=ckpt)
    assert (loaded.kind, loaded.how_to_sample) == ("generator", f"dlstrat sample --checkpoint {ckpt}")
    assert not loaded.net.training and torch.equal(loaded.net(z), net(z))


def test_the_run_and_inference_layers_name_no_recipe():
    """What is particular to a recipe reaches run.py and inference.py through its hooks (recipes/base.py),
    never as a branch on its name or its files (random-nas's study.json, gan's generator)."""
    import ast

    from lightning_dlstrat.recipes import RECIPES

    particular = set(RECIPES) | {"study.json"}
    for name in ("run.py", "inference.py"):
        tree = ast.parse((ROOT / "lightning_dlstrat" / name).read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings}
        assert not named & particular, (name, named & particular)
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not [m for m in imported if m.startswith("recipes.")], (name, imported)  # the recipe package's registry at most


# --- predict ------------------------------------------------------------------------------------------
def test_predict_images_folders_and_tensors_as_the_training_data(digits, tmp_path):
    pixels, labels = digits
    folder = tmp_path / "images" / "nested"
    folder.mkdir(parents=True)
    for i, img in enumerate(pixels[:10]):
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"{i:02d}.png")
    Image.fromarray((pixels[10, 0].numpy() * 255).round().astype(np.uint8)).resize((32, 32), Image.NEAREST).save(tmp_path / "big.jpg", quality=100)
    np.save(tmp_path / "batch.npy", pixels[11:19].numpy())
    torch.save(pixels[19], tmp_path / "one.pt")  # (1, 8, 8): one input without a batch dimension
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", "--zoo", "mlp-digits", str(tmp_path / "images"), str(tmp_path / "batch.npy"), str(tmp_path / "one.pt"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out)))
    assert [r["input"].split("/")[-1] for r in rows] == [f"{i:02d}.png" for i in range(10)] + [f"batch.npy[{i}]" for i in range(8)] + ["one.pt"]
    got = torch.tensor([[float(r[str(k)]) for k in range(10)] for r in rows])  # (19, 10)
    expected = _probs_of(load_model(ZOO / "mlp-digits"), torch.cat([pixels[:10], pixels[11:20]]))
    assert torch.allclose(got, expected, atol=1e-6)  # same preprocessing (channels, mean/std) as training
    assert [r["top_class"] for r in rows] == [str(int(k)) for k in expected.argmax(1)]
    assert sum(r["top_class"] == str(int(y)) for r, y in zip(rows, torch.cat([labels[:10], labels[11:20]]))) >= 17

    # JSON, a resized JPEG, a checkpoint-free DARTS network from a model folder
    out = tmp_path / "p.json"
    result = runner.invoke(app, ["predict", "--zoo", str(ZOO / "darts-digits"), str(tmp_path / "big.jpg"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(out.read_text())
    assert record["input"].endswith("big.jpg") and set(record["probs"]) == {str(k) for k in range(10)}
    assert record["top_prob"] == max(record["probs"].values()) and sum(record["probs"].values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_with_a_checkpoint_and_normalised_tensors(mlp_run, digits, tmp_path):
    pixels, _ = digits
    normalised = (pixels - 0.307) / 0.3762
    torch.save(normalised, tmp_path / "x.pt")
    result = runner.invoke(app, ["predict", "--checkpoint", str(mlp_run / "checkpoints" / "best.ckpt"), str(tmp_path / "x.pt"), "--no-normalize", "--out", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    got = torch.tensor([list(r["probs"].values()) for r in json.loads((tmp_path / "p.json").read_text())])
    from lightning_dlstrat.trainers.classifier import MLPClassifier

    net = MLPClassifier.load_from_checkpoint(mlp_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True).model.eval()
    assert torch.allclose(got, _probs_of(net, pixels), atol=1e-6)


def test_predict_refuses_bad_inputs(digits, tmp_path):
    pixels, _ = digits
    (tmp_path / "notes.txt").write_text("x")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 8, 8), np.float32))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    torch.save({"x": pixels}, tmp_path / "dict.pt")
    Image.new("L", (7000, 6000)).save(tmp_path / "huge.png")  # 42 MP, refused from its header
    (tmp_path / "empty").mkdir()
    mlp = ["predict", "--zoo", "mlp-digits"]
    for args, message in [
        (["predict", "--zoo", "gan-digits", str(tmp_path)], "is a generator: it draws images rather than classifying them; draw from it with `dlstrat sample --zoo gan-digits`"),
        ([*mlp, str(tmp_path / "nope.png")], "does not exist"),
        ([*mlp, str(tmp_path / "notes.txt")], ".txt is not a known input"),
        ([*mlp, str(tmp_path / "wrong.npy")], "holds a tensor of shape (2, 3, 8, 8); this network takes (1, 8, 8)"),
        ([*mlp, str(tmp_path / "objects.npy")], "is not a readable tensor file"),
        ([*mlp, str(tmp_path / "dict.pt")], "holds a dict, not one tensor"),
        ([*mlp, str(tmp_path / "huge.png")], "7000x6000 pixels, more than the 40,000,000 read"),
        ([*mlp, str(tmp_path / "empty")], "holds no images"),
        ([*mlp, str(tmp_path / "wrong.npy"), "--out", str(tmp_path / "p.txt")], "must end in .csv or .json"),
        (["predict", str(tmp_path / "wrong.npy")], "give exactly one of --checkpoint CKPT"),
        (["predict", "--zoo", "resnet50", str(tmp_path / "wrong.npy")], "unknown zoo model 'resnet50'"),
        (["predict", "--zoo", "darts-v2-cifar10", str(tmp_path / "wrong.npy")], "is a published cell without weights"),
    ]:
        assert_clean_failure(runner.invoke(app, args), message)
    assert not (tmp_path / "p.txt").exists() and not (tmp_path / "predictions.csv").exists()


# --- export -------------------------------------------------------------------------------------------
def _run_exported(path, fmt, *args):
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)})[0])
    if fmt == "pt2":
        return torch.export.load(path).module()(*args)
    return torch.jit.load(str(path))(*args)


CASES = [("mlp-digits", "onnx"), ("mlp-digits", "pt2"), ("mlp-digits", "torchscript"), ("darts-digits", "onnx"), ("darts-digits", "torchscript"),
         ("gan-digits", "onnx"), ("gan-digits", "torchscript"), ("gan-ring8", "onnx")]


@pytest.mark.slow
@pytest.mark.parametrize("name,fmt", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_exported_zoo_models_match_the_eager_network(name, fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")  # in the test extra
    out = tmp_path / f"model.{'pt' if fmt == 'torchscript' else fmt}"
    result = runner.invoke(app, ["export", "--zoo", str(ZOO / name), "--out", str(out)])  # the format from the suffix
    assert result.exit_code == 0, result.output
    assert f"wrote {out} ({fmt}; max |exported - eager| = " in result.output
    net = load_model(ZOO / name)
    meta = read_metadata(out)
    assert meta["format"] == fmt and meta["architecture"] == net.architecture
    if net.kind == "classifier":
        x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # another batch size than traced (2) or checked (3)
        assert meta["input_size"] == [1, 8, 8] and meta["mean"] == [0.307] and meta["std"] == [0.3762] and meta["label_names"] == [str(i) for i in range(10)]
    else:
        x = torch.randn(5, net.latent_dim, generator=torch.Generator().manual_seed(0))
        assert meta["latent_dim"] == net.latent_dim and meta["out_shape"] == list(net.out_shape)
    with torch.no_grad():
        expected = net(x)
        got = _run_exported(out, fmt, x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=ATOL), float((got - expected).abs().max())


@pytest.mark.slow
def test_exported_nb201_network_and_checkpoint_classifier(mlp_run, tmp_path):
    """The NAS-Bench-201 network (a tiny one, built here) in all three formats, and a checkpoint's MLP."""
    from lightning_dlstrat.export_formats import export
    from lightning_dlstrat.inference import Loaded

    torch.manual_seed(0)
    cell = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    net = ARCHITECTURES["nb201_net"](cell, C=4, N=1, num_classes=10, in_chans=1).eval()
    loaded = Loaded(net, "classifier", "nb201", (1, 8, 8), (0.307,), (0.3762,))
    x = torch.randn(4, 1, 8, 8)
    for fmt, suffix in (("onnx", ".onnx"), ("pt2", ".pt2"), ("torchscript", ".ts")):
        result = export(loaded, fmt, tmp_path / f"nb201{suffix}")
        assert result.max_abs_diff is not None and result.max_abs_diff <= ATOL
        with torch.no_grad():
            assert torch.allclose(_run_exported(result.path, fmt, x), net(x), atol=ATOL)
    ckpt = mlp_run / "checkpoints" / "best.ckpt"
    result = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--format", "pt2", "--out", str(tmp_path / "mlp.pt2")])
    assert result.exit_code == 0, result.output
    from lightning_dlstrat.trainers.classifier import MLPClassifier

    mlp = MLPClassifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).model.eval()
    with torch.no_grad():
        assert torch.allclose(_run_exported(tmp_path / "mlp.pt2", "pt2", x), mlp(x), atol=ATOL)
    assert read_metadata(tmp_path / "mlp.pt2")["source"] == "best.ckpt"  # no local path inside the shipped file


def test_export_refuses_bad_requests(tmp_path, monkeypatch):
    mlp = ["export", "--zoo", str(ZOO / "mlp-digits")]
    for args, message in [
        ([*mlp, "--out", str(tmp_path / "m.onnx"), "--format", "tflite"], "unknown --format 'tflite'"),
        ([*mlp, "--out", str(tmp_path / "m.onnx"), "--format", "pt2"], "does not end in .pt2, the suffix of --format pt2"),
        ([*mlp, "--out", str(tmp_path / "m.zip")], "give --format (onnx, pt2, torchscript) or a file ending in"),
        (["export", "--checkpoint", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "m.pt2")], "does not exist"),
        (["export", "--zoo", "pc-darts-cifar10", "--out", str(tmp_path / "m.pt2")], "is a published cell without weights"),
    ]:
        assert_clean_failure(runner.invoke(app, args), message)
    cond = ARCHITECTURES["conditional_dense_generator"](latent_dim=8, out_shape=(1, 8, 8), num_classes=3, hidden=(16,), embed_dim=8)
    cond.save_pretrained(tmp_path / "cond")
    # a conditional generator traces with a dynamic batch (it reshapes by z.shape[0]), checked on a batch of 3
    result = runner.invoke(app, ["export", "--zoo", str(tmp_path / "cond"), "--out", str(tmp_path / "c.pt")])
    assert result.exit_code == 0 and "(torchscript; max |exported - eager| = 0 on a batch of 3)" in " ".join(result.output.split()), result.output
    (tmp_path / "c.pt").unlink()
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    assert_clean_failure(runner.invoke(app, [*mlp, "--out", str(tmp_path / "m.onnx")]), 'pip install "lightning-dlstrat[onnx]"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cond"]  # nothing half-written


@pytest.mark.parametrize("normalization, mean, std", [("tanh", [0.5], [0.5]), ("none", [0.0], [1.0])])
def test_an_exported_run_keeps_the_normalisation_it_was_trained_with(tmp_path, normalization, mean, std):
    """pretrained_cfg's mean / std are what the run's datamodule did to [0, 1] pixels, so the zoo
    copy predicts what the checkpoint predicts."""
    from lightning_dlstrat.export import export_run
    from lightning_dlstrat.inference import load

    result = runner.invoke(app, ["fit", "--model", "mlp", "--max-epochs", "1", f"--data.normalization={normalization}", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    folder = export_run(run_dir, tmp_path / "hub")
    cfg = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    assert (cfg["mean"], cfg["std"]) == (mean, std)
    from_ckpt, from_zoo = load(checkpoint=run_dir / "checkpoints" / "best.ckpt"), load(zoo_name=str(folder))
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # pixels in [0, 1]
    assert torch.allclose(from_ckpt.normalize(x), from_zoo.normalize(x), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(from_ckpt.net(from_ckpt.normalize(x)), from_zoo.net(from_zoo.normalize(x)), atol=1e-5)
