"""Using trained networks: score a checkpoint (``dlstrat test`` / ``validate``) and predict classes (``dlstrat predict``).

A network comes from a ``dlstrat fit`` checkpoint or from a model folder of the zoo
(:func:`load`); either way it brings its *data config*, the preprocessing it was trained with,
in timm's ``pretrained_cfg`` terms: ``input_size`` (C, H, W), ``mean`` / ``std`` and the label
names. A checkpoint's come from its datamodule's saved arguments, a zoo model's from its
``config.json``. :func:`predict` reads images (PNG / JPEG files or folders of them) or tensors
(``.npy``, or ``.pt`` read with ``weights_only=True``), applies that preprocessing and writes one
row of class probabilities per input, as CSV or JSON.

Inputs are bounded (:data:`MAX_INPUTS`, :data:`MAX_IMAGE_PIXELS`, :data:`MAX_TENSOR_BYTES`), and a
decompression bomb is refused from its header before it is decoded.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import build
from .core import DlstratError, atomic_write_bytes, gib, shell_command, shorten
from .data import DATAMODULES
from .recipes import get_recipe
from .run import checkpoint_info, read_checkpoint

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TENSOR_SUFFIXES = (".npy", ".pt")
MAX_INPUTS = 100_000  # images or tensor rows in one call
MAX_IMAGE_PIXELS = 40_000_000  # per image, read from its header before decoding (PIL warns at 89M)
MAX_TENSOR_BYTES = 2 << 30  # per .npy / .pt file, and what a .pt file's records decompress to
MAX_PT_RECORDS = 10_000  # records in a .pt archive (torch.save writes one per storage, plus 6)
BATCH = 256  # inputs per forward pass


@dataclass
class Loaded:
    """A network ready for inference (eval mode, CPU) and the data config it was trained with."""

    net: nn.Module
    kind: str  # "classifier" or "generator"
    source: str  # what it was loaded from, for messages
    input_size: tuple[int, ...] = ()  # classifiers: one input's shape, (C, H, W) or (D,)
    mean: tuple[float, ...] = ()  # per-channel statistics of "standard" normalisation (empty: none)
    std: tuple[float, ...] = ()
    normalization: str = "standard"  # "standard", "tanh" ([-1, 1]) or "none", as data.BaseDataModule
    label_names: list[str] = field(default_factory=list)
    how_to_sample: str = ""  # generators: the `dlstrat sample` command for this source

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] as the network's training data were. x: (B, *input_size)."""
        if self.normalization == "tanh":
            return x * 2.0 - 1.0
        if self.normalization == "none" or not self.mean:
            return x
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - torch.tensor(self.mean).view(shape)) / torch.tensor(self.std).view(shape)

    def data_config(self) -> dict[str, Any]:
        """What preprocessing an exported copy of the network needs (JSON-ready)."""
        out: dict[str, Any] = {"kind": self.kind, "architecture": getattr(self.net, "architecture", type(self.net).__name__)}
        if self.kind == "classifier":
            out.update(input_size=list(self.input_size), mean=list(self.mean), std=list(self.std), normalization=self.normalization, label_names=self.label_names)
        else:
            out.update(latent_dim=int(self.net.latent_dim), out_shape=list(self.net.out_shape), output_range=[-1.0, 1.0])
            if getattr(self.net, "num_classes", 0):
                out["num_classes"] = int(self.net.num_classes)
        return out


# --- loading -----------------------------------------------------------------------------------------
def load(checkpoint: str | Path | None = None, zoo_name: str | None = None) -> Loaded:
    """The network of a ``dlstrat fit`` checkpoint, or of a zoo model (a name, a model folder or ``ORG/NAME``)."""
    if (checkpoint is None) == (zoo_name is None):
        raise DlstratError("give exactly one of --checkpoint CKPT (a `dlstrat fit` checkpoint) or --zoo NAME (a zoo model, see `dlstrat zoo list`)")
    return from_checkpoint(checkpoint) if checkpoint is not None else from_zoo(zoo_name)


def from_zoo(name: str) -> Loaded:
    from . import hub, zoo

    if name in zoo.entries():
        entry = zoo.get_entry(name)
        if entry.kind == "genotype":
            raise DlstratError(f"zoo model {name} is a published cell without weights; train it first: dlstrat fit --model darts-net --genotype ...")
        folder, how = entry.folder, f"dlstrat sample --zoo {name}"
    elif Path(name).is_dir() or "/" in name:  # a model folder (dlstrat zoo export) or a Hub repo
        folder, how = name, "lightning_dlstrat.hub.load_model(...).eval()(torch.randn(n, latent_dim))"
    else:
        raise DlstratError(f"unknown zoo model {shorten(name, 80)!r}; the zoo has: {', '.join(zoo.entries())} (or give a model folder or ORG/NAME)")
    net = hub.load_model(folder).eval()
    config = hub.read_config(hub.fetch(folder, (hub.CONFIG_NAME,))[hub.CONFIG_NAME], str(name))
    cfg = config.get("pretrained_cfg") or {}
    mean, std = tuple(cfg.get("mean") or ()), tuple(cfg.get("std") or ())
    input_size = tuple(cfg.get("input_size") or hub.timm_fields(net).get("pretrained_cfg", {}).get("input_size") or ()) if net.kind == "classifier" else ()
    labels = [str(v) for v in cfg.get("label_names") or range(getattr(net, "num_classes", 0))] if net.kind == "classifier" else []
    return Loaded(net, net.kind, f"zoo model {name}", input_size, mean, std, "standard" if mean else "none", labels, how)


def from_checkpoint(path: str | Path) -> Loaded:
    """The network a checkpoint's LightningModule deploys (``export_network()``), on CPU, in eval mode."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    info = checkpoint_info(ckpt, path)
    recipe = get_recipe(info["model"])
    dm = datamodule_of(ckpt, path, info)
    if recipe.network_from_checkpoint is not None:  # the recipe's own way (gan: its EMA generator)
        net = recipe.network_from_checkpoint(ckpt, path)
    else:
        net = load_module(recipe, path).export_network()
    if net is None:
        raise DlstratError(
            f"{path} is a {info['model']} checkpoint, whose product is a genotype, not a network to run; "
            "retrain the genotype with `dlstrat fit --model darts-net --genotype RUN_DIR` and use that run's checkpoint"
        )
    if getattr(net, "kind", "classifier") == "generator":
        return Loaded(net.eval(), "generator", str(path), how_to_sample=shell_command("dlstrat", "sample", "--checkpoint", path))
    labels = [str(i) for i in range(dm.num_classes)] if dm.num_classes else [str(i) for i in range(getattr(net, "num_classes", 0))]
    return Loaded(net.eval(), getattr(net, "kind", "classifier"), str(path), tuple(dm.dims), tuple(dm.mean), tuple(dm.std), dm.normalization, labels)


def datamodule_of(ckpt: dict[str, Any], path: Path, info: dict[str, str], data_dir: str | None = None):
    """The datamodule a checkpoint was trained with (its saved arguments; nothing is loaded yet)."""
    if info["data"] not in DATAMODULES:
        raise DlstratError(f"{path} was trained on the dataset {shorten(info['data'], 60)!r}, which this version does not know; known: {', '.join(DATAMODULES)}")
    args = dict(ckpt.get("datamodule_hyper_parameters") or {})
    if data_dir is not None:
        args["data_dir"] = data_dir
    return build(DATAMODULES[info["data"]], args, f"dataset {info['data']}")


def load_module(recipe, path: Path):
    try:
        return recipe.module.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except (RuntimeError, TypeError, KeyError, ValueError) as e:
        raise DlstratError(f"{path} does not load into a {recipe.module.__name__} ({type(e).__name__}: {shorten(str(e), 300)})") from None


# --- dlstrat test / validate ---------------------------------------------------------------------------
def evaluate(checkpoint: str | Path, stage: str, data_dir: str | None = None, accelerator: str = "auto", devices: Any = 1) -> dict[str, float]:
    """``Trainer.test`` or ``Trainer.validate`` of a checkpoint on its own dataset's split; the metrics.

    The datamodule is rebuilt from the checkpoint's saved arguments (its seed among them), so the
    validation split is the one the run validated on and ``val/loss`` of ``best.ckpt`` is the
    score ModelCheckpoint kept.
    """
    import lightning as L

    checkpoint = Path(checkpoint)
    ckpt = read_checkpoint(checkpoint)
    info = checkpoint_info(ckpt, checkpoint)
    recipe = get_recipe(info["model"])
    split = {"test": "test", "validate": "validation"}[stage]
    step = f"{'test' if stage == 'test' else 'validation'}_step"
    if (stage == "test" and not recipe.test) or getattr(recipe.module, step) is getattr(L.LightningModule, step):
        raise DlstratError(f"{checkpoint} is a {info['model']} checkpoint, which has no {split} split to score; draw from it with `{shell_command('dlstrat', 'sample', '--checkpoint', checkpoint)}`")
    dm = datamodule_of(ckpt, checkpoint, info, data_dir)
    module = load_module(recipe, checkpoint)
    trainer = L.Trainer(accelerator=accelerator, devices=devices, logger=False, enable_progress_bar=False, enable_model_summary=False)
    run = trainer.test if stage == "test" else trainer.validate
    return {k: float(v) for k, v in run(module, datamodule=dm, verbose=False)[0].items()}


# --- reading inputs -------------------------------------------------------------------------------------
def gather(inputs: list[str | Path]) -> list[Path]:
    """The files to predict: image and tensor files as given, folders expanded to their images (sorted, recursive)."""
    if not inputs:
        raise DlstratError("give the inputs to predict: image files (.png, .jpg), folders of them, or .npy / .pt tensors")
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DlstratError(f"{item} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif not item.is_file():
            raise DlstratError(f"input {shorten(str(item), 200)} does not exist")
        elif item.suffix.lower() not in IMAGE_SUFFIXES + TENSOR_SUFFIXES:
            raise DlstratError(f"input {shorten(str(item), 200)}: {item.suffix or 'no suffix'} is not a known input; give images ({', '.join(IMAGE_SUFFIXES)}) or tensors ({', '.join(TENSOR_SUFFIXES)})")
        else:
            files.append(item)
        if len(files) > MAX_INPUTS:
            raise DlstratError(f"more than {MAX_INPUTS:,} input files; predict them in several calls")
    return files


def read_image(path: Path, input_size: tuple[int, ...]) -> torch.Tensor:
    """One image as (C, H, W) pixels in [0, 1]: converted to the network's channels and resized (bilinear)."""
    from PIL import Image, UnidentifiedImageError
    import torchvision.transforms.v2.functional as TF

    if len(input_size) != 3 or input_size[0] not in (1, 3):
        raise DlstratError(f"{path}: this network takes inputs of shape {tuple(input_size)}, not images; give a .npy / .pt tensor")
    channels, height, width = input_size
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise DlstratError(f"{path} is {img.width}x{img.height} pixels, more than the {MAX_IMAGE_PIXELS:,} read; shrink it first")
            img = img.convert("L" if channels == 1 else "RGB")
            x = TF.to_dtype(TF.to_image(img), torch.float32, scale=True)  # (C, h, w) in [0, 1]
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DlstratError(f"{path} is not a readable image ({type(e).__name__}: {shorten(str(e), 200)})") from None
    if tuple(x.shape[-2:]) != (height, width):
        x = TF.resize(x, [height, width], antialias=True)  # (C, H, W)
    return x


def read_tensor(path: Path, input_size: tuple[int, ...]) -> torch.Tensor:
    """A ``.npy`` / ``.pt`` file as (N, *input_size) float32: one input or a batch; uint8 scaled to [0, 1]."""
    import numpy as np

    if path.stat().st_size > MAX_TENSOR_BYTES:
        raise DlstratError(f"{path} is {path.stat().st_size / 2**30:.1f} GiB, more than the {MAX_TENSOR_BYTES / 2**30:.0f} GiB read in one file; split it")
    if path.suffix.lower() == ".pt":
        check_pt_archive(path)
    try:
        if path.suffix.lower() == ".npy":
            x = torch.from_numpy(np.array(np.load(path, allow_pickle=False)))  # never unpickles
        else:
            x = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file, an object array, a pickle with code in it
        raise DlstratError(f"{path} is not a readable tensor file ({type(e).__name__}: {shorten(str(e), 200)}); .npy files are read without pickles, .pt with weights_only=True") from None
    if not isinstance(x, torch.Tensor):
        raise DlstratError(f"{path} holds a {type(x).__name__}, not one tensor")
    if tuple(x.shape) == tuple(input_size):
        x = x.unsqueeze(0)
    if tuple(x.shape[1:]) != tuple(input_size):
        raise DlstratError(f"{path} holds a tensor of shape {tuple(x.shape)}; this network takes {tuple(input_size)} or a batch (N, {', '.join(map(str, input_size))})")
    if len(x) > MAX_INPUTS:
        raise DlstratError(f"{path} holds {len(x):,} inputs, more than the {MAX_INPUTS:,} predicted in one call")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise DlstratError(f"{path} holds {x.dtype} values; give pixels as floats in [0, 1] or uint8")
    return x.float()


def check_pt_archive(path: Path) -> None:
    """A ``.pt`` file is a zip archive whose records may be compressed: what they decompress to is bounded, not the file.

    torch reads each record into a buffer of the size the archive's central directory declares
    (and fails if the data inflates past it), so the declared sizes are what loading allocates;
    they are summed here, before torch reads anything. The legacy (pre-1.6, not zip) format
    declares its storages' sizes inside a pickle, and is not read.
    """
    import zipfile

    if not zipfile.is_zipfile(path):
        raise DlstratError(
            f"{path} is not a zip-format .pt file (the format torch.save writes since PyTorch 1.6); the legacy format is not "
            "read, since it declares its sizes only inside its pickle: save the tensor again with torch.save, or as .npy"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DlstratError(f"{path} is not a readable tensor file ({type(e).__name__}: {shorten(str(e), 200)})") from None
    if len(records) > MAX_PT_RECORDS:
        raise DlstratError(f"{path} holds {len(records):,} records, more than the {MAX_PT_RECORDS:,} a tensor file needs")
    inflated = sum(r.file_size for r in records)
    if inflated > MAX_TENSOR_BYTES:
        raise DlstratError(
            f"{path} decompresses to {inflated:,} bytes ({gib(inflated)}, from a file of {path.stat().st_size:,} bytes), more than the "
            f"{MAX_TENSOR_BYTES:,} bytes ({gib(MAX_TENSOR_BYTES)}) read in one file; split it"
        )


# --- dlstrat predict ------------------------------------------------------------------------------------
@torch.no_grad()
def predict(loaded: Loaded, inputs: list[str | Path], normalize_tensors: bool = True) -> list[dict[str, Any]]:
    """One record per input: its name, the top class and its probability, every class's probability.

    Images are always pixels and are normalised as the training data were; tensors too, unless
    ``normalize_tensors`` is False (they are normalised already, e.g. taken from the datamodule).
    """
    if loaded.kind != "classifier":
        raise DlstratError(f"{loaded.source} is a generator: it draws images rather than classifying them; draw from it with `{loaded.how_to_sample}`")
    names: list[str] = []
    batches: list[torch.Tensor] = []
    for path in gather(inputs):
        if path.suffix.lower() in TENSOR_SUFFIXES:
            x = read_tensor(path, loaded.input_size)  # (N, *input_size)
            names += [f"{path}[{i}]" for i in range(len(x))] if len(x) > 1 else [str(path)]
            batches.append(loaded.normalize(x) if normalize_tensors else x)
        else:
            names.append(str(path))
            batches.append(loaded.normalize(read_image(path, loaded.input_size).unsqueeze(0)))  # (1, C, H, W)
        if len(names) > MAX_INPUTS:
            raise DlstratError(f"more than {MAX_INPUTS:,} inputs; predict them in several calls")
    x = torch.cat(batches)  # (N, *input_size)
    probs = torch.cat([loaded.net(x[i : i + BATCH]).softmax(dim=1) for i in range(0, len(x), BATCH)])  # (N, num_classes)
    labels = loaded.label_names if len(loaded.label_names) == probs.shape[1] else [str(i) for i in range(probs.shape[1])]
    top_p, top = probs.max(dim=1)
    return [
        {"input": name, "top_class": labels[int(k)], "top_prob": float(p), "probs": dict(zip(labels, map(float, row)))}
        for name, k, p, row in zip(names, top, top_p, probs)
    ]


def check_out(out: str | Path) -> Path:
    """``--out`` must say the format: .csv or .json."""
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".json"):
        raise DlstratError(f"--out {shorten(str(out), 200)} must end in .csv or .json (the format is chosen by the suffix)")
    if out.is_dir():
        raise DlstratError(f"--out {shorten(str(out), 200)} is a folder; give a file name ending in .csv or .json")
    return out


def write_predictions(records: list[dict[str, Any]], out: str | Path) -> Path:
    """``out`` as CSV (input, top_class, top_prob, one column per class) or JSON (a list of records), by its suffix."""
    out = check_out(out)
    if out.suffix.lower() == ".json":
        data = (json.dumps(records, indent=1) + "\n").encode()
    else:
        buf = io.StringIO()
        labels = list(records[0]["probs"]) if records else []
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["input", "top_class", "top_prob", *labels])
        for r in records:
            writer.writerow([r["input"], r["top_class"], r["top_prob"], *(r["probs"][k] for k in labels)])
        data = buf.getvalue().encode()
    atomic_write_bytes(out, data)
    return out
