"""The package's LightningModules and datamodules under Lightning's own LightningCLI (the ``cli`` extra)."""

import json

import pytest
import torch
import yaml

from lightning_dlstrat.lightning_cli import main

TRAINER = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


def test_fit_a_classifier_with_shapes_linked_from_the_data(tmp_path):
    cli = main(["fit", "--model", "MLPClassifier", "--data", "DigitsDataModule", "--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
                f"--trainer.default_root_dir={tmp_path}", *TRAINER])
    assert cli.model.hparams.in_shape == (1, 8, 8) and cli.model.hparams.num_classes == 10  # from data.dims / data.num_classes
    assert cli.trainer.global_step == 3
    assert sum(p.numel() for p in cli.model.parameters()) == 64 * 128 + 128 + 128 * 10 + 10  # 8x8 inputs, not the 28x28 default


@pytest.mark.parametrize("model,args,steps", [
    ("DARTSSearch", ["--model.C=4", "--model.layers=3", "--model.order=1", "--data.bilevel=true"], 4),  # alpha + weight step per batch
    ("GAN", ["--data.normalization=tanh", "--model.conditional=true"], 2),  # generator steps
])
def test_manual_optimisation_modules_step_their_own_optimisers(tmp_path, model, args, steps):
    config = tmp_path / "config.yaml"
    cli = main(["fit", "--model", model, "--data", "DigitsDataModule", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                f"--trainer.default_root_dir={tmp_path}", *args, *TRAINER])
    assert not cli.model.automatic_optimization and cli.trainer.global_step == steps
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())
    # LightningCLI's saved config replays the same run
    saved = yaml.safe_load(next(tmp_path.rglob("config.yaml")).read_text())
    assert saved["model"]["class_path"].endswith(model) and saved["data"]["class_path"].endswith("DigitsDataModule")
    config.write_text(json.dumps({"model": saved["model"], "data": saved["data"]}))
    again = main(["fit", "--config", str(config), "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                  f"--trainer.default_root_dir={tmp_path / 'again'}", *TRAINER])
    assert again.trainer.global_step == steps and type(again.model) is type(cli.model)
