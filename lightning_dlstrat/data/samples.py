"""Sample images of a dataset as PNG files: ``dlstrat data samples --data digits --out digits/ -n 16``.

What ``dlstrat predict --zoo mlp-digits digits/`` reads: the images of one split, un-normalised
pixels in [0, 1] saved as 8-bit grey-scale (1 channel) or RGB (3 channels) PNGs at the dataset's
own size, named ``SPLIT-NNNN-class-K.png`` (NNNN: the index in the split, K: the true class), so a
prediction can be checked against the name.
"""

from __future__ import annotations

from pathlib import Path

from ..core import DlstratError, atomic_write_bytes, shorten

SPLITS = ("test", "val", "train")
MAX_SAMPLES = 10_000


def write_samples(data: str, out: str | Path, n: int = 16, *, split: str = "test", data_dir: str | None = None, seed: int = 0) -> list[Path]:
    """Write the first ``n`` images of ``split`` of dataset ``data`` into the folder ``out``; returns the files."""
    import io

    import numpy as np
    import torch
    from PIL import Image

    from . import DATAMODULES

    if data not in DATAMODULES:
        raise DlstratError(f"unknown dataset {shorten(data, 80)!r}; choose one of: {', '.join(DATAMODULES)}")
    if split not in SPLITS:
        raise DlstratError(f"--split must be one of {', '.join(SPLITS)}, not {shorten(split, 40)!r}")
    if not 1 <= n <= MAX_SAMPLES:
        raise DlstratError(f"-n must be between 1 and {MAX_SAMPLES:,}, not {n}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DlstratError(f"--out {shorten(str(out), 200)} is a file; give a folder")
    args: dict = {"normalization": "none", "seed": seed}
    if data_dir is not None:
        args["data_dir"] = data_dir
    dm = DATAMODULES[data](**args)
    if len(dm.dims) == 1:
        raise DlstratError(f"{data} holds 2-D points, not images; choose an image dataset (dlstrat data list)")
    dm.setup("fit")
    if len(dm.dims) != 3 or dm.dims[0] not in (1, 3):
        raise DlstratError(f"{data} holds inputs of shape {tuple(dm.dims)}, not grey-scale or RGB images")
    subset = {"test": dm.test_set, "val": dm.val_set, "train": dm.train_set}[split]
    written: list[Path] = []
    for i in range(min(n, len(subset))):
        x, y = subset[i]  # (C, H, W) in [0, 1], int
        pixels = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, C)
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else np.ascontiguousarray(pixels))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        path = out / f"{split}-{i:04d}-class-{int(y)}.png"
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    return written
