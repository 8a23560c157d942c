"""Exporting a network for deployment: ONNX, a ``torch.export`` program (``.pt2``) or TorchScript.

    dlstrat export --zoo mlp-digits --out mlp.onnx                          # the format from the suffix
    dlstrat export --checkpoint runs/.../checkpoints/best.ckpt --format pt2 --out net.pt2

What the exported graph computes is the network's own ``forward`` in eval mode, with a dynamic
batch dimension:

- classifiers (MLP, DARTS network, NAS-Bench-201 network): ``input`` (B, *input_size), images
  normalised as in training, to ``logits`` (B, num_classes);
- generators: ``z`` (B, latent_dim) to ``samples`` (B, *out_shape) in [-1, 1]; conditional ones
  also take ``labels`` (B,) int64.

Every file carries what its user needs to feed it (``dlstrat.json``: input size, mean / std, label
names, or latent size and output shape): in the ONNX model's ``metadata_props``, as an extra file
of the ``.pt2`` archive (``torch.export.load(f, extra_files={"dlstrat.json": ""})``) and of the
TorchScript file (``torch.jit.load(f, _extra_files=...)``).

Each export is checked before it is kept: the written file is loaded back (onnxruntime, or
``torch.export.load`` / ``torch.jit.load``), run on a batch of another size than the one traced,
and compared with the eager network; the largest absolute difference is reported.

ONNX goes through ``torch.export`` and the dynamo-based ``torch.onnx.export`` (onnxscript), the
exporter torch recommends; TorchScript through ``torch.jit.trace``, which recent torch deprecates in
favour of ``torch.export`` (prefer ``pt2``).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .core import DlstratError, shorten
from .inference import Loaded

FORMATS = {"onnx": (".onnx",), "pt2": (".pt2",), "torchscript": (".pt", ".ts")}
META_NAME = "dlstrat.json"  # the data config inside each exported file
TRACE_BATCH, CHECK_BATCH = 2, 3  # traced with one batch size, checked with another (the batch is dynamic)
MAX_BATCH = 1 << 16  # the dynamic batch dimension's upper bound
TOLERANCE = 1e-4  # largest |exported - eager| kept; float32 exports measure ~1e-6 (docs/getting-started.md)


@dataclass
class Exported:
    path: Path
    format: str
    max_abs_diff: float | None  # the check against the eager network; None if it could not run
    note: str = ""


def target(fmt: str | None, out: str | Path) -> str:
    """The format: ``fmt``, or the one ``out``'s suffix names; the two must agree."""
    out = Path(out)
    by_suffix = next((f for f, suffixes in FORMATS.items() if out.suffix.lower() in suffixes), None)
    if fmt is None:
        if by_suffix is None:
            raise DlstratError(f"--out {shorten(str(out), 200)}: give --format ({', '.join(FORMATS)}) or a file ending in " + ", ".join(s for v in FORMATS.values() for s in v))
        return by_suffix
    if fmt not in FORMATS:
        raise DlstratError(f"unknown --format {shorten(fmt, 60)!r}; choose one of: {', '.join(FORMATS)}")
    if out.suffix.lower() not in FORMATS[fmt]:
        raise DlstratError(f"--out {shorten(str(out), 200)} does not end in {' or '.join(FORMATS[fmt])}, the suffix of --format {fmt}")
    if out.is_dir():
        raise DlstratError(f"--out {shorten(str(out), 200)} is a folder; give a file name")
    return fmt


def example_inputs(loaded: Loaded, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    net = loaded.net
    if loaded.kind == "classifier":
        return (torch.randn(batch, *loaded.input_size, generator=g),)  # (B, *input_size), normalised images are ~N(0, 1)
    z = torch.randn(batch, net.latent_dim, generator=g)  # (B, latent_dim)
    classes = getattr(net, "num_classes", 0)
    return (z, torch.randint(0, classes, (batch,), generator=g)) if classes else (z,)  # labels: (B,) int64


def io_names(loaded: Loaded) -> tuple[list[str], list[str]]:
    if loaded.kind == "classifier":
        return ["input"], ["logits"]
    return (["z", "labels"] if getattr(loaded.net, "num_classes", 0) else ["z"]), ["samples"]


def metadata(loaded: Loaded, fmt: str) -> str:
    inputs, outputs = io_names(loaded)
    source = loaded.source if loaded.source.startswith("zoo model") else Path(loaded.source).name  # no local paths in a shipped file
    return json.dumps({**loaded.data_config(), "format": fmt, "inputs": inputs, "outputs": outputs, "source": source, "exported_by": f"lightning-dlstrat {__version__}"}, sort_keys=True)


def program(loaded: Loaded) -> torch.export.ExportedProgram:
    """``torch.export`` of the network with a dynamic batch (non-strict, else strict tracing)."""
    args = example_inputs(loaded, TRACE_BATCH)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic = tuple({0: batch} for _ in args)
    errors = []
    for strict in (False, True):  # non-strict is torch's default; strict (Dynamo) keeps len(z) symbolic where non-strict specialises it
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.export.export(loaded.net, args, dynamic_shapes=dynamic, strict=strict)
        except Exception as e:  # torch's export errors have many types
            errors.append(f"{type(e).__name__}: {shorten(str(e).splitlines()[0] if str(e) else '', 200)}")
    raise DlstratError(f"torch.export cannot trace {type(loaded.net).__name__} with a dynamic batch ({'; '.join(errors)})")


def export(loaded: Loaded, fmt: str, out: str | Path, check: bool = True) -> Exported:
    """Write ``loaded.net`` to ``out`` in ``fmt`` (see :data:`FORMATS`), checked against the eager network."""
    out = Path(out)
    fmt = target(fmt, out)
    loaded.net.eval()
    meta = metadata(loaded, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=out.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; give it the permissions open() would
    note = ""
    try:
        if fmt == "onnx":
            note = write_onnx(loaded, meta, tmp)
        elif fmt == "pt2":
            torch.export.save(program(loaded), tmp, extra_files={META_NAME: meta})
        else:
            diff, how = write_torchscript(loaded, meta, tmp, check)
            note = f"{how}; TorchScript is deprecated in recent torch releases, --format pt2 is its successor"
        if fmt != "torchscript":
            try:
                diff = run_check(loaded, fmt, tmp) if check else None
            except DlstratError:
                raise
            except Exception as e:  # the runtime refusing the graph it was given
                raise DlstratError(f"the exported {fmt} file does not run on a batch of {CHECK_BATCH} ({type(e).__name__}: {shorten(str(e), 300)}); it was not kept") from None
        if diff is None and check:
            note = "; ".join(filter(None, [note, "not checked: onnxruntime is not installed"]))
        if diff is not None and not diff <= TOLERANCE:
            raise DlstratError(f"the exported {fmt} graph differs from the eager network by up to {diff:.3g} (more than {TOLERANCE:g}); it was not kept")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return Exported(out, fmt, diff, note)


def write_onnx(loaded: Loaded, meta: str, path: Path) -> str:
    missing = [m for m in ("onnx", "onnxscript") if not _importable(m)]
    if missing:
        raise DlstratError(f"--format onnx needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}; install them with: pip install \"lightning-dlstrat[onnx]\"")
    inputs, outputs = io_names(loaded)
    ep = program(loaded)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(ep, dynamo=True, input_names=inputs, output_names=outputs, verbose=False)
    except Exception as e:
        raise DlstratError(f"torch.onnx.export failed for {type(loaded.net).__name__}: {type(e).__name__}: {shorten(str(e), 300)}") from None
    onnx_program.model.metadata_props[META_NAME] = meta
    onnx_program.save(path)
    return f"opset {onnx_program.model.opset_imports.get('', '?')}"


def write_torchscript(loaded: Loaded, meta: str, path: Path, check: bool) -> tuple[float | None, str]:
    """``torch.jit.script`` (keeps the batch size symbolic), else ``torch.jit.trace``; the first that passes the check."""
    errors = []
    for how in ("scripted", "traced"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the deprecation and trace notices; the check tells what matters
                if how == "scripted":
                    module = torch.jit.script(loaded.net)
                else:
                    module = torch.jit.trace(loaded.net, example_inputs(loaded, TRACE_BATCH), check_trace=False)
                torch.jit.save(module, str(path), _extra_files={META_NAME: meta})
            return (run_check(loaded, "torchscript", path) if check else None), how
        except DlstratError as e:
            errors.append(f"{how}: {e}")
        except Exception as e:  # script's frontend errors, a trace that baked in the batch size, ...
            first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")  # not TorchScript's own traceback
            errors.append(f"{how}: {type(e).__name__}: {shorten(first, 160)}")
    raise DlstratError(f"TorchScript cannot capture {type(loaded.net).__name__} with a dynamic batch ({'; '.join(errors)}); export it with --format pt2 or onnx")


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


@torch.no_grad()
def run_check(loaded: Loaded, fmt: str, path: Path) -> float | None:
    """Largest ``|exported - eager|`` on a batch of :data:`CHECK_BATCH` (another size than traced); None without onnxruntime."""
    args = example_inputs(loaded, CHECK_BATCH, seed=1)
    expected = loaded.net(*args)  # (B, ...)
    if fmt == "onnx":
        if not _importable("onnxruntime"):
            return None
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        got = torch.from_numpy(session.run(None, {n: a.numpy() for n, a in zip(names, args)})[0])
    elif fmt == "pt2":
        got = torch.export.load(path).module()(*args)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = torch.jit.load(str(path))(*args)  # a trace that baked in the batch size raises here
    if got.shape != expected.shape:
        raise DlstratError(f"the exported {fmt} graph gives shape {tuple(got.shape)} for a batch of {CHECK_BATCH}, not {tuple(expected.shape)}; it was not kept")
    return float((got - expected).abs().max())


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The data config an exported file carries (``dlstrat.json``), whatever its format."""
    path = Path(path)
    fmt = target(None, path)
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        text = next((p.value for p in model.metadata_props if p.key == META_NAME), "{}")
    elif fmt == "pt2":
        files = {META_NAME: ""}
        torch.export.load(path, extra_files=files)
        text = files[META_NAME]
    else:
        files = {META_NAME: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.load(str(path), _extra_files=files)
        text = files[META_NAME]
    return json.loads(text or "{}")
