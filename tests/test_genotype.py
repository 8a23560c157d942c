"""Genotypes: parsing without eval, round trips, the published cells, derivation, sampling, pictures."""

import json
import random
from collections import namedtuple

import pytest
import torch

from lightning_dlstrat.spaces.darts.ops import PRIMITIVES
from lightning_dlstrat.spaces.darts.genotype import (
    DARTS_V1,
    DARTS_V2,
    GENOTYPES,
    PC_DARTS,
    Genotype,
    derive_genotype,
    num_edges,
    resolve_genotype,
    sample_genotype,
)
from lightning_dlstrat.spaces.darts.viz import edge_labels, plot_alpha, plot_genotype

# Verbatim from quark0/darts cnn/genotypes.py (DARTS_V1, DARTS_V2) and yuhuixu1993/PC-DARTS
# genotypes.py (PC_DARTS_cifar, which writes the concat as range(2, 6)).
QUARK0_V1 = "DARTS_V1 = Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])"
QUARK0_V2 = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
PC_DARTS_CIFAR = "PC_DARTS_cifar = Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2), ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], reduce_concat=range(2, 6))"


def test_builtins_are_the_published_cells():
    assert Genotype.parse(QUARK0_V1) == DARTS_V1
    assert Genotype.parse(QUARK0_V2) == DARTS_V2
    assert Genotype.parse(PC_DARTS_CIFAR) == PC_DARTS
    # printing gives the reference's own text back, character for character
    assert str(DARTS_V2) == QUARK0_V2
    assert str(DARTS_V1) == QUARK0_V1.removeprefix("DARTS_V1 = ")
    assert set(GENOTYPES) == {"DARTS_V1", "DARTS_V2", "PC_DARTS"}


def test_interchangeable_with_the_reference_namedtuple():
    Reference = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
    ref = Reference(normal=list(DARTS_V2.normal), normal_concat=range(2, 6), reduce=list(DARTS_V2.reduce), reduce_concat=[2, 3, 4, 5])
    g = Genotype(*ref)
    assert g == DARTS_V2
    assert str(g) == str(ref).replace("range(2, 6)", "[2, 3, 4, 5]")
    normal, normal_concat, reduce, reduce_concat = g  # unpacks like the namedtuple
    assert (normal, normal_concat) == (g.normal, (2, 3, 4, 5)) and reduce == g.reduce
    assert g._fields == Reference._fields
    assert hash(g) == hash(DARTS_V2)  # frozen: usable as a dict key


def test_round_trips(tmp_path):
    for g in (DARTS_V1, DARTS_V2, PC_DARTS, sample_genotype(3)):
        assert Genotype.parse(str(g)) == g
        assert Genotype.parse(json.dumps(g.to_dict())) == g
        assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
        path = tmp_path / "g.json"
        g.save(path)
        assert Genotype.load(path) == g
        assert json.loads(path.read_text()) == g.to_dict()
    assert not list(tmp_path.glob("*.tmp"))


def test_pt_darts_nested_pairs_are_flattened():
    nested = {"normal": [list(DARTS_V2.normal[i : i + 2]) for i in range(0, 8, 2)], "normal_concat": [2, 3, 4, 5], "reduce": [list(DARTS_V2.reduce[i : i + 2]) for i in range(0, 8, 2)], "reduce_concat": [2, 3, 4, 5]}
    assert Genotype.from_dict(nested) == DARTS_V2


def test_resolve_names_files_directories_and_text(tmp_path):
    assert resolve_genotype("DARTS_V2") is DARTS_V2
    assert resolve_genotype("pc_darts") is PC_DARTS
    assert resolve_genotype(DARTS_V1) is DARTS_V1
    assert resolve_genotype(QUARK0_V2) == DARTS_V2
    assert resolve_genotype(json.dumps(DARTS_V1.to_dict())) == DARTS_V1
    DARTS_V1.save(tmp_path / "genotype.json")
    (tmp_path / "g.txt").write_text(QUARK0_V2 + "\n")
    assert resolve_genotype(str(tmp_path / "genotype.json")) == DARTS_V1
    assert resolve_genotype(str(tmp_path / "g.txt")) == DARTS_V2
    assert resolve_genotype(str(tmp_path)) == DARTS_V1  # a run directory holding genotype.json
    with pytest.raises(ValueError, match="does not exist"):
        resolve_genotype(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="not a built-in"):
        resolve_genotype("DARTS_V3")


@pytest.mark.parametrize(
    "text, message",
    [
        (QUARK0_V2.replace("'dil_conv_3x3', 2", "'dil_conv_9x9', 2"), r"normal\[7\]: unknown op 'dil_conv_9x9'"),
        (QUARK0_V2.replace("('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0)", "('sep_conv_3x3', 0), ('sep_conv_3x3', 2), ('sep_conv_3x3', 0)", 1), r"normal\[1\].*input 2 does not exist for node 0"),
        (QUARK0_V2.replace("('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat", "('skip_connect', 5), ('max_pool_3x3', 1)], reduce_concat"), r"reduce\[6\].*input 5 does not exist for node 3"),
        (QUARK0_V2.replace(", ('dil_conv_3x3', 2)]", "]"), r"normal has 7 \(op, input\) pairs"),
        (QUARK0_V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[2, 3, 4, 9]"), r"reduce_concat: 9 is not a state"),
        (QUARK0_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[]"), r"normal_concat is empty"),
        (QUARK0_V2.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3', -1)", 1), r"input -1 does not exist"),
        (QUARK0_V2.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3', '0')", 1), r"is not an integer"),
        ('{"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]], "normal_concat": [2]}', r"missing reduce, reduce_concat"),
        ('{"normal": [', r"JSON is malformed"),
        ("Genotype(normal=[('sep_conv_3x3', 0)] * 8)", r"unsupported expression"),
        ("print('hi')", r"must be a call Genotype"),
        ("", r"empty genotype"),
    ],
)
def test_malformed_genotypes_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        Genotype.parse(text)


def test_parser_never_evaluates(tmp_path):
    target = tmp_path / "pwned"
    for text in (f"Genotype(normal=open({str(target)!r}, 'w'), normal_concat=[2], reduce=[], reduce_concat=[2])", f"__import__('pathlib').Path({str(target)!r}).touch()"):
        with pytest.raises(ValueError):
            Genotype.parse(text)
    assert not target.exists()


def _weights(picks: dict[int, dict[int, tuple[str, float]]], steps: int = 4, none_weight: float = 0.0) -> torch.Tensor:
    """(E, O) weights: small noise-free background, `picks[node][input] = (op, weight)`."""
    w = torch.full((num_edges(steps), len(PRIMITIVES)), 0.01)
    w[:, 0] = none_weight
    start = 0
    for i in range(steps):
        for j, (op, value) in picks.get(i, {}).items():
            w[start + j, PRIMITIVES.index(op)] = value
        start += i + 2
    return w


def test_derive_genotype_keeps_the_two_strongest_edges_per_node():
    normal = _weights(
        {
            0: {0: ("sep_conv_3x3", 0.5), 1: ("sep_conv_5x5", 0.6)},
            1: {0: ("skip_connect", 0.2), 1: ("dil_conv_3x3", 0.3), 2: ("max_pool_3x3", 0.9)},
            2: {3: ("avg_pool_3x3", 0.4), 1: ("sep_conv_3x3", 0.35), 0: ("dil_conv_5x5", 0.05)},
            3: {4: ("skip_connect", 0.7), 2: ("sep_conv_5x5", 0.8)},
        },
        none_weight=0.95,  # `none` is the largest everywhere and must be ignored
    )
    reduce = _weights({i: {0: ("max_pool_3x3", 0.5), 1: ("avg_pool_3x3", 0.4)} for i in range(4)})
    g = derive_genotype(normal, reduce)
    # strongest edge first within a node, as the reference's sorted(..., key=-strength)
    assert g.normal == (
        ("sep_conv_5x5", 1), ("sep_conv_3x3", 0),
        ("max_pool_3x3", 2), ("dil_conv_3x3", 1),
        ("avg_pool_3x3", 3), ("sep_conv_3x3", 1),
        ("sep_conv_5x5", 2), ("skip_connect", 4),
    )  # fmt: skip
    assert g.reduce == (("max_pool_3x3", 0), ("avg_pool_3x3", 1)) * 4
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
    # fewer nodes and a smaller multiplier, as a tiny search would use
    small = derive_genotype(normal[:5], reduce[:5], steps=2, multiplier=1)
    assert small.normal == g.normal[:4] and small.normal_concat == (3,)


def test_derive_genotype_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"expected \(14, 8\)"):
        derive_genotype(torch.rand(13, 8), torch.rand(14, 8))
    with pytest.raises(ValueError, match=r"expected \(14, 8\)"):
        derive_genotype(torch.rand(14, 8), torch.rand(14, 7))


def test_sample_genotype_is_seeded_and_uniform_over_the_space():
    assert sample_genotype(5) == sample_genotype(5)
    assert sample_genotype(5) != sample_genotype(6)
    rng = random.Random(0)
    seen_ops, seen_inputs = set(), set()
    for _ in range(200):
        g = sample_genotype(rng)
        for cell in (g.normal, g.reduce):
            for node in range(4):
                (op_a, a), (op_b, b) = cell[2 * node : 2 * node + 2]
                assert a != b and 0 <= a < node + 2 and 0 <= b < node + 2
                seen_ops.update((op_a, op_b))
                seen_inputs.update({(node, a), (node, b)})
    assert seen_ops == set(PRIMITIVES) - {"none"}
    assert seen_inputs == {(n, j) for n in range(4) for j in range(n + 2)}


def test_pictures_are_written(tmp_path):
    plot_genotype(DARTS_V2, tmp_path / "cells.png", title="DARTS_V2")
    alpha = torch.randn(14, 8).softmax(-1), torch.randn(14, 8).softmax(-1)
    plot_alpha(*alpha, PRIMITIVES, tmp_path / "alpha.png")
    for name in ("cells.png", "alpha.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert edge_labels(2) == ["n2<-s0", "n2<-s1", "n3<-s0", "n3<-s1", "n3<-s2"]
    with pytest.raises(ValueError, match="expected"):
        plot_alpha(torch.rand(14, 7), torch.rand(14, 7), PRIMITIVES, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
