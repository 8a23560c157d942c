"""Generator and discriminator networks for GANs, as plain ``nn.Module``s.

Three families, chosen by :func:`build_gan_networks` from the data's shape:

- ``dense``: the classic fully connected GAN for flattened images (Goodfellow et al., NeurIPS 2014;
  the 100-128-256-512-1024-784 generator of the well-known PyTorch MNIST GAN), with a
  784-512-256-1 discriminator;
- ``dcgan``: DCGAN-style convolutional nets (Radford et al., ICLR 2016) sized from the image:
  a ``s x s`` seed (4 <= s <= 7) doubled ``n >= 1`` times by stride-2 transposed convolutions,
  so 8x8 digits (4 -> 8), 28x28 MNIST (7 -> 14 -> 28) and 32x32 CIFAR (4 -> 8 -> 16 -> 32) all work;
- ``mlp``: small MLPs for 2-D points (the ring / grid mixtures of VEEGAN and PacGAN).

Discriminators return one *logit* per sample (no sigmoid), so every loss can use the numerically
safe ``*_with_logits`` forms, which are also safe under autocast. They carry no BatchNorm: the
gradient penalty is per sample, and batch statistics would couple the samples (Gulrajani et al.,
NeurIPS 2017, Sec. 4). Spectral normalisation (Miyato et al., ICLR 2018) is optional.
Generators carry :class:`~lightning_dlstrat.hub.HubMixin` (``save_pretrained`` / ``from_pretrained``).
"""

from __future__ import annotations

from math import prod

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ..hub import HubMixin

ARCHS = ("auto", "dense", "dcgan", "mlp")


def _sn(layer: nn.Module, enabled: bool) -> nn.Module:
    return _spectral_norm(layer) if enabled else layer


def _critic_layers(width: int, hidden: tuple[int, ...], spectral_norm: bool) -> list[nn.Module]:
    """Linear + LeakyReLU(0.2) per hidden width, then one logit: the dense discriminators' body."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [_sn(nn.Linear(width, h), spectral_norm), nn.LeakyReLU(0.2)]
        width = h
    return layers + [_sn(nn.Linear(width, 1), spectral_norm)]


def dcgan_plan(size: int) -> tuple[int, int]:
    """``(seed, doublings)`` with ``seed * 2**doublings == size``, 4 <= seed <= 7, doublings >= 1.

    Raises ``ValueError`` for sizes a stride-2 DCGAN cannot produce (odd sizes, or under 8).
    """
    seed, doublings = size, 0
    while seed % 2 == 0 and seed // 2 >= 4:
        seed, doublings = seed // 2, doublings + 1
    if doublings == 0 or seed > 7:
        raise ValueError(
            f"a DCGAN generator cannot produce {size}x{size} images: it doubles a 4..7 pixel seed, so the "
            f"size must be s * 2**n with 4 <= s <= 7 and n >= 1 (e.g. 8, 12, 16, 28, 32, 64). Resize the "
            f"data (--data.image_size for folders) or use --model.arch=dense"
        )
    return seed, doublings


# --- dense (flattened images) ------------------------------------------------------------------
class DenseGenerator(nn.Module, HubMixin, architecture="dense_generator", kind="generator", tags=["gan", "unconditional-image-generation"], paper_url="https://arxiv.org/abs/1406.2661"):
    def __init__(
        self,
        latent_dim: int = 100,
        out_shape: tuple[int, ...] = (1, 28, 28),
        hidden: tuple[int, ...] = (128, 256, 512, 1024),  # the classic MNIST GAN widths
    ):
        super().__init__()
        self.latent_dim, self.out_shape = latent_dim, tuple(out_shape)
        layers: list[nn.Module] = []
        width = latent_dim
        for i, h in enumerate(hidden):
            layers.append(nn.Linear(width, h))
            if i > 0:  # no BatchNorm on the first layer, as in the reference network
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.LeakyReLU(0.2))
            width = h
        layers += [nn.Linear(width, prod(self.out_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.out_shape)  # (B, latent) -> (B, C, H, W) in [-1, 1]


class DenseDiscriminator(nn.Module):
    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), hidden: tuple[int, ...] = (512, 256), spectral_norm: bool = False):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), *_critic_layers(prod(in_shape), hidden, spectral_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)  # (B, C, H, W) -> (B,) logits


# --- DCGAN (images) ----------------------------------------------------------------------------
class DCGANGenerator(nn.Module, HubMixin, architecture="dcgan_generator", kind="generator", tags=["gan", "unconditional-image-generation"], paper_url="https://arxiv.org/abs/1511.06434"):
    """Linear -> (C0, s, s) seed -> n x [ConvTranspose 4/2 + BN + ReLU] -> 3x3 conv -> tanh.

    Widths halve at every doubling and end at ``width``. The final 3x3 convolution (rather than
    a transposed one straight to the output channels) gives even one-doubling nets (8x8 digits)
    a layer that works at full resolution.
    """

    def __init__(self, latent_dim: int = 100, out_shape: tuple[int, ...] = (1, 28, 28), width: int = 64):
        super().__init__()
        channels, h, w = out_shape
        if h != w:
            raise ValueError(f"a DCGAN generator makes square images; the data is {h}x{w}. Use --model.arch=dense")
        seed, doublings = dcgan_plan(h)
        self.latent_dim, self.out_shape = latent_dim, tuple(out_shape)
        c0 = width * 2**doublings
        self.seed_shape = (c0, seed, seed)
        self.project = nn.Sequential(nn.Linear(latent_dim, c0 * seed * seed, bias=False), nn.BatchNorm1d(c0 * seed * seed), nn.ReLU())
        blocks: list[nn.Module] = []
        c = c0
        for _ in range(doublings):
            blocks += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        blocks += [nn.Conv2d(c, channels, 3, 1, 1), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], *self.seed_shape)  # (B, C0, s, s)
        return self.blocks(x)  # (B, C, H, W) in [-1, 1]


class DCGANDiscriminator(nn.Module):
    """3x3 stem -> n x [Conv 4/2 + LeakyReLU] (widths doubling) -> linear logit; mirrors the generator."""

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), width: int = 64, spectral_norm: bool = False):
        super().__init__()
        channels, h, w = in_shape
        if h != w:
            raise ValueError(f"a DCGAN discriminator takes square images; the data is {h}x{w}. Use --model.arch=dense")
        seed, doublings = dcgan_plan(h)
        layers: list[nn.Module] = [_sn(nn.Conv2d(channels, width, 3, 1, 1), spectral_norm), nn.LeakyReLU(0.2)]
        c = width
        for _ in range(doublings):
            layers += [_sn(nn.Conv2d(c, c * 2, 4, 2, 1), spectral_norm), nn.LeakyReLU(0.2)]
            c *= 2
        layers += [nn.Flatten(), _sn(nn.Linear(c * seed * seed, 1), spectral_norm)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)  # (B, C, H, W) -> (B,) logits


# --- MLPs (2-D points) -------------------------------------------------------------------------
class MLPGenerator(nn.Module, HubMixin, architecture="mlp_generator", kind="generator", tags=["gan", "2d-points"], paper_url="https://arxiv.org/abs/1406.2661"):
    def __init__(self, latent_dim: int = 16, out_dim: int = 2, hidden: tuple[int, ...] = (256, 256, 256)):
        super().__init__()
        self.latent_dim, self.out_shape = latent_dim, (out_dim,)
        layers: list[nn.Module] = []
        width = latent_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_dim))  # unbounded: mixture coordinates are not in [-1, 1]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, latent) -> (B, 2)


class MLPDiscriminator(nn.Module):
    def __init__(self, in_dim: int = 2, hidden: tuple[int, ...] = (256, 256, 256), spectral_norm: bool = False):
        super().__init__()
        self.net = nn.Sequential(*_critic_layers(in_dim, hidden, spectral_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)  # (B, 2) -> (B,) logits


def resolve_arch(arch: str, shape: tuple[int, ...]) -> str:
    """``"auto"`` -> ``"mlp"`` for vectors (2-D points), ``"dense"`` for images under 16x16, else ``"dcgan"``.

    Under 16 pixels a DCGAN has a single upsampling step (a 4..7 seed doubled once), and on the
    8x8 digits the classic dense pair did far better: 87% of samples confidently labelled after
    6,300 generator steps against 75% for the DCGAN (docs/gan.md).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of: {', '.join(ARCHS)}")
    if arch == "auto":
        if len(shape) == 1:
            return "mlp"
        return "dense" if min(shape[1:]) < 16 else "dcgan"
    if arch == "mlp" and len(shape) != 1:
        raise ValueError(f"arch 'mlp' is for vector data such as 2-D points; the data has shape {tuple(shape)}. Use dcgan or dense")
    if arch in ("dcgan", "dense") and len(shape) != 3:
        raise ValueError(f"arch {arch!r} is for (C, H, W) images; the data has shape {tuple(shape)}. Use mlp")
    return arch


def build_gan_networks(
    arch: str,
    shape: tuple[int, ...],
    latent_dim: int,
    width: int,
    spectral_norm: bool = False,
) -> tuple[nn.Module, nn.Module]:
    """``(generator, discriminator)`` of the given family for data of ``shape``.

    ``width`` is the hidden width of MLPs and the last generator / first discriminator
    channel count of DCGANs; the dense nets keep their classic widths.
    """
    arch = resolve_arch(arch, shape)
    if arch == "mlp":
        return MLPGenerator(latent_dim, shape[0], (width,) * 3), MLPDiscriminator(shape[0], (width,) * 3, spectral_norm)
    if arch == "dense":
        return DenseGenerator(latent_dim, shape), DenseDiscriminator(shape, spectral_norm=spectral_norm)
    return DCGANGenerator(latent_dim, shape, width), DCGANDiscriminator(shape, width, spectral_norm)
