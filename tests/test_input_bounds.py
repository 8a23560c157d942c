"""Input that must be refused with exit 2 and one paragraph before anything is built (issue 23).

Each test reproduces what a user did: an alias bomb or a 100,000-deep list in ``--config``,
numbers written ``1e-3``, sizes that would take hundreds of GB or hang, a negative learning rate,
genotypes that overflow Python's parser or ``range``, a Hub ``config.json`` nested deep, a
``val_check_interval`` longer than an epoch. Each must fail in seconds with exit 2, one paragraph
starting "Error: ", no traceback and no run directory (``_helpers.assert_clean_failure``).
"""

import json
import time

import pytest
import yaml
from typer.testing import CliRunner

from _helpers import assert_clean_failure
from lightning_dlstrat.cli import app
from lightning_dlstrat.spaces.darts.genotype import DARTS_V2

runner = CliRunner()

# a "billion laughs": 9 lists of 9 aliases each, 9**9 (387 million) strings once expanded, in 600 bytes
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
)


def fit(*args: str, out=None):
    return runner.invoke(app, ["fit", *args, *(["--out", str(out)] if out is not None else [])])


# --- YAML: bounded before anything is built (item 9), numbers as a user means them (item 13) ----------
@pytest.mark.parametrize(
    "text, message",
    [
        ("model: mlp\n" + ALIAS_BOMB, "expands to more than 200,000 values"),
        ("model: mlp\nbomb: " + "[" * 100_000 + "]" * 100_000 + "\n", "nests lists and mappings more than 64 deep"),
        ("model: mlp\noptions: &a {x: *a}\n", "an alias that contains itself"),
    ],
    ids=["alias-bomb", "100k-deep", "recursive-alias"],
)
def test_config_files_are_bounded_before_they_are_built(tmp_path, text, message):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(text)
    start = time.time()
    result = fit("--config", str(cfg), out=tmp_path / "runs")
    assert time.time() - start < 10  # before: 180 s and more, or 5 GB of memory
    assert_clean_failure(result, message, tmp_path / "runs")


def test_flag_values_are_bounded_too(tmp_path):
    flow = "[" + ",".join(["*a"] * 9) + "]"
    bomb = "[&a [1,2,3,4,5,6,7,8,9], &b " + flow + ", &c " + flow.replace("*a", "*b") + ", &d " + flow.replace("*a", "*c") + ", &e " + flow.replace("*a", "*d") + ", &f " + flow.replace("*a", "*e") + ", " + flow.replace("*a", "*f") + "]"
    start = time.time()
    assert_clean_failure(fit(f"--model.hidden={bomb}", out=tmp_path), "--model.hidden expands to more than 200,000 values", tmp_path)
    assert time.time() - start < 10


def test_numbers_are_read_as_a_user_means_them(tmp_path):
    """YAML 1.1 reads 1e-3 as text; a learning rate of 1e-3 is a number (as in YAML 1.2 and Python)."""
    result = fit("--model.lr=1e-3", "--model.weight_decay=1E-5", "--trainer.max_steps=1e3", "--print-config")
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["model"]["lr"] == 0.001 and printed["model"]["weight_decay"] == 1e-5 and printed["trainer"]["max_steps"] == 1000
    result = fit("--model.lr=1e308", "--print-config")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["model"]["lr"] == 1e308
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {name: mlp, lr: 2e-4, dropout: 1.0e-1}\n")
    result = fit("--config", str(cfg), "--print-config")
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)["model"]
    assert printed["lr"] == 2e-4 and printed["dropout"] == 0.1
    assert_clean_failure(fit("--model.lr=1e309", out=tmp_path), "--model.lr must be a number (its default is 0.001), not inf", tmp_path)


# --- sizes: counted on the meta device, refused with the figure and the limit (item 11) ----------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "darts-net", "--model.C=100000"], "has more than 500,000,000 parameters (at least 30,003,900,013"),
        (["--model", "darts-net", "--model.layers=1000000"], "has more than 10,000 weight tensors"),
        (["--model", "darts", "--model.C=100000"], "has more than 500,000,000 parameters"),
        (["--model.hidden=[1000000, 1000000]"], "has more than 500,000,000 parameters"),
        (["--model", "gan", "--model.latent_dim=100000000"], "has more than 500,000,000 parameters (at least 12,800,000,001"),
    ],
    ids=["darts-net-C", "darts-net-layers", "darts-C", "mlp-hidden", "gan-latent"],
)
def test_sizes_are_refused_before_anything_is_allocated(tmp_path, args, message):
    start = time.time()
    result = fit(*args, out=tmp_path)
    assert time.time() - start < 60  # before: 120 GB tried, or hours of building
    assert_clean_failure(result, message, tmp_path)


def test_memory_is_estimated_for_the_real_batch_and_held_to_the_machine(tmp_path, monkeypatch):
    """Weights, gradients, two optimiser moments and one batch's layer outputs, against the machine's memory
    (here said to be 1 GiB); a batch larger than the training set (1,294 digits) counts as the training set."""
    import lightning_dlstrat.config as config

    monkeypatch.setattr(config, "memory_limit", lambda: 2**30)
    result = fit("--model.hidden=[16384, 16384]", "--data.batch_size=100000000", "--accelerator", "cpu", out=tmp_path)
    assert_clean_failure(result, "needs at least 4.5 GiB to train (269,680,650 parameters, 127,301,132 activation values for a batch of 1294; "
                                 "counted on the meta device), more than this machine's 1.0 GiB", tmp_path)
    result = fit("--model.hidden=[4096]", "--data.batch_size=100000000", "--accelerator", "cpu", "--print-config")
    assert result.exit_code == 0, result.output


def test_sample_bounds_its_count_and_seed(tmp_path):
    out = str(tmp_path / "s.png")
    result = runner.invoke(app, ["sample", "--zoo", "gan-digits", "-n", "1000000000", "--out", out])
    assert_clean_failure(result, "-n 1,000,000,000 samples is more than the 10,000 one picture holds (they alone would take 238.4 GiB")
    result = runner.invoke(app, ["sample", "--zoo", "gan-digits", "--seed", str(2**70), "--out", out])
    assert_clean_failure(result, "--seed must be an integer in 0..2**64-1, not 1180591620717411303424")
    assert not (tmp_path / "s.png").exists()


# --- values that exited 1 ("unexpected") or left a run directory (item 14) -----------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.lr=-1.0"], "--model.lr must be a positive number, not -1.0"),
        (["--model.hidden=[-5]"], "--model.hidden must be positive numbers, not [-5]"),
        (["--model.dropout=1.5"], "--model.dropout must be a number in [0, 1], not 1.5"),
        (["--model", "darts", "--model.arch_betas=[0.5, 2]"], "--model.arch_betas must be numbers in [0, 1]"),
        (["--model", "gan", "--model.lr_d=-0.1"], "--model.lr_d must be a positive number"),
        (["--trainer.val_check_interval=1000", "--max-epochs", "1"], "--trainer.val_check_interval=1000 is more batches than an epoch has (21)"),
        (["--trainer.val_check_interval=1.5"], "must be a fraction of an epoch in (0, 1]"),
        (["--model", "darts-net", "--genotype", str(DARTS_V2).replace("[2, 3, 4, 5]", f"range(0, {2**70})", 1)], "has 1,180,591,620,717,411,303,424 elements"),
        (["--model", "darts-net", "--genotype", "Genotype(normal=" + "-" * 30_000 + "1)"], "genotype text nests far deeper than a genotype does"),
    ],
    ids=["lr", "hidden", "dropout", "betas", "gan-lr", "val-check-batches", "val-check-fraction", "range-2**70", "30k-genotype"],
)
def test_bad_values_exit_2_before_a_run_directory_exists(tmp_path, args, message):
    assert_clean_failure(fit(*args, out=tmp_path), message, tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_config_nested_100k_deep_exits_2(tmp_path):
    cfg = tmp_path / "deep.yaml"
    cfg.write_text("model:\n  name: mlp\n  hidden: " + "[" * 100_000 + "1" + "]" * 100_000 + "\n")
    assert_clean_failure(fit("--config", str(cfg), out=tmp_path / "runs"), "nests lists and mappings more than 64 deep", tmp_path / "runs")


def _hub_config(architecture: str, model_args: str) -> str:
    return f'{{"library_name": "lightning-dlstrat", "architecture": "{architecture}", "kind": "classifier", "model_args": {model_args}}}'


@pytest.mark.parametrize(
    "config, message",
    [
        (_hub_config("dlstrat_mlp", '{"in_shape": [1, 8, 8], "hidden": ' + "[" * 5_000 + "]" * 5_000 + "}"), "nests lists and objects more than 64 deep"),
        (_hub_config("darts_net", json.dumps({"genotype": "Genotype(normal=" + "-" * 30_000 + "1)", "C": 4, "layers": 3, "in_chans": 1})), "genotype text nests far deeper"),
        (_hub_config("darts_net", json.dumps({"genotype": str(DARTS_V2).replace("[2, 3, 4, 5]", f"range(0, {2**70})", 1), "C": 4, "layers": 3, "in_chans": 1})), "1,180,591,620,717,411,303,424 elements"),
        (_hub_config("darts_net", json.dumps({"genotype": "DARTS_V2", "C": 4, "layers": 1_000_000, "in_chans": 1})), "more than 10,000 weight tensors"),
    ],
    ids=["nested", "genotype-30k", "genotype-range", "layers"],
)
def test_a_hub_config_that_nests_deep_or_carries_a_bomb_exits_2(tmp_path, config, message):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(config)
    (tmp_path / "x.npy").write_bytes(b"")
    start = time.time()
    result = runner.invoke(app, ["predict", "--zoo", str(folder), str(tmp_path / "x.npy"), "--out", str(tmp_path / "p.csv")])
    assert time.time() - start < 60
    assert_clean_failure(result, message)


# --- compressed tensors: what they decompress to is bounded, not the file (item 10) ---------------------
def test_a_compressed_pt_file_is_bounded_by_what_it_decompresses_to(tmp_path, monkeypatch):
    """A real zip: torch.save's archive with its records deflated, 50 MB of zeros in a 50 kB file (as a
    1 MB file of 1.9 GB). With the bound lowered to 10 MB it is refused from the archive's directory,
    before torch reads a byte of it."""
    import zipfile

    import torch

    import lightning_dlstrat.inference as inference

    plain, bomb = tmp_path / "plain.pt", tmp_path / "bomb.pt"
    torch.save(torch.zeros(12_500_000), plain)  # (12.5M,) float32: 50 MB
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert bomb.stat().st_size < 100_000 and torch.load(bomb, weights_only=True).numel() == 12_500_000  # torch reads such files
    monkeypatch.setattr(inference, "MAX_TENSOR_BYTES", 10_000_000)
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("torch.load must not be reached")))
    out = str(tmp_path / "p.csv")
    result = runner.invoke(app, ["predict", "--zoo", "mlp-digits", str(bomb), "--out", out])
    with zipfile.ZipFile(bomb) as archive:
        inflated = sum(i.file_size for i in archive.infolist())
    assert inflated > 50_000_000
    assert_clean_failure(result, f"bomb.pt decompresses to {inflated:,} bytes (0.0 GiB, from a file of {bomb.stat().st_size:,} bytes), more than the 10,000,000 bytes")
    legacy = tmp_path / "legacy.pt"
    monkeypatch.setattr(torch, "load", real_load)
    torch.save(torch.zeros(1, 8, 8), legacy, _use_new_zipfile_serialization=False)
    assert_clean_failure(runner.invoke(app, ["predict", "--zoo", "mlp-digits", str(legacy), "--out", out]), "is not a zip-format .pt file")
    small = tmp_path / "small.pt"
    torch.save(torch.rand(2, 1, 8, 8), small)
    result = runner.invoke(app, ["predict", "--zoo", "mlp-digits", str(small), "--out", out])
    assert result.exit_code == 0, result.output
