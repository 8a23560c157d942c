"""The search-space interface (every space of ``lightning_dlstrat.spaces.SPACES``) and the NAS-Bench-201 space itself.

Tests that take the ``space`` fixture (conftest.py) run once per registered space, with its small
settings from ``_helpers.SPACE_CASES``; a space registered without settings fails them until it has some.

Published numbers and where they come from:

- Parameter counts (and FLOPs) of three benchmark cells, the official fixtures of the NATS-Bench
  API (D-X-Y/NATS-Bench ``fake_torch_dir/NATS-tss-v1_0-3ffb9-simple/{000000,000011,000284}.pickle.pbz2``,
  fields ``params`` / ``flop``, identical for hp 12 and 200), in the benchmark's "MB" = 1e6
  parameters (``count_parameters_in_MB``) on CIFAR-10 / CIFAR-100 / ImageNet16-120.
- The all-skip cell (fewest parameters in the benchmark, 0.073306 MB on CIFAR-10) and the
  all-nor_conv_3x3 cell (most, 1.531546 MB) are the minimum and maximum of ``params`` over the
  whole NAS-Bench-201 v1_1 data (CIFAR-10 0.073306 / 1.531546, CIFAR-100 0.079156 / 1.537396,
  ImageNet16-120 0.080456 / 1.538696), as tabulated by third-party code that reads the benchmark
  files (an HPOBench NAS-Bench-201 data script and an EvoXBench-based ``min_max_values`` table).
- The cell of index 9930 (the best on CIFAR-100, AutoDL-Projects #103): 1.288506 / 1.294356 /
  1.295656, from the closed form that reproduces all 9 fixture pairs exactly (skeleton 73,306
  parameters at 10 classes; each nor_conv_3x3 edge adds 9C^2 + 2C and each nor_conv_1x1 edge
  C^2 + 2C per cell, 5 cells per stage at C = 16, 32, 64); see shared/reference/nb201.md Sec. 4.

Fast vs reference supernets are compared as tests/test_darts_fast.py does: same weights, float64,
outputs and the gradients of every weight and of alpha to 1e-10.
"""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
from torch import nn

from lightning_dlstrat.core import DlstratError
from _helpers import SPACE_CASES, run_dir_of
from lightning_dlstrat.spaces import SPACES, DartsSpace, NB201Space, SearchSpace, get_space
from lightning_dlstrat.spaces.nb201 import (
    ALL_CONV3X3,
    ALL_SKIP,
    BEST_CIFAR100,
    EDGES,
    MAX_TEXT,
    FastNB201SearchNetwork,
    NB201Genotype,
    NB201GenotypeError,
    NB201Network,
    NB201SearchNetwork,
    edge_tensor_pairs,
    sample_nb201,
)

# --- the benchmark's numbers ------------------------------------------------------------------------
FIXTURE_0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
FIXTURE_11 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|"
FIXTURE_284 = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|none~0|nor_conv_1x1~1|none~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "ImageNet16-120": (120, 16)}  # classes, input size
# arch -> {dataset: (M params, M FLOPs)}
PUBLISHED = {
    FIXTURE_0: {"cifar10": (0.129306, 15.64737), "cifar100": (0.135156, 15.65322), "ImageNet16-120": (0.136456, 3.91948)},
    FIXTURE_11: {"cifar10": (0.802426, 113.95137), "cifar100": (0.808276, 113.95722), "ImageNet16-120": (0.809576, 28.49548)},
    FIXTURE_284: {"cifar10": (0.101306, 11.71521), "cifar100": (0.107156, 11.72106), "ImageNet16-120": (0.108456, 2.93644)},
    str(ALL_SKIP): {"cifar10": (0.073306, 7.78305), "cifar100": (0.079156, 7.78890), "ImageNet16-120": (0.080456, 1.95340)},
    ALL_NONE: {"cifar10": (0.073306, 7.78305)},  # `none` has no weights: the same as all-skip
    str(ALL_CONV3X3): {"cifar10": (1.531546, 220.11969), "cifar100": (1.537396, 220.12554), "ImageNet16-120": (1.538696, 55.03756)},
    str(BEST_CIFAR100): {"cifar10": (1.288506, 184.73025), "cifar100": (1.294356, 184.73610), "ImageNet16-120": (1.295656, 46.19020)},
}


def benchmark_flops(net: nn.Module, size: int) -> float:
    """FLOPs as the benchmark counts them (xautodl ``get_model_infos``): per image, the multiply-adds
    of Conv2d and Linear layers only (+1 per output element with a bias), in millions."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        per_out = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] + (m.bias is not None)
        total += per_out * out[0].numel()

    def linear_hook(m, inp, out):
        nonlocal total
        total += (m.in_features + (m.bias is not None)) * m.out_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total / 1e6


@pytest.mark.parametrize("arch", list(PUBLISHED), ids=["fixture0", "fixture11", "fixture284", "all-skip", "all-none", "all-conv3x3", "best-c100"])
def test_parameter_counts_and_flops_match_the_benchmark(arch):
    for dataset, (params_mb, flops_m) in PUBLISHED[arch].items():
        classes, size = DATASETS[dataset]
        net = NB201Network(arch, C=16, N=5, num_classes=classes)
        assert sum(p.numel() for p in net.parameters()) == round(params_mb * 1e6), (arch, dataset)
        assert benchmark_flops(net, size) == pytest.approx(flops_m, abs=5e-6), (arch, dataset)


# --- the string codec -------------------------------------------------------------------------------
def test_benchmark_strings_round_trip_text_and_json():
    for text in [FIXTURE_0, FIXTURE_11, FIXTURE_284, ALL_NONE, str(BEST_CIFAR100)]:
        g = NB201Genotype.parse(text)
        assert str(g) == text
        assert NB201Genotype.parse(str(g)) == g
        assert NB201Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
        assert NB201Genotype.parse(json.dumps(g.to_dict())) == g
        assert NB201Genotype.from_dict({"arch_str": text}) == g
    g = NB201Genotype.parse(FIXTURE_11)
    assert g.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "none", "nor_conv_3x3", "avg_pool_3x3")
    assert g.op(1, 2) == "avg_pool_3x3" and g.op(0, 3) == "none"
    assert g.nodes[2] == (("none", 0), ("nor_conv_3x3", 1), ("avg_pool_3x3", 2))  # the benchmark's str2lists layout
    assert g.op_indices() == [3, 3, 4, 0, 3, 4]
    assert EDGES == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert NB201Genotype.parse("  " + FIXTURE_0 + "\n") == NB201Genotype.parse(FIXTURE_0)
    assert repr(g) == f"NB201Genotype('{FIXTURE_11}')"


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'nor_conv_5x5'"),
        ("|skip_connect~0|+|none~0|none~2|+|none~0|none~1|none~2|", "input 1 reads from 2"),
        ("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~-1|", "reads from -1"),
        ("|skip_connect~0|+|none~0|none~x|+|none~0|none~1|none~2|", "reads from x"),
        ("|skip_connect~0|+|none~0|none~1|", "2 node group(s)"),
        ("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|", "4 node group(s)"),
        ("|skip_connect~0|+|none~0|+|none~0|none~1|none~2|", "node 2 must have 2 input(s)"),
        ("skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end with '|'"),
        ("|skip_connect0|+|none~0|none~1|+|none~0|none~1|none~2|", "not of the form 'op~source'"),
        ("|skip_connect~0~1|+|none~0|none~1|+|none~0|none~1|none~2|", "not of the form 'op~source'"),
        ("", "empty"),
        ("{not json", "JSON is malformed"),
        ('{"nodes": [[["none", 0]]]}', "got 1 nodes"),
        ('{"nodes": [[["none", 0]], [["none", 0], ["none", 1]], [["none", 0], ["none", 2], ["none", 1]]]}', "source 2 should be 1"),
        ('{"arch": "x"}', "exactly the key 'nodes'"),
        ("|" * (MAX_TEXT + 1), "far too long"),
    ],
)
def test_invalid_strings_give_one_clear_error(text, fragment):
    with pytest.raises(NB201GenotypeError) as info:
        NB201Genotype.parse(text)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message  # one paragraph
    assert "for example |nor_conv_3x3~0|+|" in message  # says what a valid string looks like
    assert isinstance(info.value, ValueError) and isinstance(info.value, DlstratError)
    assert len(message) < 800  # a 2,000-character input is not echoed back whole


def test_constructor_and_non_text_inputs_are_checked():
    with pytest.raises(NB201GenotypeError, match="exactly 6 ops"):
        NB201Genotype(("none",) * 5)
    with pytest.raises(NB201GenotypeError, match="unknown operation 'conv' on edge 1->2"):
        NB201Genotype(("none", "none", "conv", "none", "none", "none"))
    with pytest.raises(NB201GenotypeError, match="as text"):
        NB201Genotype.parse(b"|none~0|")
    with pytest.raises(NB201GenotypeError, match="mapping"):
        NB201Genotype.from_dict(["nodes"])


def test_discretisation_is_the_row_argmax_with_none_included():
    alpha = torch.full((6, 5), -1.0)
    for row, col in enumerate([0, 1, 2, 3, 4, 0]):
        alpha[row, col] = 1.0
    g = NB201Genotype.from_alpha(alpha)
    assert g.ops == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "none")
    # excluding none: the runner-up op of those rows (ties go to the first column, as torch.argmax)
    assert NB201Genotype.from_alpha(alpha, include_none=False).ops[0] == "skip_connect"
    assert NB201Genotype.from_alpha(torch.softmax(alpha, -1)) == g  # softmax keeps the argmax
    with pytest.raises(ValueError, match=r"\(6, 5\)"):
        NB201Genotype.from_alpha(torch.zeros(6, 4))


def test_sampling_is_uniform_and_seeded():
    def draw(seed):
        rng = random.Random(seed)
        return [sample_nb201(rng) for _ in range(20)]

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)
    rng = random.Random(7)
    counts = torch.zeros(6, 5)
    for _ in range(3000):
        g = sample_nb201(rng)
        assert NB201Genotype.parse(str(g)) == g
        for row, idx in enumerate(g.op_indices()):
            counts[row, idx] += 1
    assert counts.min() > 500 and counts.max() < 700  # ~600 per (edge, op); 5 sigma is about +-110
    with pytest.raises(TypeError, match="random.Random"):
        sample_nb201(0)


# --- the evaluation network -------------------------------------------------------------------------
def test_evaluation_network_timm_api_and_sizes():
    net = NB201Network(BEST_CIFAR100, C=8, N=1, num_classes=10, in_chans=1)
    x = torch.randn(3, 1, 8, 8)  # digits-sized
    feats = net.forward_features(x)
    assert feats.shape == (3, 32, 2, 2) and net.num_features == 32
    assert net.forward_head(feats, pre_logits=True).shape == (3, 32)
    assert net(x).shape == (3, 10) and net.get_classifier() is net.classifier
    net.reset_classifier(0)
    assert net.num_classes == 0 and net(x).shape == (3, 32)
    net.reset_classifier(5)
    assert net(x).shape == (3, 5)
    assert NB201Network(str(ALL_SKIP), C=4, N=1)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert NB201Network(str(ALL_SKIP), C=4, N=1)(torch.randn(2, 3, 7, 7)).shape == (2, 10)  # odd sizes stay aligned
    with pytest.raises(ValueError, match="at least 4"):
        net(torch.randn(1, 1, 3, 3))
    with pytest.raises(ValueError, match="unknown global_pool 'sum'"):  # timm's names: avg, max, avgmax
        net.reset_classifier(3, "sum")
    # the benchmark's module layout: BN affine everywhere, cell convs without bias
    assert all(m.affine and m.track_running_stats for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert "cells.0.layers.1.op.1.weight" in net.state_dict() and "cells.1.downsample.1.weight" in net.state_dict()


# --- fast vs reference supernet ---------------------------------------------------------------------
CONFIGS = [
    dict(C=4, N=1, in_chans=1),  # digits-sized (1x8x8), the benchmark's search BN (no affine, no running stats)
    dict(C=4, N=2, in_chans=1, affine=True, track_running_stats=True),
    dict(C=3, N=1, in_chans=3, operations=["skip_connect", "nor_conv_3x3", "none"]),
    dict(C=2, N=1, in_chans=3, operations=["none", "avg_pool_3x3"], track_running_stats=True),
]
SHAPES = [(1, 8, 8), (1, 8, 8), (3, 32, 32), (3, 7, 7)]


def pair(cfg):
    torch.manual_seed(0)
    ref = NB201SearchNetwork(**cfg).double()
    fast = FastNB201SearchNetwork(**cfg).double()
    with torch.no_grad():
        ref.alpha.normal_()  # far from uniform, so every op's weight matters
    fast.load_reference(ref)
    return ref, fast


@pytest.mark.parametrize("cfg,shape", zip(CONFIGS, SHAPES), ids=["digits-search-bn", "affine-tracked", "cifar-subset", "pool-only-odd"])
def test_fast_supernet_equals_reference_float64(cfg, shape):
    ref, fast = pair(cfg)
    x = torch.randn(4, *shape, dtype=torch.float64)
    target = torch.randint(0, 10, (4,))
    out_ref, out_fast = ref(x), fast(x)
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-10, atol=1e-10)
    nn.functional.cross_entropy(out_ref, target).backward()
    nn.functional.cross_entropy(out_fast, target).backward()
    torch.testing.assert_close(fast.alpha.grad, ref.alpha.grad, rtol=1e-10, atol=1e-12)
    assert ref.alpha.grad.abs().sum() > 0
    fast_params = {id(p): p for p in fast.parameters()}
    n_grads = 0
    for mine, theirs in edge_tensor_pairs(fast, ref):
        if theirs.requires_grad:  # a weight: its gradient is the same slice of the batched gradient
            owner = fast_params[id(mine._base)]
            grad = owner.grad.as_strided(mine.shape, mine.stride(), mine.storage_offset() - owner.storage_offset())
            torch.testing.assert_close(grad, theirs.grad, rtol=1e-10, atol=1e-12)
            n_grads += 1
        else:  # running statistics, just updated by the forward pass
            torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
    assert n_grads > 0 or "nor_conv_3x3" not in ref.operations
    ref_named = dict(ref.named_parameters())
    for name, p in fast.named_parameters():  # stem, residual blocks, last BN, classifier, alpha
        if ".sources." not in name:
            torch.testing.assert_close(p.grad, ref_named[name].grad, rtol=1e-10, atol=1e-12)
    ref.eval(), fast.eval()
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-10, atol=1e-10)
    assert fast.genotype() == ref.genotype()


def test_supernet_conventions_and_weight_round_trip():
    net = NB201SearchNetwork(C=4, N=1)
    assert net.alpha.shape == (6, 5) and net.alpha.abs().max() < 0.01  # 1e-3 * randn
    assert net.arch_parameters() == [net.alpha]
    assert len(net.weight_parameters()) == len(list(net.parameters())) - 1
    cell_bns = [m for c in net.cells if not hasattr(c, "conv_a") for m in c.modules() if isinstance(m, nn.BatchNorm2d)]
    assert cell_bns and all(not m.affine and not m.track_running_stats for m in cell_bns)  # benchmark search default
    assert all(m.bias is not None for c in net.cells if not hasattr(c, "conv_a") for m in c.modules() if isinstance(m, nn.Conv2d))
    assert net.stem[1].affine and net.cells[1].conv_a.op[2].affine  # the skeleton keeps affine BN
    torch.testing.assert_close(net.edge_weights().sum(1), torch.ones(6))
    with torch.no_grad():
        net.alpha.zero_()
        net.alpha[:, 0] = 1.0
    assert str(net.genotype()) == ALL_NONE  # none included, as the benchmark's DARTS genotype()
    assert net.genotype(include_none=False).ops == ("skip_connect",) * 6  # next best: first of the tied ops
    ref, fast = pair(CONFIGS[1])
    back = NB201SearchNetwork(**CONFIGS[1]).double()
    fast.store_reference(back)
    for (name, a), b in zip(ref.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert sum(p.numel() for p in fast.parameters()) == sum(p.numel() for p in ref.parameters())


# --- every registered space through the interface ----------------------------------------------------
def test_every_registered_space_has_small_test_settings():
    assert set(SPACES) == set(SPACE_CASES)  # a new space: add its SpaceCase to tests/_helpers.py
    assert set(SPACES) >= {"darts", "nb201"}


def test_space_interface(space, space_case, tmp_path):
    super_cfg, net_cfg = space_case.supernet, space_case.network
    assert isinstance(space, SearchSpace) and SPACES[space.name] is type(space)
    assert type(get_space(space.name)) is type(space)
    ops, topo = space.operations, space.topology
    assert "none" in ops and "skip_connect" in ops
    x = torch.randn(2, 1, 8, 8)
    for impl in ("fast", "reference"):
        net = space.supernet(impl, **super_cfg)
        alphas = net.arch_parameters()
        assert len(alphas) == len(space.cell_types)
        assert all(a.shape == (topo.num_edges, len(ops)) for a in alphas)
        assert net(x).shape == (2, 10)
        with torch.no_grad():
            for a in alphas:
                a.normal_()
        assert space.discretise(alphas) == net.genotype()
        ew = net.edge_weights()
        ew = [ew] if isinstance(ew, torch.Tensor) else list(ew)
        assert all(torch.allclose(w.sum(-1), torch.ones(topo.num_edges)) for w in ew)
    with pytest.raises(ValueError, match="'fast' or 'reference'"):
        space.supernet("turbo")
    assert all(s < t for s, t in topo.edges) and set(topo.inputs).isdisjoint(t for _, t in topo.edges)
    rng_a, rng_b = random.Random(3), random.Random(3)
    samples = [space.sample(rng_a) for _ in range(5)]
    assert samples == [space.sample(rng_b) for _ in range(5)]
    for g in samples:
        assert isinstance(g, space.genotype_class)
        assert space.parse(str(g)) == g
        assert space.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    model = space.network(samples[0], **net_cfg)
    assert model(x).shape == (2, 10) and model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)
    path = tmp_path / "cell.png"
    space.plot(samples[0], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_get_space_names():
    assert isinstance(get_space("NAS-Bench-201"), NB201Space) and isinstance(get_space("DARTS"), DartsSpace)
    with pytest.raises(ValueError, match=re.escape(f"unknown search space 'nb101'; choose from: {', '.join(SPACES)}")):
        get_space("nb101")


def test_alpha_picture(tmp_path):
    from lightning_dlstrat.spaces.nb201.viz import plot_nb201_alpha

    plot_nb201_alpha(torch.softmax(torch.randn(6, 5), -1), tmp_path / "alpha.png")
    assert (tmp_path / "alpha.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"\(6, 5\)"):
        plot_nb201_alpha(torch.zeros(6, 4), tmp_path / "bad.png")


def test_fast_supernet_float32_and_bf16_autocast():
    torch.manual_seed(0)
    cfg = dict(C=8, N=2, in_chans=1)
    ref, fast = NB201SearchNetwork(**cfg), FastNB201SearchNetwork(**cfg)
    with torch.no_grad():
        ref.alpha.normal_()
    fast.load_reference(ref)
    x = torch.randn(8, 1, 8, 8)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast(x)
    out.float().sum().backward()
    assert fast.alpha.grad.dtype == torch.float32 and torch.isfinite(fast.alpha.grad).all()  # softmax kept in float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fast_supernet_matches_reference_on_cuda():
    ref, fast = pair(CONFIGS[0])
    ref, fast = ref.cuda(), fast.cuda()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64, device="cuda")
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-10, atol=1e-10)


def test_darts_adapter_discretises_pc_darts_like_the_supernet():
    space = DartsSpace()
    net = space.supernet("reference", C=4, layers=5, in_shape=(1, 8, 8), partial_channels=2)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()
    assert len(net.arch_parameters()) == 4
    assert space.discretise(net.arch_parameters()) == net.genotype()
    assert space.topology.num_edges == 14 and space.topology.outputs == (2, 3, 4, 5)
    with pytest.raises(ValueError, match="needs 2 alpha"):
        space.discretise(net.arch_parameters()[:1])


def test_from_dict_accepts_the_nodes_property_itself():
    assert NB201Genotype.from_dict({"nodes": BEST_CIFAR100.nodes}) == BEST_CIFAR100  # tuples, as str2lists gives


# --- the nb201-net recipe: train, export and load a cell from the CLI ---------------------------------
def test_cli_nb201_net_trains_exports_and_loads(tmp_path):
    import timm
    from typer.testing import CliRunner

    from lightning_dlstrat import export
    from lightning_dlstrat.cli import app
    from lightning_dlstrat.trainers.nb201_net import NB201NetClassifier

    cell = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    runner = CliRunner()
    result = runner.invoke(app, ["fit", "--model", "nb201-net", "--model.genotype=" + cell, "--max-epochs", "1",
                                 "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["genotype"] == cell and (run_dir / "genotype.txt").read_text().strip() == cell
    best = NB201NetClassifier.load_from_checkpoint(summary["best_checkpoint"], map_location="cpu", weights_only=True).model.eval()
    assert summary["params"] == sum(p.numel() for p in best.parameters())
    folder = export.export_run(run_dir, tmp_path / "nb201-digits")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "nb201_net" and config["model_args"]["genotype"] == NB201Genotype.parse(cell).to_dict()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(NB201Network.from_pretrained(folder)(x), best(x))
        assert torch.equal(timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x), best(x))
    bad = runner.invoke(app, ["fit", "--model", "nb201-net", "--model.genotype=|conv~0|", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output and not (tmp_path / "bad").exists()
