"""Class-conditional GAN networks: cBN generators and projection discriminators (models/gan_conditional.py)."""

import pytest
import torch
from torch import nn

from lightning_dlstrat.hub import HubMixin
from lightning_dlstrat.models.gan_conditional import (
    ConditionalBatchNorm,
    ConditionalDCGANGenerator,
    ConditionalDenseGenerator,
    ProjectionDCGANDiscriminator,
    ProjectionDenseDiscriminator,
    build_conditional_gan_networks,
)

CASES = [("dense", (1, 8, 8)), ("dcgan", (1, 8, 8)), ("dcgan", (1, 28, 28)), ("dcgan", (3, 32, 32))]


def nets(arch, shape, spectral_norm=False, seed=0):
    torch.manual_seed(seed)
    return build_conditional_gan_networks(arch, shape, latent_dim=16, width=8, num_classes=10, spectral_norm=spectral_norm)


@pytest.mark.parametrize("arch,shape", CASES)
def test_shapes_and_families(arch, shape):
    g, d = nets(arch, shape, spectral_norm=True)
    assert isinstance(g, HubMixin) and not isinstance(d, HubMixin)  # only generators are published
    z, y = torch.randn(6, 16), torch.arange(6)
    x = g(z, y)
    assert x.shape == (6, *shape) and x.abs().max() <= 1.0  # tanh output
    assert d(x, y).shape == (6,) and d(x).shape == (6,)


def test_auto_arch_and_errors():
    assert isinstance(nets("auto", (1, 8, 8))[0], ConditionalDenseGenerator)  # as build_gan_networks: dense under 16x16
    g, d = nets("auto", (3, 32, 32))
    assert isinstance(g, ConditionalDCGANGenerator) and isinstance(d, ProjectionDCGANDiscriminator)
    with pytest.raises(ValueError, match="unknown conditional arch 'mlp'"):
        build_conditional_gan_networks("mlp", (2,), 2, 8, 8)
    with pytest.raises(ValueError, match="for \\(C, H, W\\) images"):
        build_conditional_gan_networks("auto", (2,), 2, 8, 8)
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_conditional_gan_networks("dense", (1, 8, 8), 16, 8, 1)
    g, d = nets("dense", (1, 8, 8))
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        g(torch.randn(4, 16), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        d(torch.randn(4, 1, 8, 8), torch.zeros(4))


@pytest.mark.parametrize("arch,shape", CASES[:2])
def test_the_class_changes_the_generated_image(arch, shape):
    g, _ = nets(arch, shape)
    g.eval()  # running statistics: each sample's output depends on its own z and y only
    z = torch.randn(1, 16).expand(10, 16)  # one latent, every class
    x = g(z, torch.arange(10))  # (10, *shape)
    diffs = (x[:, None] - x[None]).flatten(2).abs().amax(dim=2)  # (10, 10) max pixel difference
    off_diagonal = diffs[~torch.eye(10, dtype=torch.bool)]
    assert off_diagonal.min() > 1e-3  # every pair of classes gives a different image
    assert torch.equal(g(z[:2], torch.tensor([3, 3]))[0], g(z[:2], torch.tensor([3, 3]))[1])  # same z, same y: same image


def test_conditional_batchnorm_is_batchnorm_with_class_gain_and_bias():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm(4, embed_dim=3)
    x, e = torch.randn(8, 4, 5, 5), torch.randn(8, 3)
    dgamma, beta = (e @ cbn.affine.weight.T).chunk(2, dim=1)  # (8, 4), (8, 4)
    normed = nn.functional.batch_norm(x, None, None, training=True, eps=cbn.bn.eps)
    expected = normed * (1 + dgamma[:, :, None, None]) + beta[:, :, None, None]
    assert torch.allclose(cbn(x, e), expected, atol=1e-5)
    assert torch.allclose(cbn(x, torch.zeros(8, 3)), normed, atol=1e-5)  # zero embedding: plain BN, unit gain


@pytest.mark.parametrize("arch,shape", [("dense", (1, 8, 8)), ("dcgan", (3, 16, 16))])
def test_projection_term_is_miyato_koyama_eq3(arch, shape):
    """D(x, y) = psi(phi(x)) + <e_y, phi(x)>, with phi the features, psi linear, e the class embedding."""
    _, d = nets(arch, shape)
    x, y = torch.randn(5, *shape), torch.tensor([0, 3, 3, 7, 9])
    phi = d.features(x)  # (5, c)
    assert phi.shape == (5, d.num_features)
    by_hand = phi @ d.psi.weight[0] + d.psi.bias[0] + (d.embed.weight[y] * phi).sum(dim=1)
    assert torch.allclose(d(x, y), by_hand, atol=1e-5)
    assert torch.allclose(d(x, y) - d(x), (d.embed.weight[y] * phi).sum(dim=1), atol=1e-5)  # y=None: no projection
    # Changing only the embedding row of class 3 moves exactly the samples labelled 3, by <delta, phi>.
    before = d(x, y).detach()
    delta = torch.randn(d.num_features)
    with torch.no_grad():
        d.embed.weight[3] += delta
    moved = d(x, y).detach() - before
    assert torch.allclose(moved, torch.where(y == 3, phi.detach() @ delta, torch.zeros(())), atol=1e-4)


def test_dcgan_features_are_summed_over_positions():
    _, d = nets("dcgan", (1, 8, 8))
    x = torch.randn(3, 1, 8, 8)
    maps = d.convs(x)  # (3, c, 4, 4)
    assert maps.shape[2:] == (4, 4)
    assert torch.allclose(d.features(x), maps.sum(dim=(2, 3)))  # the official code sums; a mean would be 16x smaller


def test_spectral_norm_covers_psi_and_embedding():
    _, d = nets("dcgan", (1, 8, 8), spectral_norm=True)
    for _ in range(30):  # power iterations run in training-mode forward passes
        d(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))
    d.eval()
    for module in (d.psi, d.embed):
        sigma = torch.linalg.matrix_norm(module.weight.detach(), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("arch,shape", CASES[:2])
def test_gradients_flow_to_every_parameter(arch, shape):
    g, d = nets(arch, shape)
    y = torch.arange(8) % 10
    d(g(torch.randn(8, 16), y), y).sum().backward()
    for name, p in list(g.named_parameters()) + list(d.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch,shape", CASES[:2])
def test_bf16_autocast_on_cpu(arch, shape):
    g, d = nets(arch, shape, spectral_norm=True)
    y = torch.arange(8) % 10
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = g(torch.randn(8, 16), y)
        logits = d(x, y)
    assert x.shape == (8, *shape) and logits.shape == (8,)
    assert torch.isfinite(logits.float()).all() and torch.isfinite(x.float()).all()
    logits.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in g.parameters() if p.grad is not None)
    assert g.embed.weight.grad is not None and g.embed.weight.grad.abs().sum() > 0


def test_unconditional_discriminator_use():
    g = ConditionalDenseGenerator(16, (1, 8, 8), num_classes=4, hidden=(8, 16))
    d = ProjectionDenseDiscriminator((1, 8, 8), num_classes=4, hidden=(8, 16))
    assert d.num_features == 16 and d(g(torch.randn(3, 16), torch.tensor([0, 1, 2]))).shape == (3,)
