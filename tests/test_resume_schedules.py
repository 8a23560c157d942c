"""Resuming with a larger --max-epochs trains on with the learning rate of the longer plan (issue 23, item 2).

Lightning restores a cosine schedule's saved state over the one a resumed run plans: T_max stayed
the old run's length and the learning rate its end value, so the resumed epochs trained at learning
rate 0 and their val/loss equalled the last one to every digit. Every module with a schedule is
tested here: a run of 1 epoch resumed to 2 must equal a run planned for 2 from the start, where the
schedule allows it (a cosine schedule's first epoch is at the base rate whatever its length).
"""

import json

import pytest
import torch
from typer.testing import CliRunner

from _helpers import run_dir_of
from lightning_dlstrat.cli import app

runner = CliRunner()
# every epoch's checkpoint kept: Lightning 2.6 writes last.ckpt only with a new best one, and the
# uninterrupted run's last epoch must be on disk to compare with
LIMITS = ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=1", "--accelerator", "cpu",
          "--trainer.callbacks=[{class_path: ModelCheckpoint, init_args: {save_top_k: -1}}]"]
CASES = {
    "mlp": ["--model", "mlp", "--model.hidden=[16]", "--model.scheduler=cosine", *LIMITS],
    "darts-net": ["--model", "darts-net", "--model.C=4", "--model.layers=3", *LIMITS],
    "darts": ["--model", "darts", "--model.C=4", "--model.layers=3", "--model.steps=2", "--model.multiplier=2", *LIMITS],
}


def _fit(*args: str):
    result = runner.invoke(app, ["fit", *args])
    assert result.exit_code == 0, result.output
    return run_dir_of(result.output)


def _last(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("recipe", [pytest.param(r, marks=pytest.mark.slow) if r == "darts" else r for r in sorted(CASES)])
def test_a_resumed_run_with_more_epochs_equals_one_planned_that_long(tmp_path, recipe):
    whole = _fit(*CASES[recipe], "--max-epochs", "2", "--out", str(tmp_path / "whole"))
    part = _fit(*CASES[recipe], "--max-epochs", "1", "--out", str(tmp_path / "part"))
    first = _last(part)
    resumed = _fit("--resume", str(part), "--max-epochs", "2")
    assert resumed == part
    a, b = _last(whole), _last(part)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) and b["global_step"] > first["global_step"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]), recipe
    assert any(not torch.equal(first["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"] if b["state_dict"][k].is_floating_point())
    (sa,), (sb,) = a["lr_schedulers"], b["lr_schedulers"]
    assert sa["T_max"] == sb["T_max"] == 2 and sa["_last_lr"] == sb["_last_lr"]
    fa, fb = (json.loads((d / "summary.json").read_text())["fit_metrics"] for d in (whole, part))
    assert fa["val/loss"] == fb["val/loss"]
    rows = [line.split(",") for line in (part / "metrics.csv").read_text().splitlines()]
    column = rows[0].index("val/loss")
    val_losses = [r[column] for r in rows[1:] if r[column]]
    assert len(val_losses) == 2 and val_losses[0] != val_losses[1]  # the resumed epoch trained (it did not at learning rate 0)


def test_a_resumed_gan_trains_on_with_its_linear_decay(tmp_path):
    """The GAN's decay is a function of the step and the run's length, so a longer resumed run
    continues at the rate of the longer plan (not the 0 the shorter one ended at)."""
    args = ["--model", "gan", "--data", "ring8", "--model.lr_schedule=linear", "--trainer.limit_train_batches=4", "--accelerator", "cpu"]
    part = _fit(*args, "--max-epochs", "1", "--out", str(tmp_path))
    first = _last(part)["state_dict"]
    assert _fit("--resume", str(part), "--max-epochs", "2") == part
    second = _last(part)
    assert second["epoch"] == 1
    changed = [k for k in first if k.startswith("generator.") and first[k].is_floating_point() and not torch.equal(first[k], second["state_dict"][k])]
    assert changed  # the generator trained in the resumed epoch
