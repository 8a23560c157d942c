"""Datamodules: deterministic, disjoint splits; bilevel halves; normalisation; offline errors."""

import numpy as np
import pytest
import torch

from lightning_dlstrat.data import (
    DATAMODULES,
    DataUnavailableError,
    DigitsDataModule,
    DigitsHardDataModule,
    FolderDataModule,
    Grid25DataModule,
    Ring8DataModule,
    get_datamodule,
)
from lightning_dlstrat.data.base import EpochShuffleSampler
from lightning_dlstrat.data.digits import HARD_SEED, distort, load_digits01


def indices(subset):
    return set(subset.indices)


def test_registry_lists_every_dataset():
    assert set(DATAMODULES) == {"digits", "digits-hard", "mnist", "fashion-mnist", "cifar10", "folder", "ring8", "grid25"}
    with pytest.raises(KeyError, match="choose one of: digits, digits-hard, mnist"):
        get_datamodule("imagenet")


def test_digits_splits_are_deterministic_and_disjoint():
    a, b, c = DigitsDataModule(seed=3), DigitsDataModule(seed=3), DigitsDataModule(seed=4)
    for dm in (a, b, c):
        dm.setup()
    assert indices(a.train_set) == indices(b.train_set) and indices(a.val_set) == indices(b.val_set)
    assert indices(a.val_set) != indices(c.val_set)
    assert not indices(a.train_set) & indices(a.val_set)
    assert len(a.train_set) + len(a.val_set) + len(a.test_set) == 1797
    # the test split does not move with the run seed, so test numbers stay comparable
    assert torch.equal(a.test_set.tensors[0], c.test_set.tensors[0])
    # no test image is also a training image
    train_x = torch.stack([a.train_set[i][0] for i in range(len(a.train_set))]).flatten(1)
    test_x = a.test_set.tensors[0].flatten(1)
    train_rows = {tuple(r.tolist()) for r in train_x}
    dupes = sum(tuple(r.tolist()) in train_rows for r in test_x)
    assert dupes <= 2  # the raw data has a couple of identical images; splits are by index


@pytest.mark.threads  # distort() on several threads, then on one
def test_digits_hard_is_one_fixed_dataset_with_the_digits_splits():
    """16x16 distorted digits: the same images whatever the run seed or thread count, the same
    test split (indices and labels) as digits, and the statistics its normalisation uses."""
    x, y = load_digits01()
    torch.set_num_threads(max(2, torch.get_num_threads()))  # several threads, even where torch's default is one
    hard = distort(x)
    assert hard.shape == (1797, 1, 16, 16) and hard.dtype == torch.float32 and 0 <= hard.min() and hard.max() <= 1
    torch.set_num_threads(1)
    assert torch.equal(distort(x), hard)  # float64 construction: the thread count does not move a pixel
    assert not torch.equal(distort(x, seed=HARD_SEED + 1), hard)  # the distortions are drawn, not fixed by hand
    assert (hard.mean().item(), hard.std().item()) == pytest.approx((DigitsHardDataModule.mean[0], DigitsHardDataModule.std[0]), abs=1e-4)
    # a real distortion: no image is its upsampled original shifted by at most a pixel
    plain = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    assert (hard - plain).abs().mean() > 0.15
    a, b, plain_dm = DigitsHardDataModule(seed=3), DigitsHardDataModule(seed=4), DigitsDataModule(seed=3)
    for dm in (a, b, plain_dm):
        dm.setup()
    assert torch.equal(a.test_set.tensors[0], b.test_set.tensors[0]) and torch.equal(a.test_set.tensors[1], plain_dm.test_set.tensors[1])
    assert indices(a.val_set) == indices(plain_dm.val_set) and len(a.test_set) == 359
    xs = a.train_set.dataset.tensors[0]
    assert abs(xs.mean().item()) < 0.05 and abs(xs.std().item() - 1) < 0.05 and a.train_set[0][0].shape == (1, 16, 16)


def test_bilevel_halves_are_disjoint_and_served_together():
    dm = DigitsDataModule(bilevel=True, batch_size=32)
    dm.setup()
    w, arch, val = indices(dm.train_set), indices(dm.arch_set), indices(dm.val_set)
    assert not w & arch and not (w | arch) & val
    assert abs(len(w) - len(arch)) <= 1
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert set(batch) == {"train", "val"}
    assert batch["train"][0].shape == (32, 1, 8, 8) and batch["val"][1].shape == (32,)


def test_normalisation_round_trip_and_statistics():
    dm = DigitsDataModule()
    dm.setup()
    x = dm.train_set.dataset.tensors[0]
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    tanh = DigitsDataModule(normalization="tanh")
    tanh.setup()
    xt = tanh.train_set.dataset.tensors[0]
    assert xt.min().item() == -1.0 and xt.max().item() == 1.0
    assert torch.allclose(dm.denormalize(x), tanh.denormalize(xt), atol=1e-5)
    with pytest.raises(ValueError, match="normalization must be"):
        DigitsDataModule(normalization="zscore")


def test_shuffle_depends_on_seed_and_epoch_only():
    s = EpochShuffleSampler(50, seed=1)
    first = list(s)
    torch.manual_seed(123)  # the global RNG must not matter
    assert list(s) == first
    s.set_epoch(1)
    assert list(s) != first and sorted(s) == list(range(50))


def test_loader_settings_on_cpu():
    dm = DigitsDataModule()
    dm.setup()
    loader = dm.train_dataloader()
    assert loader.num_workers == 0 and not loader.pin_memory  # in-memory tensors, no CUDA here
    x, y = next(iter(loader))
    assert x.dtype == torch.float32 and y.dtype == torch.int64


@pytest.mark.parametrize("cls,n_modes,spacing", [(Ring8DataModule, 8, 0.76), (Grid25DataModule, 25, 2.0)])
def test_mixtures(cls, n_modes, spacing):
    modes = cls.modes()
    assert modes.shape == (n_modes, 2)
    d = torch.cdist(modes, modes) + torch.eye(n_modes) * 100
    assert d.min().item() == pytest.approx(spacing, abs=0.01)
    dm = cls(seed=0)
    dm.setup()
    x, y = dm.test_set.tensors
    assert x.shape == (2500, 2)
    # every point lies within 5 sigma of the mode it was drawn from
    assert (x - modes[y]).norm(dim=1).max().item() < 5 * cls.sigma
    # all modes are used, roughly uniformly
    counts = torch.bincount(y, minlength=n_modes).float()
    assert counts.min() > 0.5 * counts.mean()


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_download_datasets_say_what_to_put_where(name, tmp_path):
    dm = get_datamodule(name, data_dir=str(tmp_path), download=False)
    with pytest.raises(DataUnavailableError) as info:
        dm.prepare_data()
    msg = str(info.value)
    assert str(tmp_path) in msg and "Expected files" in msg and "--data digits" in msg
    assert ("t10k-images-idx3-ubyte" in msg) if name != "cifar10" else ("data_batch_1.bin" in msg)


def test_cifar10_binary_reader(tmp_path):
    """The binary batches are parsed byte by byte: label, then R, G, B planes."""
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = {}
    for f in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        r = np.concatenate([rng.integers(0, 10, (4, 1)), rng.integers(0, 256, (4, 3072))], axis=1).astype(np.uint8)
        r.tofile(root / f)
        rows[f] = r
    dm = get_datamodule("cifar10", data_dir=str(tmp_path), normalization="none", download=False)
    train, test = dm.load()
    assert len(train) == 20 and len(test) == 4
    x, y = test[1]
    assert y.item() == rows["test_batch.bin"][1, 0]
    assert x.shape == (3, 32, 32)
    assert x[1, 0, 0].item() == pytest.approx(rows["test_batch.bin"][1, 1 + 1024] / 255.0)


def test_folder_datamodule(tmp_path):
    from PIL import Image

    for cls_name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / cls_name).mkdir()
        for i in range(5):
            Image.new("RGB", (20, 12), colour).save(tmp_path / cls_name / f"{i}.png")
    dm = FolderDataModule(data_dir=str(tmp_path), image_size=16, batch_size=4, val_fraction=0.25)
    dm.setup()
    assert dm.num_classes == 2 and dm.dims == (3, 16, 16)
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 10
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (3, 16, 16)
    with pytest.raises(Exception, match="one sub-folder of images per class"):
        FolderDataModule(data_dir=str(tmp_path / "missing")).setup()
