"""The MLP network and its LightningModule: shapes, DDP on two CPU processes, bf16, resume."""

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_dlstrat import MLP, DigitsDataModule, MLPClassifier
from lightning_dlstrat.recipes import fit


def test_mlp_defaults_are_the_classic_784_128_10_network():
    net = MLP()
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 128), (128, 10)]
    assert sum(p.numel() for p in net.parameters()) == 784 * 128 + 128 + 128 * 10 + 10
    x = torch.randn(5, 1, 28, 28)
    assert net.forward_features(x).shape == (5, 128)
    assert torch.equal(net(x), net.forward_head(net.forward_features(x)))
    assert torch.equal(net.forward_head(net.forward_features(x), pre_logits=True), net.forward_features(x))


def test_mlp_options_and_errors():
    net = MLP(in_shape=(1, 8, 8), hidden=(32, 16), norm="layer", dropout=0.1, activation="gelu")
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["Flatten", "Linear", "LayerNorm", "GELU", "Dropout", "Linear", "LayerNorm", "GELU", "Dropout"]
    with pytest.raises(ValueError, match="unknown activation 'swish'; choose one of"):
        MLP(activation="swish")
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        MLPClassifier(optimizer="lbfgs")


class SaveWeightsPerRank(Callback):
    def __init__(self, folder):
        self.folder = Path(folder)

    def on_train_end(self, trainer, pl_module):
        torch.save({k: v.cpu() for k, v in pl_module.state_dict().items()}, self.folder / f"rank{trainer.global_rank}.pt")


def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path):
    dm = DigitsDataModule(batch_size=32)
    model = MLPClassifier(in_shape=dm.dims, hidden=(32,))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=2,
        limit_train_batches=8,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SaveWeightsPerRank(tmp_path)],
    )
    trainer.fit(model, datamodule=dm)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # and training did something: the weights moved away from the initialisation
    init = MLPClassifier(in_shape=dm.dims, hidden=(32,)).state_dict()
    assert not torch.equal(w0["model.head.weight"], init["model.head.weight"])


@pytest.mark.slow
def test_modules_destroy_their_gloo_group_at_exit(tmp_path):
    # A gloo group alive at interpreter shutdown can abort the process (SIGABRT), which once failed
    # a 2-process DDP test in CI; Lightning destroys only NCCL groups at exit, so the modules do it.
    script = f"""
import atexit, torch.distributed as dist
from lightning_dlstrat import MLPClassifier
dist.init_process_group("gloo", init_method="file://{tmp_path / 'store'}", rank=0, world_size=1)
atexit._run_exitfuncs()
print("without setup:", dist.is_initialized())
MLPClassifier(in_shape=(1, 8, 8)).setup("fit")
atexit._run_exitfuncs()
print("after setup:", dist.is_initialized())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "without setup: True" in out.stdout and "after setup: False" in out.stdout


def test_bf16_mixed_on_cpu_trains():
    L.seed_everything(0)
    dm = DigitsDataModule()
    model = MLPClassifier(in_shape=dm.dims)
    trainer = L.Trainer(
        accelerator="cpu", precision="bf16-mixed", max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(model, datamodule=dm)
    acc = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    assert acc > 0.9


def test_resume_continues_the_same_run(tmp_path):
    """4 epochs in one go == 2 epochs, stop, resume from that checkpoint for the other 2."""
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "all", filename="{epoch}", save_top_k=-1)
    common = dict(recipe="mlp", out=str(tmp_path), model={"dropout": 0.3, "hidden": [32]})
    straight = fit(**common, trainer={"max_epochs": 4, "callbacks": [every_epoch]})
    resumed = fit(**common, trainer={"max_epochs": 4}, resume=str(tmp_path / "all" / "epoch=1.ckpt"))
    a = torch.load(straight["last_checkpoint"], weights_only=True)["state_dict"]
    b = torch.load(resumed["last_checkpoint"], weights_only=True)["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
