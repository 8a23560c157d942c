"""scikit-learn's bundled 8x8 handwritten digits: the embedded default dataset.

1,797 grey-scale images of the digits 0-9 (UCI "Optical Recognition of Handwritten Digits",
Alpaydin & Kaynak 1998), shipped inside scikit-learn, so this works offline and loads in
milliseconds. Pixel values 0..16 are scaled to [0, 1]; a seeded 20% is the test split.
"""

from __future__ import annotations

import torch

from .base import BaseDataModule, TensorData


class DigitsDataModule(BaseDataModule):
    """scikit-learn's 8x8 handwritten digits, 1x8x8, 10 classes: embedded, offline (the default)."""

    name = "digits"
    dims = (1, 8, 8)
    num_classes = 10
    mean = (0.3070,)  # statistics of all 1,797 images after scaling to [0, 1]
    std = (0.3762,)
    test_fraction = 0.2

    def load(self):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
        y = torch.tensor(bunch.target, dtype=torch.long)  # (N,)
        x = self.normalize(x)
        # The test split is fixed (seed 0) whatever the run seed, so test numbers are comparable.
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        n_test = int(round(len(x) * self.test_fraction))
        test, rest = perm[:n_test], perm[n_test:]
        return TensorData(x[rest], y[rest]), TensorData(x[test], y[test])
