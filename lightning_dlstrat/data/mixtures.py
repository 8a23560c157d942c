"""2-D mixtures of Gaussians, the mode-collapse benchmarks for GANs.

- ``ring8``: 8 modes evenly spaced on the unit circle, sigma 0.01;
- ``grid25``: 25 modes on the grid {-4, -2, 0, 2, 4}^2, sigma 0.05.

As in VEEGAN (Srivastava et al., NeurIPS 2017) and PacGAN (Lin et al., NeurIPS 2018). The points
are generated from the seed, so the data is identical on every machine. Labels are the index of
the mode each point was drawn from (handy for plots; the GAN ignores them).
"""

from __future__ import annotations

import math

import torch

from .base import BaseDataModule, TensorData


def ring8_modes() -> torch.Tensor:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return torch.stack([angles.cos(), angles.sin()], dim=1).float()  # (8, 2)


def grid25_modes() -> torch.Tensor:
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    return torch.cartesian_prod(axis, axis)  # (25, 2)


class MixtureDataModule(BaseDataModule):
    """Points drawn uniformly over the modes of a Gaussian mixture."""

    dims = (2,)
    sigma: float = 0.0
    num_train: int = 50_000  # points served per epoch (train + val)
    num_test: int = 2_500  # the PacGAN / VEEGAN evaluation size

    def __init__(self, *args, normalization="none", batch_size: int = 256, **kwargs):
        # Raw coordinates are the natural scale here: the mode metrics are defined in them.
        super().__init__(*args, normalization=normalization, batch_size=batch_size, **kwargs)

    @staticmethod
    def modes() -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def sample(cls, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        modes = cls.modes()
        labels = torch.randint(len(modes), (n,), generator=generator)  # (n,)
        points = modes[labels] + cls.sigma * torch.randn(n, 2, generator=generator)  # (n, 2)
        return points, labels

    def load(self):
        g = torch.Generator().manual_seed(self.seed)
        x, y = self.sample(self.num_train, g)
        xt, yt = self.sample(self.num_test, g)
        return TensorData(x, y), TensorData(xt, yt)


class Ring8DataModule(MixtureDataModule):
    """8 Gaussians on the unit circle, sigma 0.01: 2-D points for GAN mode coverage (generated)."""

    name = "ring8"
    sigma = 0.01
    modes = staticmethod(ring8_modes)


class Grid25DataModule(MixtureDataModule):
    """25 Gaussians on a 5x5 grid, sigma 0.05: 2-D points for GAN mode coverage (generated)."""

    name = "grid25"
    sigma = 0.05
    modes = staticmethod(grid25_modes)
