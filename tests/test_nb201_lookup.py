"""The NAS-Bench-201 accuracy look-up (:mod:`lightning_dlstrat.spaces.nb201.lookup`).

The test writes tiny benchmark files in the NATS-Bench topology format (bz2 pickles of the
``ArchResults`` / ``ResultsCount`` state dicts that ``nats_bench`` reads: a full-file form and the
``-simple/`` directory form) with made-up accuracies. Writing them needs nothing; reading them
goes through ``nats_bench``, so those tests run only where it is installed
(``pip install nats_bench``) and are skipped elsewhere. The error path without ``nats_bench`` and
the allow-list unpickler are tested everywhere.
"""

from __future__ import annotations

import bz2
import collections
import pickle
import sys

import pytest

from lightning_dlstrat.spaces.nb201 import ALL_SKIP, BEST_CIFAR100
from lightning_dlstrat.spaces.nb201.lookup import BENCHMARK_FILE, NB201Benchmark, NB201LookupError, load_benchmark, safe_pickle_load

ARCHS = [str(ALL_SKIP), str(BEST_CIFAR100)]
# made-up accuracies: (run, eval set) -> per seed
SEEDS = (777, 888)


def results_count(run: str, seed: int, base: float) -> dict:
    """A ResultsCount state dict: 2 epochs, evaluation sets as the benchmark names them."""
    sets = {"cifar10-valid": ["x-valid", "ori-test"], "cifar10": ["ori-test"], "cifar100": ["x-valid", "x-test", "ori-test"]}[run]
    acc = {f"{s}@{e}": base + 10 * k + e + (seed - 777) / 111 for k, s in enumerate(sets) for e in range(2)}
    return {
        "name": run, "net_state_dict": None, "train_acc1es": {0: 50.0, 1: 60.0}, "train_acc5es": None,
        "train_losses": {0: 1.0, 1: 0.5}, "train_times": None, "arch_config": {"name": "infer.tiny", "C": 16, "N": 5, "class_num": 10},
        "params": 0.1, "flop": 10.0, "seed": seed, "epochs": 2, "latency": [0.01],
        "eval_names": sets, "eval_acc1es": acc, "eval_times": {k: 1.0 for k in acc}, "eval_losses": {k: 0.1 for k in acc},
    }


def arch_results(idx: int, arch: str, base: float) -> dict:
    runs = ("cifar10-valid", "cifar10", "cifar100")
    return {
        "arch_index": idx, "arch_str": arch,
        "all_results": {(run, seed): results_count(run, seed, base) for run in runs for seed in SEEDS},
        "dataset_seed": {run: list(SEEDS) for run in runs}, "clear_net_done": True,
    }


def dump(obj, path):
    with bz2.open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def write_full(tmp_path):
    data = {
        "meta_archs": ARCHS,
        "arch2infos": {i: collections.OrderedDict({"200": arch_results(i, a, 40.0 + 20 * i)}) for i, a in enumerate(ARCHS)},
        "evaluated_indexes": list(range(len(ARCHS))),
    }
    path = tmp_path / BENCHMARK_FILE
    dump(data, path)
    return path


def write_simple(tmp_path):
    root = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    root.mkdir()
    dump({"meta_archs": ARCHS}, root / "meta.pickle.pbz2")
    for i, a in enumerate(ARCHS):
        dump({"200": arch_results(i, a, 40.0 + 20 * i)}, root / f"{i:06d}.pickle.pbz2")
    return root


def test_missing_nats_bench_names_the_install_and_the_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nats_bench", None)  # import nats_bench -> ImportError
    with pytest.raises(NB201LookupError) as info:
        load_benchmark(tmp_path)
    assert "pip install nats_bench" in str(info.value) and BENCHMARK_FILE in str(info.value)


def test_allow_list_unpickler(tmp_path):
    good = tmp_path / "good.pbz2"
    dump({"a": collections.OrderedDict(b=[1, 2.5, "x"])}, good)
    assert safe_pickle_load(good) == {"a": {"b": [1, 2.5, "x"]}}
    bad = tmp_path / "bad.pbz2"
    dump({"x": collections.Counter("ab")}, bad)  # any class outside the list, harmless or not
    with pytest.raises(NB201LookupError, match="collections.Counter.*refusing"):
        safe_pickle_load(bad)
    (tmp_path / "junk.pbz2").write_bytes(b"not bz2")
    with pytest.raises(NB201LookupError, match="cannot read"):
        safe_pickle_load(tmp_path / "junk.pbz2")


@pytest.mark.parametrize("form", ["full-file", "simple-dir"])
def test_lookup_from_a_tiny_benchmark(tmp_path, form):
    pytest.importorskip("nats_bench")
    path = write_full(tmp_path) if form == "full-file" else write_simple(tmp_path)
    bench = NB201Benchmark.load(path)
    assert bench.index(BEST_CIFAR100) == 1 and bench.index(str(ALL_SKIP)) == 0
    # last epoch (1), mean over seeds 777 and 888 (+0 and +1): base + 10*k + 1 + 0.5
    assert bench.accuracy(ALL_SKIP, "cifar10", "test") == pytest.approx(40.0 + 1.5)  # cifar10 run, ori-test
    assert bench.accuracy(ALL_SKIP, "cifar10", "valid") == pytest.approx(40.0 + 1.5)  # cifar10-valid run, x-valid
    assert bench.accuracy(BEST_CIFAR100, "cifar100", "valid") == pytest.approx(60.0 + 1.5)  # x-valid
    assert bench.accuracy(BEST_CIFAR100, "cifar100", "test") == pytest.approx(70.0 + 1.5)  # x-test
    with pytest.raises(NB201LookupError, match="not in this benchmark"):
        bench.index("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(NB201LookupError, match="dataset must be"):
        bench.accuracy(ALL_SKIP, "mnist")


def test_bad_paths(tmp_path):
    pytest.importorskip("nats_bench")
    with pytest.raises(NB201LookupError, match="does not exist"):
        load_benchmark(tmp_path / "nothing")
    with pytest.raises(NB201LookupError, match="meta.pickle.pbz2"):
        load_benchmark(tmp_path)
    dump({"x": 1}, tmp_path / "other.pbz2")
    with pytest.raises(NB201LookupError, match="does not hold"):
        load_benchmark(tmp_path / "other.pbz2")


def test_cli_lookup_needs_the_explicit_unpickle_flag(tmp_path):
    from typer.testing import CliRunner

    from lightning_dlstrat.cli import app

    pytest.importorskip("nats_bench")
    runner = CliRunner()
    path = write_full(tmp_path)
    refused = runner.invoke(app, ["nb201", "lookup", str(ALL_SKIP), "--benchmark", str(path)])
    assert refused.exit_code == 2 and "pass --unpickle" in refused.output
    bad = runner.invoke(app, ["nb201", "lookup", "|conv~0|", "--benchmark", str(path), "--unpickle"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    result = runner.invoke(app, ["nb201", "lookup", str(BEST_CIFAR100), "--benchmark", str(path), "--unpickle", "--dataset", "cifar100"])
    assert result.exit_code == 0, result.output
    assert f"{BEST_CIFAR100}  cifar100 test accuracy: 71.50 %" in result.output
