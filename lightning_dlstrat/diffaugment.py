"""DiffAugment: differentiable augmentations applied to every image the discriminator sees.

Zhao, Liu, Lin, Zhu & Han, "Differentiable Augmentation for Data-Efficient GAN Training"
(NeurIPS 2020). Every ``D(x)`` becomes ``D(T(x))``, on real and fake images in the discriminator
step and on fake images in the generator step; because ``T`` is differentiable, the generator's
gradient passes through it. Augmenting only the reals would teach G to produce augmented images;
augmenting both, in the same form, keeps D from memorising a small training set.

The three transforms, with the paper's parameters, on (B, C, H, W) images in [-1, 1] (a
generator's tanh range, which the brightness offsets are sized for), each drawn per sample:

- ``color``: brightness (add U[-0.5, 0.5)), then saturation (scale each pixel's deviation from
  its mean over channels by U[0, 2)), then contrast (scale each image's deviation from its mean
  over all pixels by U[0.5, 1.5)). On 1-channel images saturation is the identity: a grey pixel
  equals its channel mean, so there is no colour to scale (it draws no random numbers either);
- ``translation``: shift by an integer in [-r, r] pixels along each axis, r = round(H / 8)
  (resp. W / 8), filling the uncovered border with zeros;
- ``cutout``: zero a rectangle of round(H / 2) x round(W / 2) pixels centred on a uniformly drawn
  pixel, clipped at the image borders.

A policy is a comma-separated list applied in its order; the paper's full policy
``"color,translation,cutout"`` suits hundreds to a few thousand images, subsets larger data
(its CIFAR-10 100%-data BigGAN runs use ``"translation,cutout"``). The colour operations can also
be named one by one (``brightness``, ``saturation``, ``contrast``).

Randomness comes from the ``generator`` passed (a ``torch.Generator``), so a seeded generator
reproduces the augmentations exactly; None uses torch's global RNG. Real and fake batches get
independent draws (call the function once per batch), as in the paper's code.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

TRANSLATION_RATIO = 0.125  # the paper's default: up to 1/8 of the image
CUTOUT_RATIO = 0.5  # a square of half the image side
DEFAULT_POLICY = "color,translation,cutout"


def _uniform(n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` draws from U[0, 1), on the generator's device, returned as (n,) in ``x``'s dtype and device."""
    device = generator.device if generator is not None else x.device
    return torch.rand(n, generator=generator, device=device).to(device=x.device, dtype=x.dtype)  # (n,)


def _randint(low: int, high: int, n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` integers in [low, high), (n,) int64 on ``x``'s device."""
    device = generator.device if generator is not None else x.device
    return torch.randint(low, high, (n,), generator=generator, device=device).to(x.device)  # (n,)


def brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    shift = _uniform(len(x), x, generator) - 0.5  # (B,) in [-0.5, 0.5)
    return x + shift.view(-1, 1, 1, 1)  # (B, C, H, W)


def saturation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    if x.shape[1] == 1:  # grey: every pixel equals its channel mean, nothing to scale
        return x
    mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    scale = 2.0 * _uniform(len(x), x, generator)  # (B,) in [0, 2)
    return (x - mean) * scale.view(-1, 1, 1, 1) + mean  # (B, C, H, W)


def contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    scale = _uniform(len(x), x, generator) + 0.5  # (B,) in [0.5, 1.5)
    return (x - mean) * scale.view(-1, 1, 1, 1) + mean  # (B, C, H, W)


def translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """``out[b, :, i, j] = x[b, :, i - dy[b], j - dx[b]]`` where that pixel exists, else 0.

    ``dy, dx``: (B,) integer shifts (positive: down / right). Built by indexing a zero-padded
    copy, so the gradient reaches every pixel that stays in the picture.
    """
    b, _, h, w = x.shape
    py, px = int(dy.abs().max()), int(dx.abs().max())  # pad just enough for the largest shift
    padded = nn.functional.pad(x, (px, px, py, py))  # (B, C, H + 2 py, W + 2 px), zero fill
    rows = torch.arange(h, device=x.device).view(1, h) - dy.view(b, 1) + py  # (B, H) source rows in padded
    cols = torch.arange(w, device=x.device).view(1, w) - dx.view(b, 1) + px  # (B, W) source columns
    batch = torch.arange(b, device=x.device).view(b, 1, 1)  # (B, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)  # (B, C, H, W)


def translation(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    _, _, h, w = x.shape
    ry, rx = int(h * ratio + 0.5), int(w * ratio + 0.5)  # round half up: 4 px at 32, 1 px at 8
    dy = _randint(-ry, ry + 1, len(x), x, generator)  # (B,) in [-ry, ry]
    dx = _randint(-rx, rx + 1, len(x), x, generator)  # (B,) in [-rx, rx]
    return translate(x, dy, dx)


def cutout_mask(shape: torch.Size | tuple[int, ...], cy: torch.Tensor, cx: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) mask, 0 on a ``size`` rectangle whose centre pixel is (cy, cx) (clipped at the borders), else 1.

    An even side s covers rows cy - s/2 .. cy + s/2 - 1; an odd one is symmetric about cy.
    """
    b, _, h, w = shape
    sh, sw = size
    top, left = cy - sh // 2, cx - sw // 2  # (B,), (B,)
    r = torch.arange(h, device=cy.device).view(1, h)  # (1, H)
    c = torch.arange(w, device=cy.device).view(1, w)  # (1, W)
    in_rows = (r >= top.view(b, 1)) & (r < top.view(b, 1) + sh)  # (B, H)
    in_cols = (c >= left.view(b, 1)) & (c < left.view(b, 1) + sw)  # (B, W)
    return (~(in_rows.view(b, 1, h, 1) & in_cols.view(b, 1, 1, w))).float()  # (B, 1, H, W)


def cutout(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    _, _, h, w = x.shape
    size = (int(h * ratio + 0.5), int(w * ratio + 0.5))  # 16x16 at 32x32, 4x4 at 8x8
    cy = _randint(0, h, len(x), x, generator)  # (B,) centre row
    cx = _randint(0, w, len(x), x, generator)  # (B,) centre column
    return x * cutout_mask(x.shape, cy, cx, size).to(x.dtype)  # (B, C, H, W); zero gradient under the patch


Augment = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]
AUGMENTS: dict[str, tuple[Augment, ...]] = {
    "color": (brightness, saturation, contrast),
    "brightness": (brightness,),
    "saturation": (saturation,),
    "contrast": (contrast,),
    "translation": (translation,),
    "cutout": (cutout,),
}


def parse_policy(policy: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"color, translation,cutout"`` (or a list of names) -> ``("color", "translation", "cutout")``.

    ``""``, ``None`` and ``"none"`` mean no augmentation. Unknown names raise ``ValueError``.
    """
    if policy is None:
        return ()
    names = policy.split(",") if isinstance(policy, str) else list(policy)
    names = [str(n).strip().lower() for n in names]
    names = [n for n in names if n]
    if names == ["none"]:
        return ()
    unknown = [n for n in names if n not in AUGMENTS]
    if unknown:
        raise ValueError(
            f"unknown DiffAugment polic{'ies' if len(unknown) > 1 else 'y'} {', '.join(map(repr, unknown))}; "
            f"a policy is a comma-separated list of: {', '.join(AUGMENTS)} (e.g. {DEFAULT_POLICY!r}), or 'none'"
        )
    return tuple(names)


def diff_augment(x: torch.Tensor, policy: str | Iterable[str] | None = DEFAULT_POLICY, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (B, C, H, W) augmented by ``policy``, differentiably; parameters drawn per sample from ``generator``."""
    if x.dim() != 4:
        raise ValueError(f"DiffAugment takes (B, C, H, W) images, not a tensor of shape {tuple(x.shape)}")
    names = parse_policy(policy)  # before the empty-batch return: a bad policy always fails
    if len(x) == 0:
        return x
    for name in names:
        for fn in AUGMENTS[name]:
            x = fn(x, generator)  # (B, C, H, W)
    return x


class DiffAugment(nn.Module):
    """:func:`diff_augment` as a module (no parameters): ``DiffAugment("translation,cutout")(x, generator)``.

    The policy is parsed when the module is built, so a typo fails before training starts.
    """

    def __init__(self, policy: str | Iterable[str] | None = DEFAULT_POLICY):
        super().__init__()
        self.policy = parse_policy(policy)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return diff_augment(x, self.policy, generator)  # (B, C, H, W)

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policy) or 'none'!r}"
