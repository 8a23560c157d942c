"""random-nas as an Optuna study: the search space, samplers, pruning, failures, storages shared by
several worker processes (a journal file, SQLite, a real PostgreSQL server), killed workers, and
`dlstrat study show`. Storages are real files and servers, never mocks; trials are tiny networks
(C=4, 3 cells) trained for a few batches."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import lightning as L
import optuna
import pytest
import torch
import yaml
from _helpers import ROOT, assert_clean_failure, run_dir_of, run_dirs
from typer.testing import CliRunner

from lightning_dlstrat.cli import app
from lightning_dlstrat.export import export_run
from lightning_dlstrat.spaces.darts.genotype import Genotype
from lightning_dlstrat.recipes import fit
from lightning_dlstrat.spaces import DartsSpace, NB201Genotype, NB201Space
from lightning_dlstrat.spaces.nb201 import NB201_OPS
from lightning_dlstrat.study import TrialSeededRandomSampler, distributions, genotype_of, genotype_params, make_sampler, open_storage, suggest_genotype

runner = CliRunner()
LIMITS = ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=1"]
TINY = [*LIMITS, "--model.C=4", "--model.layers=3"]
TINY_NB201 = ["--model.space=nb201", *LIMITS, "--model.C=4", "--model.N=1"]
DARTS_OPS = tuple(op for op in DartsSpace().operations if op != "none")


def load(storage: str | Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage, heartbeat=None))


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def trained_dirs(*run_dirs: Path) -> Counter:
    """Trial number -> how many run directories hold a trained (checkpointed and tested) trial-NNN folder for it."""
    return Counter(int(d.name.split("-")[1]) for r in run_dirs for d in r.glob("trial-*") if (d / "checkpoints" / "best.ckpt").is_file())


def worker(*args: str, **kwargs) -> subprocess.Popen:
    """One `dlstrat fit --model random-nas` worker in its own process (as on another machine)."""
    return subprocess.Popen(
        [sys.executable, "-m", "lightning_dlstrat", "fit", "--model", "random-nas", *TINY, *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}, **kwargs,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


# --- the search space and the samplers (no training) ------------------------------------------------
@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_every_sampler_draws_genotypes_of_the_random_nas_space(sampler):
    study = optuna.create_study(sampler=make_sampler(sampler, seed=0, trials=12), directions=["maximize", "minimize"] if sampler == "nsga2" else ["maximize"])
    seen_pairs, seen_ops = Counter(), Counter()
    for _ in range(12):
        trial = study.ask()
        g = suggest_genotype(trial)  # Genotype validates on construction
        for cell in (g.normal, g.reduce):
            for node in range(4):
                (op0, a), (op1, b) = cell[2 * node : 2 * node + 2]
                assert a < b <= node + 1 and "none" not in (op0, op1)  # 2 distinct inputs, sorted as sample_genotype's
                seen_pairs[(node, a, b)] += 1
                seen_ops[op0] += 1
        assert genotype_params(g) == trial.params and genotype_of(study._storage.get_trial(trial._trial_id)) == g
        score = sum(op.startswith("sep") for op, _ in g.normal) / 8
        study.tell(trial, (score, len(set(g.normal))) if sampler == "nsga2" else score)
    assert set(seen_ops) <= set(DARTS_OPS) and len(seen_ops) >= 5
    assert set(distributions()) == set(trial.params) and len(trial.params) == 24


def test_random_draws_depend_on_the_seed_and_trial_number_only():
    """Two workers (or a resumed study) get trial k's architecture whatever asked before: the draws are keyed by (seed, k)."""
    def draws(seed, n, skip=0):
        study = optuna.create_study(sampler=TrialSeededRandomSampler(seed))
        for _ in range(skip):  # trials another worker drew with another sampler object
            study.tell(study.ask(), 0.0)
        return [suggest_genotype(study.ask()) for _ in range(n)]

    first = draws(3, 4)
    assert draws(3, 4) == first and draws(3, 2, skip=2) == first[2:]
    assert draws(4, 4) != first and len(set(map(str, first))) == 4
    # uniform over the space of sample_genotype: each input pair of the last node (10 of them) about equally often
    study = optuna.create_study(sampler=TrialSeededRandomSampler(0))
    pairs = DartsSpace().choices()["normal.n5.inputs"]
    counts = Counter(study.ask().suggest_categorical("normal.n5.inputs", pairs) for _ in range(1200))
    assert set(counts) == set(pairs) and len(pairs) == 10 and all(80 <= c <= 160 for c in counts.values()), counts


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_every_sampler_draws_nb201_cells_and_reads_them_back(sampler):
    """--model.space=nb201: one categorical per edge over the 5 ops (none included: 15,625 cells);
    a trial's space is read back from its parameter names."""
    study = optuna.create_study(sampler=make_sampler(sampler, seed=0, trials=12), directions=["maximize", "minimize"] if sampler == "nsga2" else ["maximize"])
    space = NB201Space()
    for _ in range(12):
        trial = study.ask()
        g = suggest_genotype(trial, space)
        assert isinstance(g, NB201Genotype) and NB201Genotype.parse(str(g)) == g
        assert genotype_params(g, space) == trial.params and genotype_of(study._storage.get_trial(trial._trial_id)) == g
        score = sum(op == "nor_conv_3x3" for op in g.ops) / 6
        study.tell(trial, (score, g.ops.count("none")) if sampler == "nsga2" else score)
    assert set(distributions(space)) == set(trial.params) == {"cell/1<-0", "cell/2<-0", "cell/2<-1", "cell/3<-0", "cell/3<-1", "cell/3<-2"}
    # the random sampler is uniform over each edge's 5 ops, `none` included (as the benchmark's random search)
    seeded = optuna.create_study(sampler=TrialSeededRandomSampler(0))
    counts = Counter(op for _ in range(1000) for op in suggest_genotype(seeded.ask(), space).ops)
    assert set(counts) == set(NB201_OPS) and all(1000 <= c <= 1400 for c in counts.values()), counts


# --- the plain loop, its outputs, and resuming it -------------------------------------------------
@pytest.mark.slow
def test_cli_random_nas_study_outputs_show_and_resume(tmp_path):
    result = runner.invoke(app, ["fit", "--model", "random-nas", "--trials", "2", "--max-epochs", "1", "--seed", "3", "--out", str(tmp_path), *TINY])
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    rows = json.loads((run_dir / "trials.json").read_text())
    assert [(r["trial"], r["state"], r["dir"]) for r in rows] == [(0, "complete", "trial-000"), (1, "complete", "trial-001")]
    # seeded: the draws of a fresh study with the same sampler seed
    reference = optuna.create_study(sampler=TrialSeededRandomSampler(3))
    expected = [suggest_genotype(reference.ask()) for _ in range(3)]
    assert [Genotype.from_dict(r["genotype"]) for r in rows] == expected[:2]
    for r in rows:
        assert Genotype.load(run_dir / r["dir"] / "genotype.json") == Genotype.from_dict(r["genotype"])
        assert 0 <= r["val_acc"] <= 1 and r["params"] > 0 and r["epochs"] == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    best = max(rows, key=lambda r: (r["val_acc"], -r["val_loss"]))  # by validation, never test, accuracy
    assert summary["best_trial"] == best["trial"] and summary["val_acc"] == best["val_acc"]
    assert summary["test_metrics"]["test/acc"] == best["test_acc"]
    assert Genotype.load(run_dir / "genotype.json") == Genotype.from_dict(best["genotype"])
    assert summary["space"] == "darts" and summary["study"] == {
        "study": "random-nas", "storage": "study.journal", "space": "darts", "sampler": "random", "pruner": "none", "trials": 2}
    for name in ("trials.csv", "genotype.png", "optimization_history.png", "parallel_coordinate.png", "intermediate_values.png", "study.journal", "study.json"):
        assert (run_dir / name).is_file(), name
    assert f"retrain it: dlstrat fit --model darts-net --genotype {run_dir} --data digits --seed 3" in result.output

    shown = runner.invoke(app, ["study", "show", str(run_dir), "--out", str(tmp_path / "shown")])
    assert shown.exit_code == 0, shown.output
    assert json.loads((tmp_path / "shown" / "trials.json").read_text()) == rows
    assert (tmp_path / "shown" / "optimization_history.png").stat().st_size > 1000
    assert len([l for l in shown.output.splitlines() if " complete " in l]) == 2

    # resuming continues the study: the finished trials are not trained again, one more is
    before = (run_dir / "trial-000" / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    result = runner.invoke(app, ["fit", "--resume", str(run_dir), "--trials", "3"])
    assert result.exit_code == 0, result.output
    assert run_dir_of(result.output) == run_dir
    assert (run_dir / "trial-000" / "checkpoints" / "best.ckpt").stat().st_mtime_ns == before
    assert "random-nas trial-000" not in result.output and "random-nas trial-002 (3/3)" in result.output
    rows = json.loads((run_dir / "trials.json").read_text())
    assert [r["trial"] for r in rows] == [0, 1, 2] and Genotype.from_dict(rows[2]["genotype"]) == expected[2]
    assert trained_dirs(run_dir) == Counter({0: 1, 1: 1, 2: 1})

    # a worker with other settings is refused: its accuracies would not be comparable
    result = runner.invoke(app, ["fit", "--model", "random-nas", f"--model.storage={run_dir / 'study.journal'}", "--model.study=random-nas",
                                 "--trials", "4", "--max-epochs", "2", "--seed", "3", "--out", str(tmp_path / "other"), *TINY])
    assert_clean_failure(result, "holds trials made with other settings (trainer.max_epochs: the study has 1, this command 2)", tmp_path / "other")


@pytest.mark.slow
def test_cli_random_nas_in_the_nb201_space_trains_nb201_net_trials(tmp_path):
    """--model.space=nb201: cells drawn from NAS-Bench-201's space, each trained as nb201-net (its
    module, presets and checkpoints), the winner written for `nb201-net --genotype RUN` and exported
    as an nb201_net; config.yaml keeps the space under options, so --resume continues in it."""
    result = runner.invoke(app, ["fit", "--model", "random-nas", "--trials", "2", "--max-epochs", "1", "--seed", "5", "--out", str(tmp_path), *TINY_NB201])
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    rows = json.loads((run_dir / "trials.json").read_text())
    reference = optuna.create_study(sampler=TrialSeededRandomSampler(5))
    expected = [suggest_genotype(reference.ask(), NB201Space()) for _ in range(3)]
    assert [NB201Genotype.from_dict(r["genotype"]) for r in rows] == expected[:2]
    assert [l.split(",")[-1] for l in (run_dir / "trials.csv").read_text().splitlines()[1:]] == [str(g) for g in expected[:2]]  # the benchmark's strings
    for r in rows:
        assert (run_dir / r["dir"] / "genotype.txt").read_text().strip() == str(NB201Genotype.from_dict(r["genotype"]))
        ckpt = torch.load(run_dir / r["dir"] / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["dlstrat"] == {"model": "nb201-net", "data": "digits"} and ckpt["hyper_parameters"]["N"] == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    best = max(rows, key=lambda r: (r["val_acc"], -r["val_loss"]))
    assert summary["space"] == summary["study"]["space"] == "nb201" and summary["best_trial"] == best["trial"]
    winner = NB201Genotype.load(run_dir / "genotype.json")
    assert winner == NB201Genotype.from_dict(best["genotype"]) and summary["genotype"] == str(winner)
    assert (run_dir / "genotype.png").read_bytes()[:4] == b"\x89PNG"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["options"]["space"] == "nb201" and {"C", "N"} <= set(config["model"]) and "layers" not in config["model"]
    assert config["trainer"]["max_epochs"] == 1 and config["data"]["batch_size"] == 64  # nb201-net's digits batch
    assert f"retrain it: dlstrat fit --model nb201-net --genotype {run_dir} --data digits --seed 5" in result.output

    # the retrain recipe takes the run directory; the winner's network exports as nb201_net
    printed = runner.invoke(app, ["fit", "--model", "nb201-net", "--genotype", str(run_dir), "--print-config"])
    assert printed.exit_code == 0, printed.output
    assert yaml.safe_load(printed.output)["model"]["genotype"] == str(winner)
    exported = json.loads((export_run(run_dir, tmp_path / "hub") / "config.json").read_text())
    assert exported["architecture"] == "nb201_net" and NB201Genotype.from_dict(exported["model_args"]["genotype"]) == winner

    # resume: the space comes back from config.yaml's options, and the third draw is the seed's third cell
    result = runner.invoke(app, ["fit", "--resume", str(run_dir), "--trials", "3"])
    assert result.exit_code == 0, result.output
    assert f"random-nas trial-002 (3/3): {expected[2]}" in result.output
    assert NB201Genotype.from_dict(json.loads((run_dir / "trials.json").read_text())[2]["genotype"]) == expected[2]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.sampler=grid"], "--model.sampler must be one of random, tpe, nsga2, not 'grid'"),
        (["--model.pruner=asha"], "--model.pruner must be one of none, median, hyperband"),
        (["--model.sampler=nsga2", "--model.pruner=median"], "works with one objective only"),
        (["--devices", "2"], "start one worker per device on a shared study"),
        (["--trainer.limit_val_batches=0"], "do not disable validation"),
        (["--model.heartbeat=0"], "--model.heartbeat must be a positive number of seconds"),
        (["--model.studdy=x"], "unknown --model.studdy for random-nas"),
        (["--model.space=nas-bench-101"], "--model.space: unknown search space 'nas-bench-101'; choose from: darts, nb201"),
        (["--model.space=nb201", "--model.layers=3"], "unknown --model.layers for random-nas"),  # nb201-net's module: C and N, no layers
    ],
)
def test_bad_study_options_exit_2_before_a_run_directory_exists(tmp_path, args, message):
    assert_clean_failure(runner.invoke(app, ["fit", "--model", "random-nas", "--out", str(tmp_path), *args]), message, tmp_path)


def test_bad_storages_exit_2_without_a_run_directory(tmp_path):
    (tmp_path / "folder").mkdir()
    result = runner.invoke(app, ["fit", "--model", "random-nas", f"--model.storage={tmp_path / 'folder'}", "--out", str(tmp_path / "runs")])
    assert_clean_failure(result, "is a folder; give a journal file", tmp_path / "runs")
    result = runner.invoke(app, ["fit", "--model", "random-nas", "--model.storage=postgresql://nobody@127.0.0.1:1/none", "--out", str(tmp_path / "runs")])
    assert_clean_failure(result, "cannot open the study storage postgresql", tmp_path / "runs")
    result = runner.invoke(app, ["study", "show", str(tmp_path)])
    assert_clean_failure(result, "is not the run directory of a study (no study.json)")
    result = runner.invoke(app, ["study", "show", "--storage", str(tmp_path / "none.journal"), "--study", "x"])
    assert_clean_failure(result, "does not exist")


# --- failures, pruning, two objectives -----------------------------------------------------------------
class FailSecondTrial(L.Callback):
    """A real error in a real trial (the second one), as an out-of-memory trial raises it."""

    def __init__(self):
        self.fits = 0

    def on_train_start(self, trainer, pl_module):
        self.fits += 1
        if self.fits == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path):
    summary = fit(
        "random-nas", out=str(tmp_path), options={"trials": 3}, model={"C": 4, "layers": 3},
        trainer={"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 2, "limit_test_batches": 1, "callbacks": [FailSecondTrial()]},
    )
    run_dir = Path(summary["run_dir"])
    rows = json.loads((run_dir / "trials.json").read_text())
    assert [r["state"] for r in rows] == ["complete", "fail", "complete"]  # the failure uses one of the 3 trials
    assert rows[1]["note"] == "failed: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "Traceback" in (run_dir / "trial-001" / "error.txt").read_text()
    assert summary["best_trial"] in (0, 2)


def test_median_pruner_stops_a_trial_below_the_earlier_ones(tmp_path):
    """A study whose 3 finished trials reached 100 % validation accuracy at every epoch: a new trial
    of a tiny network trained for 3 batches an epoch is below their median at epoch 2, and stops there."""
    journal = tmp_path / "s.journal"
    study = optuna.create_study(storage=open_storage(journal), study_name="s", directions=["maximize"])
    for seed in range(3):
        g = suggest_genotype(optuna.create_study(sampler=TrialSeededRandomSampler(seed)).ask())
        study.add_trial(optuna.create_trial(params=genotype_params(g), distributions=distributions(), value=1.0,
                                            intermediate_values={0: 1.0, 1: 1.0, 2: 1.0}, user_attrs={"val_loss": 0.0}))
    result = runner.invoke(app, ["fit", "--model", "random-nas", f"--model.storage={journal}", "--model.study=s", "--model.pruner=median",
                                 "--trials", "4", "--max-epochs", "3", "--out", str(tmp_path), *TINY])
    assert result.exit_code == 0, result.output
    trial = load(journal, "s").trials[3]
    assert trial.state == optuna.trial.TrialState.PRUNED and sorted(trial.intermediate_values) == [0, 1]
    row = json.loads((run_dir_of(result.output) / "trials.json").read_text())[3]
    assert row["state"] == "pruned" and row["note"] == "pruned after epoch 2" and row["epochs"] == 2


@pytest.mark.slow
def test_nsga2_writes_the_pareto_front_of_accuracy_and_size(tmp_path):
    result = runner.invoke(app, ["fit", "--model", "random-nas", "--model.sampler=nsga2", "--trials", "3", "--max-epochs", "1", "--out", str(tmp_path), *TINY])
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    rows = json.loads((run_dir / "trials.json").read_text())
    front = [r for r in rows if str(r["trial"]) in {l.split(",")[0] for l in (run_dir / "pareto_front.csv").read_text().splitlines()[1:]}]

    def dominates(a, b):
        return a["val_acc"] >= b["val_acc"] and a["params"] <= b["params"] and (a["val_acc"], a["params"]) != (b["val_acc"], b["params"])

    assert front and all(not dominates(o, f) for f in front for o in rows)  # no trial dominates a front member
    assert all(any(dominates(f, o) for f in front) for o in rows if o not in front)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["val_acc"] == max(f["val_acc"] for f in front)
    assert (run_dir / "pareto_front.png").stat().st_size > 1000
    # --model.sampler is the recipe's option (the module has no such argument): config.yaml keeps it under options
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["options"]["sampler"] == "nsga2" and "sampler" not in config["model"]


# --- several workers on one storage; killed workers --------------------------------------------------
@pytest.mark.slow
def test_two_workers_on_one_journal_complete_the_trials_once_each(tmp_path):
    journal = tmp_path / "shared.journal"
    args = ["--trials", "4", "--max-epochs", "1", f"--model.storage={journal}", "--model.study=shared"]
    a, b = worker(*args, "--out", str(tmp_path / "a")), worker(*args, "--out", str(tmp_path / "b"))
    outs = [finish(a), finish(b)]
    study = load(journal, "shared")
    done = sorted(t.number for t in complete(study))
    assert len(done) == 4
    assert trained_dirs(run_dir_of(outs[0]), run_dir_of(outs[1])) == Counter({n: 1 for n in done})  # no trial trained twice
    assert len({str(genotype_of(t)) for t in complete(study)}) == 4
    # surplus trials (both workers opening a 5th at the same moment) are never trained
    assert all(t.user_attrs.get("surplus") for t in study.trials if t.number not in done)


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_a_killed_worker_s_trial_is_failed_and_retried(tmp_path, storage):
    spec = str(tmp_path / "s.journal") if storage == "journal" else f"sqlite:///{tmp_path / 's.db'}"
    args = ["--trials", "2", "--max-epochs", "4", f"--model.storage={spec}", "--model.study=s", "--model.heartbeat=1"]
    doomed = worker(*args, "--out", str(tmp_path / "a"))
    for line in doomed.stdout:  # the first epoch of trial 0 has ended: the worker is mid-trial
        if line.startswith("epoch 1/4"):
            break
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    assert load(spec, "s").trials[0].state == optuna.trial.TrialState.RUNNING  # what a dead worker leaves behind
    if storage == "sqlite":
        time.sleep(2.5)  # the heartbeat's grace period: twice --model.heartbeat
    out = finish(worker(*args, "--out", str(tmp_path / "b")))
    study = load(spec, "s")
    first, retry = study.trials[0], study.trials[1]
    assert first.state == optuna.trial.TrialState.FAIL and "error" not in first.user_attrs
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == first.params  # the same architecture, trained again
    assert len(complete(study)) == 2 and {t.number for t in complete(study)} == {1, 2}
    rows = json.loads((run_dir_of(out) / "trials.json").read_text())
    assert rows[0]["note"] == "abandoned (its worker died or was interrupted); retried as trial 1"
    assert rows[1]["note"] == "retry of trial 0"


@pytest.mark.slow
@pytest.mark.skipif("DLSTRAT_TEST_POSTGRES_URL" not in os.environ, reason="needs the PostgreSQL server .ci/run starts (source .ci/postgres.sh)")
def test_two_workers_share_a_study_in_postgresql(tmp_path):
    url = os.environ["DLSTRAT_TEST_POSTGRES_URL"]
    name = f"pg-{os.getpid()}-{time.time_ns()}"
    args = ["--trials", "3", "--max-epochs", "1", f"--model.storage={url}", f"--model.study={name}"]
    a, b = worker(*args, "--out", str(tmp_path / "a")), worker(*args, "--out", str(tmp_path / "b"))
    outs = [finish(a), finish(b)]
    study = load(url, name)
    done = sorted(t.number for t in complete(study))
    assert len(done) == 3
    assert trained_dirs(run_dir_of(outs[0]), run_dir_of(outs[1])) == Counter({n: 1 for n in done})
    shown = runner.invoke(app, ["study", "show", "--storage", url, "--study", name, "--out", str(tmp_path / "shown")])
    assert shown.exit_code == 0, shown.output
    assert len([l for l in shown.output.splitlines() if " complete " in l]) == 3
    assert len(json.loads((tmp_path / "shown" / "trials.json").read_text())) >= 3


# --- a full disk, torn and damaged journals (issue 23, item 3) -----------------------------------------
def _full_disk_at(monkeypatch, when) -> dict:
    """The disk fills up at the first journal write whose record ``when`` accepts: half of the record
    reaches the file, then ENOSPC, as write(2) does on a full disk (injected in os.fsync, which
    Optuna's writer and this package's both call after writing)."""
    real_fsync, state = os.fsync, {"failed": False}

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if not state["failed"] and path.endswith(".journal"):
            last = Path(path).read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
            if when(last):
                state["failed"] = True
                os.ftruncate(fd, os.fstat(fd).st_size - (len(last) + 1) // 2)  # half the record on the disk
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return state


def _journal_records(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]  # every line a whole record


@pytest.mark.slow
def test_a_full_disk_stops_the_study_cleanly_and_resume_finishes_it(tmp_path, monkeypatch):
    """Before: exit 1 with "unexpected AssertionError: Should not reach.", a torn last line, and from
    then on --resume and `study show` failed with JSONDecodeError."""
    state = _full_disk_at(monkeypatch, lambda record: b'"op_code":6' in record and b'"state":1' in record)  # trial 0 told complete
    result = runner.invoke(app, ["fit", "--model", "random-nas", "--trials", "2", "--max-epochs", "1", "--out", str(tmp_path), *TINY])
    assert state["failed"]
    run_dir = run_dirs(tmp_path)[0]
    journal = run_dir / "study.journal"
    assert_clean_failure(result, f"cannot write {journal}: No space left on device")
    assert f"continue the study with: dlstrat fit --resume {run_dir}" in " ".join(result.output.split())
    records = _journal_records(journal)  # no torn record left behind
    assert not any(r["op_code"] == 6 and r.get("state") == 1 for r in records)
    monkeypatch.undo()  # space freed

    result = runner.invoke(app, ["fit", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    study = load(journal, "random-nas")
    assert len(complete(study)) == 2 and study.trials[0].state == optuna.trial.TrialState.FAIL
    assert study.trials[1].system_attrs["failed_trial"] == 0  # the interrupted trial, trained again
    shown = runner.invoke(app, ["study", "show", str(run_dir), "--out", str(tmp_path / "shown")])
    assert shown.exit_code == 0, shown.output
    _journal_records(journal)


def test_a_journal_with_a_torn_record_is_read_and_repaired(tmp_path):
    """A last line cut mid-record (a worker killed, or a full disk under an older version) is skipped when
    read and cut before the next record; a torn head with a whole record after it (what an older
    version appended to a torn line) is read as that record."""
    journal = tmp_path / "s.journal"
    study = optuna.create_study(storage=open_storage(journal), study_name="s", directions=["maximize"])
    for seed in range(2):
        g = suggest_genotype(optuna.create_study(sampler=TrialSeededRandomSampler(seed)).ask())
        study.add_trial(optuna.create_trial(params=genotype_params(g), distributions=distributions(), value=0.5 + seed / 10, user_attrs={"val_loss": 0.1}))
    whole = journal.read_bytes()
    lines = whole.splitlines(keepends=True)
    torn_in_the_middle = b"".join(lines[:2] + [lines[2][:7]] + lines[2:])  # "{"op_co" + the record it was followed by
    journal.write_bytes(torn_in_the_middle + lines[-1][: len(lines[-1]) // 2])  # and a cut last line
    shown = runner.invoke(app, ["study", "show", "--storage", str(journal), "--study", "s", "--out", str(tmp_path / "shown")])
    assert shown.exit_code == 0, shown.output
    assert [r["state"] for r in json.loads((tmp_path / "shown" / "trials.json").read_text())] == ["complete", "complete"]
    assert journal.read_bytes().endswith(lines[-1][: len(lines[-1]) // 2])  # reading changes nothing
    reopened = load(journal, "s")
    reopened.set_user_attr("resumed", True)  # the next record: the cut one is dropped first
    data = journal.read_bytes()
    assert data.endswith(b"\n") and not data.endswith(lines[-1][: len(lines[-1]) // 2] + b"\n")
    assert load(journal, "s").user_attrs["resumed"] is True and len(load(journal, "s").trials) == 2


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00binary\xff\xfe\n", b"hello\nworld\n", b'{"op_code": 99}\n', b"[1, 2]\n"],
                         ids=["binary", "text", "unknown-op", "not-a-record"])
def test_study_show_on_a_garbage_journal_exits_2(tmp_path, content):
    journal = tmp_path / "s.journal"
    journal.write_bytes(content)
    result = runner.invoke(app, ["study", "show", "--storage", str(journal), "--study", "s", "--out", str(tmp_path / "shown")])
    assert_clean_failure(result, "is not an Optuna journal, or is damaged")
    assert not (tmp_path / "shown").exists()


# --- a worker killed while the others run (issue 23, item 4) --------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_a_trial_killed_while_other_workers_run_is_trained_again_before_they_quit(tmp_path, storage):
    """Before: the surviving worker counted the dead worker's RUNNING trial toward the budget and
    exited 0 with one trial short, the dead one RUNNING forever. Now it fails the stale trial (its
    worker's lock; the database's heartbeat), trains it again, and only then quits."""
    spec = str(tmp_path / "s.journal") if storage == "journal" else f"sqlite:///{tmp_path / 's.db'}"
    # 60 epochs (about 12 s): trial 0 is still running when the second worker has started and taken trial 1
    args = ["--trials", "2", "--max-epochs", "60", f"--model.storage={spec}", "--model.study=s", "--model.heartbeat=1"]
    doomed = worker(*args, "--out", str(tmp_path / "a"))
    for line in doomed.stdout:  # trial 0's first epoch has ended: the worker is mid-trial
        if line.startswith("epoch 1/60"):
            break
    survivor = worker(*args, "--out", str(tmp_path / "b"))
    for line in survivor.stdout:  # the survivor has taken trial 1, the budget's last
        if line.startswith("random-nas trial-001"):
            break
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    out = finish(survivor)
    study = load(spec, "s")
    states = {t.number: t.state for t in study.trials if not t.user_attrs.get("surplus")}
    assert states[0] == optuna.trial.TrialState.FAIL and "error" not in study.trials[0].user_attrs  # abandoned, not its own failure
    assert len(complete(study)) == 2, (states, out[-3000:])
    retried = [t for t in complete(study) if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].params == study.trials[0].params  # the killed trial's architecture, trained again
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
