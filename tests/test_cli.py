"""The dlstrat CLI end to end: runs, files written, metrics, and clear errors for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lightning_dlstrat import __version__
from lightning_dlstrat.cli import app
from lightning_dlstrat.core import atomic_write_bytes
from _helpers import run_dir_of

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """The documented default: `dlstrat fit --model mlp` on digits."""
    out = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["fit", "--model", "mlp", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result, run_dir_of(result.output)


def test_fit_mlp_on_digits_reaches_97_percent(mlp_run):
    result, run_dir = mlp_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "mlp" and summary["data"] == "digits" and summary["seed"] == 0
    assert summary["test_metrics"]["test/acc"] >= 0.97
    assert f"test/acc={summary['test_metrics']['test/acc']:.4f}" in result.output
    assert summary["command"].startswith("dlstrat fit --model mlp")
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "metrics.csv", "hparams.yaml"):
        assert (run_dir / name).is_file(), name
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "val/acc" in header and "train/loss" in header
    assert not list(run_dir.rglob("*.tmp"))  # atomic writes leave no temp files behind


def test_test_command_reproduces_the_test_accuracy(mlp_run):
    _, run_dir = mlp_run
    summary = json.loads((run_dir / "summary.json").read_text())
    result = runner.invoke(app, ["test", "--checkpoint", str(run_dir / "checkpoints" / "best.ckpt"), "--accelerator", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"test/acc={summary['test_metrics']['test/acc']:.4f}" in result.output


def test_config_file_and_pass_through(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {name: mlp, hidden: [16]}\ndata: digits\nmax_epochs: 2\nseed: 7\ntrainer:\n  limit_train_batches: 3\n")
    result = runner.invoke(app, ["fit", "--config", str(cfg), "--out", str(tmp_path), "--trainer.limit_val_batches=1", "--data.batch_size", "16"])
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seed"] == 7
    hparams = (run_dir / "hparams.yaml").read_text()
    assert "- 16" in hparams and "batch_size: 16" in hparams
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 6  # 2 epochs x 3 batches
    assert ckpt["dlstrat"] == {"model": "mlp", "data": "digits"}


@pytest.mark.parametrize(
    "args,message",
    [
        (["fit", "--model", "resnet"], "unknown model 'resnet'; choose one of: mlp"),
        (["fit", "--data", "imagenet"], "unknown dataset 'imagenet'; choose one of: digits, digits-hard, mnist"),
        (["fit", "--trainer.max_epoch=3"], "unknown trainer option 'max_epoch'. Did you mean: max_epochs"),
        (["fit", "--model.hiden=[3]"], "unknown --model.hiden for mlp. Did you mean: hidden"),
        (["fit", "--precision", "17-mixed"], "invalid Trainer settings"),
        (["fit", "--config", "/nonexistent/run.yaml"], "config file /nonexistent/run.yaml does not exist"),
        (["fit", "--bogus"], "unexpected argument '--bogus'"),
        (["fit", "--data", "mnist", "--data-dir", "{tmp}", "--data.download=false"], "Expected files: train-images-idx3-ubyte"),
        (["test", "--checkpoint", "/nonexistent.ckpt"], "checkpoint /nonexistent.ckpt does not exist"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args, message, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, args + (["--out", str(tmp_path)] if args[0] == "fit" else []))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    # nothing half-written: a failed run leaves no checkpoint behind
    assert not list(tmp_path.rglob("*.ckpt"))


def test_bad_config_keys_and_yaml(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: mlp\nmax_epoch: 3\n")
    result = runner.invoke(app, ["fit", "--config", str(cfg)])
    assert result.exit_code == 2 and "unknown config option 'max_epoch'. Did you mean: max_epochs" in result.output
    cfg.write_text("model: [mlp\n")
    result = runner.invoke(app, ["fit", "--config", str(cfg)])
    assert result.exit_code == 2 and "is not valid YAML" in result.output


def test_checkpoint_not_from_dlstrat(tmp_path):
    bad = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, bad)
    result = runner.invoke(app, ["test", "--checkpoint", str(bad)])
    assert result.exit_code == 2 and "was not written by `dlstrat fit`" in result.output
    bad.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["test", "--checkpoint", str(bad)])
    assert result.exit_code == 2 and "is not a readable checkpoint" in result.output


def test_version_and_listings():
    assert runner.invoke(app, ["--version"]).output.strip() == f"lightning-dlstrat {__version__}"
    data = runner.invoke(app, ["data", "list"]).output
    for name in ("digits", "mnist", "fashion-mnist", "cifar10", "folder", "ring8", "grid25"):
        assert f"\n{name} " in "\n" + data
    assert "mlp" in runner.invoke(app, ["models", "list"]).output


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


@pytest.mark.slow
def test_real_subprocess_run_prints_plain_progress(tmp_path):
    """The installed-style entry point in a real process, without a TTY (as in CI)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "fit", "--model", "mlp", "--max-epochs", "2", "--out", str(tmp_path), "--accelerator", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch 1/2" in proc.stdout and "epoch 2/2" in proc.stdout
    assert "test metrics: test/acc=" in proc.stdout
    run_dir = run_dir_of(proc.stdout)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["command"] == f"dlstrat fit --model mlp --max-epochs 2 --out {tmp_path} --accelerator cpu"
    assert summary["test_metrics"]["test/acc"] > 0.6  # 2 epochs: well above chance (0.1)


@pytest.mark.parametrize("recipe, model", [("mlp", {"hidden": [16], "dropout": 0.2}), ("gan", {"width": 8, "num_eval_samples": 100})])
def test_the_module_resolve_builds_is_the_one_trained_and_the_same_as_a_fresh_build(tmp_path, recipe, model):
    """config.resolve builds the datamodule and module once (to check the arguments) from the run's seed;
    run.fit trains that very module, and the run is bit for bit the one that builds its own."""
    from lightning_dlstrat.config import resolve
    from lightning_dlstrat.recipes import get_recipe
    from lightning_dlstrat.run import fit

    found = get_recipe(recipe)
    settings = dict(model={"name": recipe, **model}, data={"name": "digits"}, out=str(tmp_path), seed=7,
                    trainer={"max_epochs": 2, "limit_train_batches": 3, "limit_val_batches": 2, "enable_progress_bar": False})
    state = torch.get_rng_state()
    cfg = resolve(found, flags=settings)
    assert torch.equal(torch.get_rng_state(), state)  # resolving draws its module from the run's seed, not the caller's RNG
    module = cfg.built.module
    first = fit(found, cfg)
    assert cfg.built is None  # taken: a second fit of the same config builds its own
    trained = torch.load(first["best_checkpoint"], weights_only=True)["state_dict"]
    assert all(torch.equal(v, trained[k]) for k, v in module.state_dict().items())  # it is the module that was trained (and tested)

    again = resolve(found, flags={**settings, "out": str(tmp_path / "again")})
    again.built = None  # run.fit_once builds them itself, as it did before resolve kept them
    second = fit(found, again)
    a, b = (torch.load(s["last_checkpoint"], weights_only=True) for s in (first, second))
    assert a["state_dict"].keys() == b["state_dict"].keys() and all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert first["fit_metrics"] == second["fit_metrics"]
