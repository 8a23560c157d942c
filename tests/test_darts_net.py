"""The DARTS evaluation network, its LightningModule, and the darts-net / random-nas CLI runs."""

import json

import lightning as L
import pytest
import torch
from typer.testing import CliRunner

from lightning_dlstrat.cli import app
from lightning_dlstrat.spaces.darts.network import Cell, DARTSNetwork
from lightning_dlstrat.spaces.darts.genotype import DARTS_V1, DARTS_V2, PC_DARTS, Genotype, sample_genotype
from lightning_dlstrat.trainers.darts_net import DARTSNetClassifier, cutout
from _helpers import run_dir_of
from lightning_dlstrat.data import DigitsDataModule

runner = CliRunner()


# --- parameter parity with the reference, counted from first principles ------------------------
def _op_params(op: str, c: int, stride: int) -> int:
    """Parameters of one op of quark0/darts operations.py with affine BatchNorm (2 per channel)."""
    k = {"sep_conv_3x3": 3, "sep_conv_5x5": 5, "dil_conv_3x3": 3, "dil_conv_5x5": 5}.get(op)
    if op.startswith("sep_conv"):  # twice (depthwise k x k + pointwise 1x1 + BN)
        return 2 * (k * k * c + c * c + 2 * c)
    if op.startswith("dil_conv"):  # once
        return k * k * c + c * c + 2 * c
    if op == "skip_connect" and stride == 2:  # FactorizedReduce(c, c): two 1x1 convs to c/2 + BN
        return 2 * (c * c // 2) + 2 * c
    return 0  # pooling, identity, none


def reference_param_count(genotype: Genotype, C: int, layers: int, num_classes: int, in_chans: int, auxiliary: bool) -> int:
    """What quark0/darts NetworkCIFAR(C, num_classes, layers, auxiliary, genotype) has, as a formula."""
    c_stem = 3 * C
    total = in_chans * c_stem * 9 + 2 * c_stem  # stem conv 3x3 + BN
    c_pp, c_p, c = c_stem, c_stem, C
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            c *= 2
        total += c_pp * c + 2 * c  # preprocess0: ReLUConvBN 1x1 or FactorizedReduce, same count
        total += c_p * c + 2 * c  # preprocess1: ReLUConvBN 1x1
        pairs = genotype.reduce if reduction else genotype.normal
        total += sum(_op_params(op, c, 2 if reduction and j < 2 else 1) for op, j in pairs)
        multiplier = len(genotype.reduce_concat if reduction else genotype.normal_concat)
        c_pp, c_p = c_p, multiplier * c
        if i == 2 * layers // 3:
            c_aux = c_p
    if auxiliary:  # 1x1 conv to 128 + BN, 2x2 conv to 768 + BN, linear
        total += c_aux * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * num_classes + num_classes
    return total + c_p * num_classes + num_classes  # classifier


def n_params(module: torch.nn.Module, skip_aux: bool = False) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if not (skip_aux and name.startswith("auxiliary_head.")))


def test_darts_v2_cifar_network_has_the_reference_parameter_count():
    net = DARTSNetwork(DARTS_V2, C=36, layers=20, num_classes=10, auxiliary=True)
    assert n_params(net) == reference_param_count(DARTS_V2, 36, 20, 10, 3, auxiliary=True)
    without_aux = n_params(net, skip_aux=True)
    assert without_aux == reference_param_count(DARTS_V2, 36, 20, 10, 3, auxiliary=False)
    assert round(without_aux / 1e6, 1) == 3.3  # the paper's Table 1 (the aux head is dropped at test time)
    # state-dict keys follow the reference, so its checkpoints map one to one
    keys = net.state_dict().keys()
    assert {"stem.0.weight", "cells.0.preprocess0.op.1.weight", "cells.0._ops.0.op.1.weight", "cells.7.preprocess0.conv_1.weight", "auxiliary_head.features.2.weight", "classifier.weight"} <= set(keys)


@pytest.mark.parametrize("genotype", [DARTS_V1, PC_DARTS, sample_genotype(0)], ids=["V1", "PC", "random"])
@pytest.mark.parametrize("C, layers, in_chans", [(16, 8, 3), (6, 5, 1), (4, 2, 1)])
def test_parameter_count_matches_the_reference_for_any_genotype(genotype, C, layers, in_chans):
    net = DARTSNetwork(genotype, C=C, layers=layers, num_classes=7, in_chans=in_chans, auxiliary=True)
    assert n_params(net) == reference_param_count(genotype, C, layers, 7, in_chans, auxiliary=True)


# --- forward ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, C, layers", [((1, 8, 8), 4, 3), ((3, 32, 32), 4, 5), ((3, 17, 23), 4, 4)])
def test_forward_shapes_and_auxiliary_logits(shape, C, layers):
    torch.manual_seed(0)
    net = DARTSNetwork("DARTS_V2", C=C, layers=layers, num_classes=10, in_chans=shape[0], img_size=shape[1:], auxiliary=True)
    x = torch.randn(3, *shape)
    net.train()
    logits, aux = net.forward_with_aux(x)
    assert logits.shape == aux.shape == (3, 10)
    assert net(x).shape == (3, 10)  # forward is always plain logits
    net.eval()
    logits, aux = net.forward_with_aux(x)
    assert logits.shape == (3, 10) and aux is None  # no auxiliary logits at evaluation
    features = net.forward_features(x)
    h, w = shape[1], shape[2]
    assert features.shape == (3, net.num_features, (h + 3) // 4, (w + 3) // 4)  # two reductions, rounding up
    assert net.forward_head(features, pre_logits=True).shape == (3, net.num_features)
    assert torch.equal(net.forward_head(features), net(x))
    assert net.get_classifier() is net.classifier
    net.reset_classifier(5)
    assert net(x).shape == (3, 5) and net.auxiliary_head.classifier.out_features == 5
    net.reset_classifier(0)
    assert net(x).shape == (3, net.num_features)


def test_no_auxiliary_head_means_no_aux_logits():
    net = DARTSNetwork("DARTS_V2", C=4, layers=3, in_chans=1, auxiliary=False).train()
    assert net.forward_with_aux(torch.randn(2, 1, 8, 8))[1] is None
    assert not hasattr(net, "auxiliary_head")


def test_input_too_small_for_the_reductions_is_a_clear_error():
    with pytest.raises(ValueError, match="too small for 5 cells with 2 reduction"):
        DARTSNetwork("DARTS_V2", C=4, layers=5, in_chans=1, img_size=3)
    net = DARTSNetwork("DARTS_V2", C=4, layers=5, in_chans=1)
    with pytest.raises(ValueError, match="at least 4"):
        net(torch.randn(1, 1, 2, 2))
    assert DARTSNetwork("DARTS_V2", C=4, layers=2, in_chans=1).min_input_size == 4  # reductions at cells 0 and 1
    # a single cell is the only reduction (layers // 3 == 2 * layers // 3 == 0): 2x2 is enough
    assert DARTSNetwork("DARTS_V2", C=4, layers=1, in_chans=1, img_size=2)(torch.randn(2, 1, 2, 2)).shape == (2, 10)


def test_drop_path_is_scheduled_by_training_mode_and_spares_identities():
    torch.manual_seed(0)
    net = DARTSNetwork("DARTS_V2", C=4, layers=3, in_chans=1)
    x = torch.randn(8, 1, 8, 8)
    net.train()
    net.drop_path_rate = 0.0
    a, b = net(x), net(x)
    assert torch.allclose(a, b)  # no randomness without drop-path (BatchNorm uses batch statistics)
    net.drop_path_rate = 0.5
    assert not torch.allclose(net(x), a)
    net.eval()
    assert torch.equal(net(x), net(x))  # never applied at evaluation
    # a cell of identities only: nothing may be dropped, whatever the probability
    skips = Genotype([("skip_connect", 0), ("skip_connect", 1)] * 2, [2, 3], [("max_pool_3x3", 0), ("max_pool_3x3", 1)], [2])
    cell = Cell(skips, 4, 4, 4, reduction=False, reduction_prev=False).train()
    s0, s1 = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.allclose(cell(s0, s1, 0.9), cell(s0, s1, 0.0))


def test_cutout_zeroes_one_clipped_square_per_image():
    torch.manual_seed(0)
    x = torch.ones(64, 3, 8, 8)
    out = cutout(x, 4)
    holes = out[:, 0] == 0  # (B, H, W)
    assert torch.equal(holes, (out == 0).all(dim=1))  # the same square in every channel
    sizes = holes.sum(dim=(1, 2))
    assert sizes.max() == 16 and sizes.min() >= 4  # 4x4, clipped to 2x2 at worst in a corner
    rows, cols = holes.any(dim=2).sum(dim=1), holes.any(dim=1).sum(dim=1)
    assert torch.equal(rows * cols, sizes)  # rectangles
    torch.manual_seed(0)
    assert torch.equal(cutout(x, 4), out)  # seeded through torch's generator
    assert torch.equal(cutout(x, 0), x)


def test_classifier_schedules_drop_path_and_stores_the_genotype_as_text():
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(pl_module.model.drop_path_rate)

    from lightning_dlstrat import DigitsDataModule

    L.seed_everything(0, verbose=False)
    model = DARTSNetClassifier(DARTS_V1, in_shape=(1, 8, 8), num_classes=10, C=4, layers=3, drop_path_prob=0.2)
    assert model.hparams.genotype == str(DARTS_V1) and model.genotype == DARTS_V1
    assert model.cutout_length == 4  # 16 on 32x32, scaled to 8x8
    trainer = L.Trainer(max_epochs=4, limit_train_batches=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=16))
    assert seen == pytest.approx([0.0, 0.05, 0.1, 0.15])  # 0.2 * epoch / epochs
    opt = trainer.optimizers[0]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9 and not opt.defaults["nesterov"]
    assert opt.defaults["weight_decay"] == 3e-4
    with pytest.raises(ValueError, match="needs image data"):
        DARTSNetClassifier(in_shape=(2,), num_classes=3)


# --- the CLI ------------------------------------------------------------------------------------

FAST = ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--model.C=4", "--model.layers=3"]


def test_cli_darts_net_end_to_end(tmp_path):
    result = runner.invoke(app, ["fit", "--model", "darts-net", "--genotype", "DARTS_V2", "--max-epochs", "1", "--out", str(tmp_path), *FAST])
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "darts-net" and summary["data"] == "digits"
    assert "val/acc" in summary["fit_metrics"]
    # the reported test accuracy is the best checkpoint's, re-measured here from its weights
    best = DARTSNetClassifier.load_from_checkpoint(summary["best_checkpoint"], map_location="cpu", weights_only=True).eval()
    dm = DigitsDataModule()
    dm.setup("test")
    with torch.no_grad():
        correct = sum(int((best(x).argmax(1) == y).sum()) for x, y in dm.test_dataloader())
    assert summary["test_metrics"]["test/acc"] == pytest.approx(correct / len(dm.test_set), abs=1e-6)
    assert Genotype.parse(summary["genotype"]) == DARTS_V2
    assert Genotype.load(run_dir / "genotype.json") == DARTS_V2
    assert summary["params"] == reference_param_count(DARTS_V2, 4, 3, 10, 1, auxiliary=False)
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "metrics.csv", "genotype.png"):
        assert (run_dir / name).is_file(), name
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)  # plain types only
    assert ckpt["hyper_parameters"]["genotype"] == str(DARTS_V2)
    # the written genotype retrains through a file path (a run directory works as well)
    result = runner.invoke(app, ["fit", "--model", "darts-net", "--genotype", str(run_dir / "genotype.json"), "--max-epochs", "1", "--out", str(tmp_path), "--trainer.limit_test_batches=1", *FAST])
    assert result.exit_code == 0, result.output
    assert Genotype.load(run_dir_of(result.output) / "genotype.json") == DARTS_V2


# random-nas (an Optuna study): tests/test_study.py


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "darts-net", "--genotype", "Genotype(normal=[('sep_conv_3x3', 0), ('conv_9x9', 1)], normal_concat=[2], reduce=[('skip_connect', 0), ('skip_connect', 1)], reduce_concat=[2])"], "unknown op 'conv_9x9'"),
        (["--model", "darts-net", "--genotype", "missing/genotype.json"], "does not exist"),
        (["--model", "random-nas", "--trials", "0"], "--trials must be a positive integer"),
        (["--model", "random-nas", "--genotype", "DARTS_V2"], "samples its own genotypes"),
    ],
)
def test_cli_bad_input_exits_2_with_the_problem(tmp_path, args, message):
    result = runner.invoke(app, ["fit", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
