"""Class-conditional GAN networks, as plain ``nn.Module``s: conditional-BN generators, projection discriminators.

The dense and DCGAN families of :mod:`lightning_dlstrat.models.gan`, given a class label ``y``:

- **Generators** (``forward(z, y)``) condition through *conditional batch normalisation*
  (de Vries et al., "Modulating early visual processing by language", NeurIPS 2017; Dumoulin et al.,
  "A learned representation for artistic style", ICLR 2017): every BatchNorm of the unconditional
  network loses its affine parameters and gets a per-class gain and bias instead,
  ``h = (1 + dgamma(y)) * BN(h) + beta(y)``. The gains and biases come from one class embedding
  shared by all layers, mapped by a bias-free linear layer per BatchNorm: the form of BigGAN
  (Brock et al., ICLR 2019, "shared embedding", without its split of ``z`` across the layers) and
  PyTorch-StudioGAN's ``ConditionalBatchNorm2d``.
  This rather than concatenating an embedding to ``z``: the three conditional generators in the
  reference note (sngan_projection, which the projection-discriminator paper trained with,
  StudioGAN and BigGAN) all condition through cBN, so the label reaches every layer instead of
  having to survive the whole network from the input. The shared embedding (not sngan_projection's
  per-layer gains initialised to exactly 1 and 0) makes the classes differ from the first step.
- **Discriminators** (``forward(x, y) -> (B,)`` logits) are *projection discriminators*
  (Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018, Eq. 3):
  ``D(x, y) = psi(phi(x)) + <embed(y), phi(x)>``, where ``phi`` is the unconditional network's
  body, ``psi`` a linear map to one logit and ``embed`` a class embedding of ``phi``'s width.
  In the convolutional family ``phi(x)`` is the last (LeakyReLU-ed) feature map *summed* over
  H x W, as in the paper's official code (``sngan_projection/dis_models/snresnet_32.py``).
  ``y=None`` drops the projection term: the discriminator is then unconditional. Like the
  unconditional ones they have no BatchNorm (per-sample gradient penalties) and optional spectral
  normalisation (Miyato et al., ICLR 2018), which also covers ``embed`` as in the official code.

:func:`build_conditional_gan_networks` mirrors :func:`~lightning_dlstrat.models.gan.build_gan_networks`.
Generators carry :class:`~lightning_dlstrat.hub.HubMixin`, like the unconditional ones.
"""

from __future__ import annotations

from math import prod

import torch
from torch import nn

from ..hub import HubMixin
from .gan import _critic_layers, _sn, dcgan_plan, resolve_arch

CONDITIONAL_ARCHS = ("auto", "dense", "dcgan")
EMBED_DIM = 128  # BigGAN's shared embedding width for CIFAR-10 (StudioGAN g_shared_dim)


def class_rows(num_classes: int, per_class: int) -> torch.Tensor:
    """(num_classes * per_class,) labels 0,0,...,1,1,...: a grid of ``per_class`` columns has one class per row."""
    return torch.arange(num_classes).repeat_interleave(per_class)  # (K * per_class,)


def _check_labels(y: torch.Tensor, num_classes: int, batch: int) -> None:
    if y.shape != (batch,):
        raise ValueError(f"class labels must have shape ({batch},) to match the batch, not {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"class labels must be integers, not {y.dtype}")


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without affine parameters, then a per-sample gain ``1 + dgamma`` and bias ``beta``.

    ``dgamma, beta`` come from a bias-free linear map of the class embedding, so a zero embedding
    gives plain BatchNorm with unit gain. ``spatial``: inputs are (B, C, H, W), else (B, C).
    """

    def __init__(self, num_features: int, embed_dim: int, spatial: bool = True):
        super().__init__()
        self.num_features = num_features
        self.bn = (nn.BatchNorm2d if spatial else nn.BatchNorm1d)(num_features, affine=False)
        self.affine = nn.Linear(embed_dim, 2 * num_features, bias=False)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)  # (B, C[, H, W])
        dgamma, beta = self.affine(e).chunk(2, dim=1)  # (B, C), (B, C)
        shape = (len(x), self.num_features) + (1,) * (x.dim() - 2)  # broadcast over H, W
        return h * (1.0 + dgamma.view(shape)) + beta.view(shape)  # (B, C[, H, W])


# --- dense (flattened images) ------------------------------------------------------------------
class ConditionalDenseGenerator(nn.Module, HubMixin, architecture="conditional_dense_generator", kind="generator", tags=["gan", "conditional-image-generation"], paper_url="https://arxiv.org/abs/1802.05637"):
    """The classic dense generator (:class:`~lightning_dlstrat.models.gan.DenseGenerator`) with cBN.

    As there, the first hidden layer has no normalisation; every later one has a conditional BN.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        out_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
        hidden: tuple[int, ...] = (128, 256, 512, 1024),
        embed_dim: int = EMBED_DIM,
    ):
        super().__init__()
        self.latent_dim, self.out_shape, self.num_classes = latent_dim, tuple(out_shape), num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)  # N(0, 1) rows: the classes differ from the start
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = latent_dim
        for i, h in enumerate(hidden):
            self.linears.append(nn.Linear(width, h))
            self.norms.append(nn.Identity() if i == 0 else ConditionalBatchNorm(h, embed_dim, spatial=False))
            width = h
        self.act = nn.LeakyReLU(0.2)
        self.out = nn.Sequential(nn.Linear(width, prod(self.out_shape)), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_labels(y, self.num_classes, len(z))
        e = self.embed(y.long())  # (B, embed_dim)
        h = z  # (B, latent)
        for linear, norm in zip(self.linears, self.norms):
            h = linear(h)  # (B, hidden_i)
            h = self.act(h if isinstance(norm, nn.Identity) else norm(h, e))  # (B, hidden_i)
        return self.out(h).view(z.shape[0], *self.out_shape)  # (B, C, H, W) in [-1, 1]


class ProjectionDenseDiscriminator(nn.Module):
    """The dense discriminator's body as ``phi`` (its last LeakyReLU output), ``psi`` and a class projection."""

    def __init__(
        self,
        in_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
        hidden: tuple[int, ...] = (512, 256),
        spectral_norm: bool = False,
    ):
        super().__init__()
        self.num_classes = num_classes
        body = _critic_layers(prod(in_shape), hidden, spectral_norm)[:-1]  # drop the unconditional logit layer
        self.phi = nn.Sequential(nn.Flatten(), *body)
        self.num_features = hidden[-1]
        self.psi = _sn(nn.Linear(self.num_features, 1), spectral_norm)
        self.embed = _sn(nn.Embedding(num_classes, self.num_features), spectral_norm)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.phi(x)  # (B, C, H, W) -> (B, num_features)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return _project(self, self.features(x), y)  # (B,) logits


def _project(d: nn.Module, phi: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """``psi(phi) + <embed(y), phi>`` (Miyato & Koyama 2018, Eq. 3); without ``y`` just ``psi(phi)``."""
    out = d.psi(phi).squeeze(1)  # (B,)
    if y is None:
        return out
    _check_labels(y, d.num_classes, len(phi))
    return out + (d.embed(y.long()) * phi).sum(dim=1)  # (B,) + sum_k e_y[k] * phi[k]


# --- DCGAN (images) ----------------------------------------------------------------------------
class ConditionalDCGANGenerator(nn.Module, HubMixin, architecture="conditional_dcgan_generator", kind="generator", tags=["gan", "conditional-image-generation"], paper_url="https://arxiv.org/abs/1802.05637"):
    """:class:`~lightning_dlstrat.models.gan.DCGANGenerator` with cBN.

    Linear -> reshape to the (C0, s, s) seed -> cBN + ReLU -> n x [ConvTranspose 4/2 + cBN + ReLU]
    -> 3x3 conv -> tanh. The seed is normalised per channel after the reshape (the unconditional
    net normalises each of its C0*s*s features), so the class map has C0 rather than C0*s*s outputs.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        out_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
        width: int = 64,
        embed_dim: int = EMBED_DIM,
    ):
        super().__init__()
        channels, h, w = out_shape
        if h != w:
            raise ValueError(f"a DCGAN generator makes square images; the data is {h}x{w}. Use --model.arch=dense")
        seed, doublings = dcgan_plan(h)
        self.latent_dim, self.out_shape, self.num_classes = latent_dim, tuple(out_shape), num_classes
        c0 = width * 2**doublings
        self.seed_shape = (c0, seed, seed)
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.project = nn.Linear(latent_dim, c0 * seed * seed, bias=False)  # the cBN's bias replaces it
        self.project_norm = ConditionalBatchNorm(c0, embed_dim)
        self.ups = nn.ModuleList()
        self.norms = nn.ModuleList()
        c = c0
        for _ in range(doublings):
            self.ups.append(nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False))
            self.norms.append(ConditionalBatchNorm(c // 2, embed_dim))
            c //= 2
        self.act = nn.ReLU()
        self.out = nn.Sequential(nn.Conv2d(c, channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_labels(y, self.num_classes, len(z))
        e = self.embed(y.long())  # (B, embed_dim)
        x = self.project(z).view(z.shape[0], *self.seed_shape)  # (B, C0, s, s)
        x = self.act(self.project_norm(x, e))  # (B, C0, s, s)
        for up, norm in zip(self.ups, self.norms):
            x = self.act(norm(up(x), e))  # (B, C_i / 2, 2 H_i, 2 W_i)
        return self.out(x)  # (B, C, H, W) in [-1, 1]


class ProjectionDCGANDiscriminator(nn.Module):
    """The DCGAN discriminator's convolutions as ``phi`` (summed over H x W), ``psi`` and a class projection."""

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10, width: int = 64, spectral_norm: bool = False):
        super().__init__()
        channels, h, w = in_shape
        if h != w:
            raise ValueError(f"a DCGAN discriminator takes square images; the data is {h}x{w}. Use --model.arch=dense")
        _, doublings = dcgan_plan(h)
        self.num_classes = num_classes
        layers: list[nn.Module] = [_sn(nn.Conv2d(channels, width, 3, 1, 1), spectral_norm), nn.LeakyReLU(0.2)]
        c = width
        for _ in range(doublings):
            layers += [_sn(nn.Conv2d(c, c * 2, 4, 2, 1), spectral_norm), nn.LeakyReLU(0.2)]
            c *= 2
        self.convs = nn.Sequential(*layers)
        self.num_features = c
        self.psi = _sn(nn.Linear(c, 1), spectral_norm)
        self.embed = _sn(nn.Embedding(num_classes, c), spectral_norm)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # Sum, not mean, over positions: the official projection code sums (its comment says average).
        return self.convs(x).sum(dim=(2, 3))  # (B, C, H, W) -> (B, c, s, s) -> (B, c)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return _project(self, self.features(x), y)  # (B,) logits


def build_conditional_gan_networks(
    arch: str,
    in_shape: tuple[int, ...],
    latent_dim: int,
    width: int,
    num_classes: int,
    spectral_norm: bool = False,
) -> tuple[nn.Module, nn.Module]:
    """``(generator, discriminator)``, class-conditional, of the given family for images of ``in_shape``.

    ``arch`` is resolved as by :func:`~lightning_dlstrat.models.gan.resolve_arch` ("auto": dense
    under 16x16, else DCGAN); ``"mlp"`` (2-D points) has no conditional form. ``width`` is the DCGAN
    base channel count; the dense nets keep their classic widths, as in ``build_gan_networks``.
    """
    if arch not in CONDITIONAL_ARCHS:
        raise ValueError(f"unknown conditional arch {arch!r}; choose one of: {', '.join(CONDITIONAL_ARCHS)} (2-D points have no conditional networks)")
    if num_classes < 2:
        raise ValueError(f"a class-conditional GAN needs at least 2 classes, not {num_classes}")
    arch = resolve_arch(arch, tuple(in_shape))
    if arch == "mlp":
        raise ValueError(f"class-conditional networks are for (C, H, W) images; the data has shape {tuple(in_shape)}")
    if arch == "dense":
        return ConditionalDenseGenerator(latent_dim, in_shape, num_classes), ProjectionDenseDiscriminator(in_shape, num_classes, spectral_norm=spectral_norm)
    return ConditionalDCGANGenerator(latent_dim, in_shape, num_classes, width), ProjectionDCGANDiscriminator(in_shape, num_classes, width, spectral_norm)
