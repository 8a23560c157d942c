"""Look up a NAS-Bench-201 cell's trained accuracy in a benchmark file the user downloaded.

The numbers are those of the NATS-Bench topology space (Dong et al., "NATS-Bench: Benchmarking NAS
Algorithms for Architecture Topology and Size", TPAMI 2021; the same 15,625 cells and indices as
NAS-Bench-201, Dong & Yang, ICLR 2020), read through the benchmark's own API, the ``nats_bench``
package (``pip install nats_bench``), from one of:

- the file ``NATS-tss-v1_0-3ffb9.pickle.pbz2`` (everything, read at once), or
- the directory ``NATS-tss-v1_0-3ffb9-simple/`` (``meta.pickle.pbz2`` plus one
  ``{index:06d}.pickle.pbz2`` per cell, read as cells are queried).

SECURITY: both are bz2-compressed *pickles*, and unpickling can run arbitrary code. Nothing here
reads one except :func:`load_benchmark` / :meth:`NB201Benchmark.load`, called explicitly with a
path, never for anything fetched automatically. Each pickle is first read by an allow-list
unpickler that accepts only the few classes the benchmark's files contain
(``collections.OrderedDict`` and numpy scalars / dtypes) and refuses the file otherwise, before
``nats_bench`` (whose own loader is a plain ``pickle.load``) ever sees it. Only load files you
downloaded yourself from the benchmark's authors.

Reporting convention (the maintainer's, NATS-Bench issues #17 / #38): top-1 accuracy in percent
after the 200-epoch schedule (``hp="200"``), averaged over the trained seeds; CIFAR-10
"valid" is the ``cifar10-valid`` run's validation split, CIFAR-10 "test" the ``cifar10`` run (trained
on train + valid) on the test set; CIFAR-100 and ImageNet16-120 report their ``x-valid`` / ``x-test``
halves of the original test set.
"""

from __future__ import annotations

import bz2
import collections
import os
import pickle
from pathlib import Path
from typing import Any

from ...core import DlstratError
from .genotype import NB201Genotype

__all__ = ["BENCHMARK_DIR", "BENCHMARK_FILE", "NB201Benchmark", "NB201LookupError", "load_benchmark", "safe_pickle_load"]

BENCHMARK_FILE = "NATS-tss-v1_0-3ffb9.pickle.pbz2"
BENCHMARK_DIR = "NATS-tss-v1_0-3ffb9-simple"
DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
SPLITS = ("valid", "test")
_INSTALL_HINT = (
    f"NAS-Bench-201 look-ups need the benchmark's API and data: pip install nats_bench, then download "
    f"{BENCHMARK_FILE} (or the directory {BENCHMARK_DIR}/) from the NATS-Bench authors and pass its path"
)


class NB201LookupError(DlstratError, ValueError):
    """The benchmark cannot be read or does not hold what was asked."""


# --- the allow-list unpickler -------------------------------------------------------------------
def _allowed() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {("collections", "OrderedDict"): collections.OrderedDict}
    try:
        import numpy as np
    except ImportError:  # files with numpy objects are then refused, which is safe
        return allowed
    # numpy scalars and dtypes, as the tss files store some numbers; pickled under numpy 1.x as
    # numpy.core.multiarray.scalar (numpy 2 moved it to numpy._core)
    multiarray = getattr(getattr(np, "_core", None), "multiarray", None) or np.core.multiarray
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "scalar")] = multiarray.scalar
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed().get((module, name))
        if obj is None:
            raise NB201LookupError(
                f"the benchmark file refers to {module}.{name}, which a NATS-Bench topology file never does; "
                "refusing to unpickle it (a pickle can run arbitrary code): use the file from the benchmark's authors"
            )
        return obj


def safe_pickle_load(path: str | os.PathLike) -> Any:
    """Read a bz2-compressed pickle with the allow-list unpickler. UNPICKLES ``path``: trusted files only."""
    path = Path(path)
    try:
        with bz2.open(path, "rb") as f:
            return _AllowListUnpickler(f).load()
    except NB201LookupError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise NB201LookupError(f"cannot read the benchmark file {path}: {type(e).__name__}: {e}") from None


# --- the benchmark ----------------------------------------------------------------------------------
def _nats_bench():
    try:
        import nats_bench
    except ImportError:
        raise NB201LookupError(_INSTALL_HINT + " (the nats_bench package is not installed)") from None
    return nats_bench


class NB201Benchmark:
    """A loaded NATS-Bench topology benchmark; create with :meth:`load` (which unpickles the file).

    Example::

        bench = NB201Benchmark.load("~/.torch/NATS-tss-v1_0-3ffb9-simple")  # trusted file: unpickles it
        bench.accuracy("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "cifar100")
    """

    def __init__(self, api: Any, archive_dir: Path | None):
        # use NB201Benchmark.load; this takes an already created nats_bench API object
        self.api, self.archive_dir = api, archive_dir
        self._checked: set[int] = set()

    @classmethod
    def load(cls, path: str | os.PathLike) -> NB201Benchmark:
        """Open ``path``: the file ``NATS-tss-v1_0-3ffb9.pickle.pbz2`` or the directory ``NATS-tss-v1_0-3ffb9-simple``.

        THIS UNPICKLES THE BENCHMARK FILE(S) (each first through the allow-list unpickler, see the
        module docstring). Call it only on files you downloaded from the benchmark's authors.
        """
        nats_bench = _nats_bench()
        path = Path(path).expanduser()
        if path.is_dir():
            meta = path / "meta.pickle.pbz2"
            if not meta.is_file():
                raise NB201LookupError(f"{path} has no meta.pickle.pbz2: it is not a {BENCHMARK_DIR}/ directory. {_INSTALL_HINT}")
            safe_pickle_load(meta)  # refuse a tampered file before nats_bench unpickles it plainly
            return cls(nats_bench.create(str(path), "tss", fast_mode=True, verbose=False), path)
        if path.is_file():
            data = safe_pickle_load(path)
            if not (isinstance(data, dict) and {"meta_archs", "arch2infos", "evaluated_indexes"} <= set(data)):
                raise NB201LookupError(f"{path} does not hold a NATS-Bench topology benchmark (keys meta_archs, arch2infos, evaluated_indexes). {_INSTALL_HINT}")
            return cls(nats_bench.create(data, "tss", fast_mode=False, verbose=False), None)
        raise NB201LookupError(f"{path} does not exist. {_INSTALL_HINT}")

    def index(self, arch: NB201Genotype | str) -> int:
        """The benchmark's index of ``arch`` (validated and normalised first)."""
        genotype = arch if isinstance(arch, NB201Genotype) else NB201Genotype.parse(arch)
        idx = self.api.query_index_by_arch(str(genotype))
        if idx < 0:
            raise NB201LookupError(f"{genotype} is not in this benchmark file")
        return idx

    def accuracy(self, arch: NB201Genotype | str, dataset: str = "cifar10", split: str = "test", hp: str = "200") -> float:
        """Top-1 accuracy (%) of ``arch`` on ``dataset``'s ``split``, mean over seeds (see the module docstring)."""
        if dataset not in DATASETS:
            raise NB201LookupError(f"dataset must be one of {', '.join(DATASETS)}, not {dataset!r}")
        if split not in SPLITS:
            raise NB201LookupError(f"split must be 'valid' or 'test', not {split!r}")
        idx = self.index(arch)
        if self.archive_dir is not None and idx not in self._checked:
            safe_pickle_load(self.archive_dir / f"{idx:06d}.pickle.pbz2")  # checked before nats_bench reads it lazily
            self._checked.add(idx)
        run = "cifar10-valid" if (dataset, split) == ("cifar10", "valid") else dataset
        try:
            info = self.api.get_more_info(idx, run, hp=str(hp), is_random=False)
        except (KeyError, ValueError) as e:
            raise NB201LookupError(f"the benchmark has no {run} results for index {idx} with hp={hp!r}: {e}") from None
        key = f"{split}-accuracy"
        if key not in info:
            raise NB201LookupError(f"the benchmark has no {split} accuracy for {run} (index {idx})")
        return float(info[key])


def load_benchmark(path: str | os.PathLike) -> NB201Benchmark:
    """:meth:`NB201Benchmark.load`. UNPICKLES the benchmark at ``path``: trusted files only."""
    return NB201Benchmark.load(path)
