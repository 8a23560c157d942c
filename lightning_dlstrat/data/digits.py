"""scikit-learn's bundled 8x8 handwritten digits (the embedded default dataset), and ``digits-hard``,
a fixed, harder 16x16 version of them made from the same images.

1,797 grey-scale images of the digits 0-9 (UCI "Optical Recognition of Handwritten Digits",
Alpaydin & Kaynak 1998), shipped inside scikit-learn, so both work offline and load in
milliseconds. Pixel values 0..16 are scaled to [0, 1]; a seeded 20% is the test split, the same
images in both datasets.

``digits-hard`` exists so that an architecture search has something to find on a CPU: on plain
8x8 digits random cells and searched cells retrain to within a few test images of each other
(docs/darts.md). Each image is upsampled to 16x16 and given its own random affine distortion
(rotation, scale, shear, translation), a smooth random background and pixel noise, all drawn once
from a fixed generator (:data:`HARD_SEED`), never from the run's seed: the dataset is one fixed
set of images, as a downloaded benchmark would be. Its construction and splits were fixed
before any search ran on it (docs/darts.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import BaseDataModule, TensorData

HARD_SEED = 1797  # the generator of digits-hard's distortions (the dataset, not a run, setting)


def load_digits01() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits: images (N, 1, 8, 8) in [0, 1] and labels (N,)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.long)  # (N,)
    return x, y


def distort(x: torch.Tensor, size: int = 16, seed: int = HARD_SEED) -> torch.Tensor:
    """``digits-hard``'s images from digits in [0, 1]: (N, 1, 8, 8) -> (N, 1, size, size), in [0, 1].

    Per image, from one generator seeded by ``seed`` (computed in float64, so the result does not
    depend on the run's threads): a bilinear upsampling to ``size``; an affine map with rotation
    uniform in +-30 degrees, zoom in [0.8, 1.15], shear in +-0.3 and translation in +-0.2 of the
    half-width (+-1.6 pixels at 16x16); a smooth background (uniform 4x4 noise upsampled, times
    0.5) and Gaussian pixel noise (sd 0.15); clipped to [0, 1].
    """
    g = torch.Generator().manual_seed(seed)
    n = len(x)
    x = F.interpolate(x.double(), size=(size, size), mode="bilinear", align_corners=False)  # (N, 1, S, S)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)  # (N,)

    angle, zoom, shear = uniform(-math.pi / 6, math.pi / 6), uniform(0.8, 1.15), uniform(-0.3, 0.3)
    shift = torch.stack([uniform(-0.2, 0.2), uniform(-0.2, 0.2)], dim=1)  # (N, 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotate = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (N, 2, 2)
    sheared = torch.eye(2, dtype=torch.float64).repeat(n, 1, 1)
    sheared[:, 0, 1] = shear
    # affine_grid maps output coordinates to input ones: dividing by the zoom enlarges the digit
    theta = torch.cat([rotate @ sheared / zoom[:, None, None], shift[:, :, None]], dim=2)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (N, S, S, 2)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (N, 1, S, S)
    background = F.interpolate(torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64), size=(size, size), mode="bilinear", align_corners=False)
    noise = torch.randn(n, 1, size, size, generator=g, dtype=torch.float64)
    return (x + 0.5 * background + 0.15 * noise).clamp(0.0, 1.0).float()


class DigitsDataModule(BaseDataModule):
    """scikit-learn's 8x8 handwritten digits, 1x8x8, 10 classes: embedded, offline (the default)."""

    name = "digits"
    dims = (1, 8, 8)
    num_classes = 10
    mean = (0.3070,)  # statistics of all 1,797 images after scaling to [0, 1]
    std = (0.3762,)
    test_fraction = 0.2

    def images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images in [0, 1], (N, *dims), and their labels (N,)."""
        return load_digits01()

    def load(self):
        x, y = self.images()
        x = self.normalize(x)
        # The test split is fixed (seed 0) whatever the run seed, so test numbers are comparable.
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        n_test = int(round(len(x) * self.test_fraction))
        test, rest = perm[:n_test], perm[n_test:]
        return TensorData(x[rest], y[rest]), TensorData(x[test], y[test])


class DigitsHardDataModule(DigitsDataModule):
    """The digits upsampled to 1x16x16, each with a fixed random affine distortion, background and
    noise; embedded, offline; the same splits as ``digits``.

    ``digits-hard``: the images are made by :func:`distort`, once, from a fixed seed.
    """

    name = "digits-hard"
    dims = (1, 16, 16)
    mean = (0.5104,)  # statistics of all 1,797 distorted images (tests/test_data.py recomputes them)
    std = (0.3139,)

    def images(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = load_digits01()
        return distort(x, size=self.dims[-1]), y
