"""A new user's first hour (issue 26): threads, step budgets, what a run prints and draws, run names,
MLflow's default store, the local Hub, and examples that run as written.

Most runs here are tiny (a few batches); the piped ``dlstrat fit`` and the Hub walk-through run the
CLI in real processes, as a user's shell does.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from _helpers import ROOT, assert_clean_failure, dlstrat, run_dir_of
from lightning_dlstrat.cli import app
from lightning_dlstrat.config import RunConfig, resolve
from lightning_dlstrat.recipes import RECIPES, get_recipe
from lightning_dlstrat.run import PlainProgress, RunProgressBar, choose_threads, epoch_label, stop_reason

runner = CliRunner()
TINY = ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2"]


def summary_of(output: str) -> dict:
    return json.loads((run_dir_of(output) / "summary.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- 2. threads --------------------------------------------------------------------------------------
def test_every_digits_preset_chooses_its_threads():
    """Each recipe's digits preset says how many threads it trains with (docs/benchmarks.md, "Threads")."""
    for name, recipe in RECIPES.items():
        cfg = resolve(recipe, flags={"model": {"name": name, **({"genotype": "DARTS_V2"} if name == "darts-net" else {})}})
        assert cfg.threads == 1 and cfg.threads_from == "preset", name
    nb201 = resolve(get_recipe("darts"), flags={"model": {"name": "darts", "space": "nb201"}})
    assert nb201.threads == 1


def test_threads_precedence_flag_then_environment_then_preset(monkeypatch):
    cfg = RunConfig(model="mlp", data="digits", threads=1, threads_from="preset")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert choose_threads(cfg) == (1, "preset")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(cfg) == (3, "OMP_NUM_THREADS")  # the environment wins over the preset
    cfg.threads_from = "--config"
    assert choose_threads(cfg) == (3, "OMP_NUM_THREADS")  # and over a replayed config.yaml
    flag = RunConfig(model="mlp", data="digits", threads=2, threads_from="--threads")
    assert choose_threads(flag) == (2, "--threads")  # an explicit --threads wins over both
    monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
    assert choose_threads(cfg) == (1, "--config")


@pytest.mark.threads
def test_threads_flag_sets_the_run_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    result = runner.invoke(app, ["fit", "--model", "mlp", "--max-epochs", "1", *TINY, "--threads", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert summary_of(result.output)["threads"] == {"count": 2, "from": "--threads"}
    assert "2 threads (--threads)" in result.output.splitlines()[0]
    assert torch.get_num_threads() == before and os.environ["OMP_NUM_THREADS"] == "1"  # both restored after the run
    again = runner.invoke(app, ["fit", "--model", "mlp", "--max-epochs", "1", *TINY, "--out", str(tmp_path)])
    assert summary_of(again.output)["threads"] == {"count": 1, "from": "OMP_NUM_THREADS"}
    bad = runner.invoke(app, ["fit", "--model", "mlp", "--threads", "0", "--out", str(tmp_path / "bad")])
    assert_clean_failure(bad, "threads must be a positive integer", tmp_path / "bad")


# --- 3. max_steps is the budget ----------------------------------------------------------------------
def _checkpoint_steps(run_dir: Path) -> dict[str, int]:
    return {p.name: torch.load(p, weights_only=True)["global_step"] for p in (run_dir / "checkpoints").glob("*.ckpt")}


def test_max_steps_inside_an_epoch_validates_and_checkpoints_the_last_step(tmp_path):
    """mlp on digits has 21 batches an epoch: 25 steps end inside the second, and that state is the one kept and tested."""
    result = runner.invoke(app, ["fit", "--model", "mlp", "--trainer.max_steps=25", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    assert _checkpoint_steps(run_dir) == {"best.ckpt": 25, "last.ckpt": 25}
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert sum(1 for r in rows if r["val/acc"]) == 2  # validated at the end of epoch 1 and at step 25
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped"].startswith("max_steps=25 reached (global step 25")
    assert f"stopped: {summary['stopped']}" in result.output


def test_a_search_stops_at_its_step_budget_and_refuses_an_odd_one(tmp_path):
    """DARTSSearch counts two optimiser steps a batch: 30 steps are 15 batches, inside the first epoch (20 batches)."""
    args = ["fit", "--model", "darts", "--model.space=nb201", "--model.C=4", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--trainer.max_steps=30"])
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    assert _checkpoint_steps(run_dir) == {"best.ckpt": 30, "last.ckpt": 30}
    assert run_dir.name.startswith("darts-nb201-digits-")  # 6. named by what it is
    odd = runner.invoke(app, [*args, "--trainer.max_steps=31"])
    assert_clean_failure(odd, "stops only at an even step count; give 30 or 32")


# --- 4. what a run prints ------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far (Linux /proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process's CPU time from /proc")
def test_a_piped_search_says_what_is_starting_within_10_seconds(tmp_path):
    """The default search, stdout to a pipe as `dlstrat fit --model darts > log` has it: its first line
    comes before any training, within 10 s of the process starting (imports included).

    The 10 s are the process's own CPU time up to that line: on an idle machine that is its wall
    time, and unlike wall time it does not grow with whatever else the machine runs (the suite's
    other worker, DDP ranks). Wall time is bounded too, loosely, so that a line that never comes fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "lightning_dlstrat", "fit", "--model", "darts", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        first = proc.stdout.readline()
        took = time.monotonic() - started
        cpu = cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert first.startswith("starting darts on digits (15 epochs): cpu, 1 thread (OMP_NUM_THREADS), run directory "), first
    assert cpu < 10, f"the first line took {cpu:.1f} s of CPU time ({took:.1f} s of wall time)"
    assert took < 60, f"the first line took {took:.1f} s"


@pytest.mark.slow
def test_output_names_the_epochs_alike_and_says_why_it_stopped(tmp_path):
    """Plain lines and the Rich bar count epochs the same way; no Lightning advertisement; EarlyStopping named."""
    trainer = SimpleNamespace(max_epochs=3, max_steps=-1)
    assert epoch_label(trainer, 2) == "epoch 3/3"
    bar = RunProgressBar()
    bar._trainer = trainer  # what Lightning's setup attaches
    assert bar._get_train_description(2).strip() == "Epoch 3/3"
    assert epoch_label(SimpleNamespace(max_epochs=-1, max_steps=700), 4) == "epoch 5"  # no "/-2"

    stop = "--trainer.callbacks=[{class_path: EarlyStopping, init_args: {monitor: val/loss, min_delta: 100, patience: 1}}]"
    proc = dlstrat("fit", "--model", "mlp", "--max-epochs", "5", *TINY, stop, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "💡" not in out and "litlogger" not in out and "litmodels" not in out
    lines = [l for l in proc.stdout.splitlines() if l.startswith("epoch ") and "=" in l]
    assert [l.split()[1] for l in lines] == ["1/5", "2/5"]
    assert "stopped: EarlyStopping after epoch 2" in proc.stdout


def test_stop_reasons():
    def trainer(**kw):
        base = dict(callbacks=[], max_steps=-1, max_epochs=3, global_step=63, current_epoch=3, should_stop=False)
        return SimpleNamespace(**{**base, **kw})

    assert stop_reason(trainer()).startswith("max_epochs=3 reached")
    assert stop_reason(trainer(max_epochs=-1, max_steps=63)).startswith("max_steps=63 reached")
    assert "trainer.should_stop" in stop_reason(trainer(current_epoch=2, should_stop=True))


def test_a_search_says_when_the_r_darts_early_stop_ended_it(tmp_path):
    from _helpers import search_args
    from lightning_dlstrat.recipes.darts import after_search
    from lightning_dlstrat.trainers.darts_search import DARTSSearch

    module = DARTSSearch(**search_args("nb201"))
    module.history = [
        {"epoch": 0, "eigenvalue": 0.1, "skips": {"cell": 0}},
        {"epoch": 3, "eigenvalue": 0.5, "skips": {"cell": 1}, "early_stop": {"ratio": 1.5, "rolled_back_to_epoch": 1, "genotype": "x"}},
    ]
    result = after_search(module, SimpleNamespace(is_global_zero=True), None, tmp_path)
    assert result["stopped"] == "R-DARTS early stop after epoch 4: the dominant eigenvalue grew 1.50x, alpha rolled back to epoch 2 (genotype_history.jsonl)"
    assert (tmp_path / "collapse.png").is_file()


def test_plain_progress_prints_an_early_estimate(capsys):
    progress = PlainProgress()
    trainer = SimpleNamespace(is_global_zero=True, num_training_batches=21, current_epoch=0, max_epochs=15, max_steps=-1)
    for i in range(PlainProgress.ESTIMATE_AFTER):
        progress.on_train_batch_start(trainer, None, None, i)
        progress.on_train_batch_end(trainer, None, None, None, i)
    line = capsys.readouterr().out.strip()
    assert line.startswith("epoch 1/15: 5 of 21 batches in, ") and "this epoch ends in about" in line


# --- 5. every run draws its curves -------------------------------------------------------------------
def test_every_recipe_draws_learning_curves_and_lists_its_pictures(tmp_path):
    for args in (["--model", "mlp"], ["--model", "nb201-net", "--model.C=4", "--model.N=1",
                                      "--genotype", "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"]):
        result = runner.invoke(app, ["fit", *args, "--max-epochs", "2", *TINY, "--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
        run_dir = run_dir_of(result.output)
        assert (run_dir / "learning_curves.png").stat().st_size > 5000
        summary = json.loads((run_dir / "summary.json").read_text())
        assert "learning_curves.png" in summary["pictures"]
        assert all((run_dir / p).is_file() for p in summary["pictures"])
        assert "pictures: learning_curves.png" in result.output


def test_learning_curves_average_steps_per_epoch_and_draw_gan_losses(tmp_path):
    from lightning_dlstrat.viz import epoch_curves, plot_learning_curves

    log = tmp_path / "metrics.csv"
    log.write_text(
        "epoch,step,train/d_loss,train/g_loss,val/acc,alpha/normal/e0/none\n"
        "0,1,1.0,2.0,,0.1\n0,2,3.0,4.0,,\n0,2,,,0.5,\n1,3,5.0,6.0,,\n"
    )
    curves = epoch_curves(log)
    assert curves == {"train/d_loss": {0: 2.0, 1: 5.0}, "train/g_loss": {0: 3.0, 1: 6.0}, "val/acc": {0: 0.5}}
    assert plot_learning_curves(log, tmp_path / "curves.png") and (tmp_path / "curves.png").is_file()
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,step,lr\n0,1,0.1\n")
    assert not plot_learning_curves(empty, tmp_path / "none.png") and not (tmp_path / "none.png").exists()


# --- 6. run names ------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe, model, options, name", [
    ("darts", {}, {}, "darts-digits"),
    ("darts", {"space": "nb201"}, {}, "darts-nb201-digits"),
    ("gan", {}, {}, "gan-digits"),
    ("gan", {"conditional": True}, {}, "gan-cond-digits"),
    ("random-nas", {}, {}, "random-nas-digits"),
    ("random-nas", {}, {"space": "nb201"}, "random-nas-nb201-digits"),
    ("mlp", {}, {}, "mlp-digits"),
])
def test_run_names_tell_runs_apart(recipe, model, options, name):
    found = get_recipe(recipe)
    cfg = resolve(found, flags={"model": {"name": recipe, **model}, "options": options})
    assert found.name_of_run(cfg) == name


# --- 7. MLflow -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_mlflow_logs_to_an_sqlite_store_in_the_run_directory(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = runner.invoke(app, ["fit", "--model", "mlp", "--max-epochs", "1", *TINY, "--trainer.logger=[csv,mlflow]", "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    assert (run_dir / "mlflow.db").is_file() and not (run_dir / "mlruns").exists()
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lightning-dlstrat").experiment_id])
    assert run.info.run_name == run_dir.name and 0.0 <= run.data.metrics["val/acc"] <= 1.0

    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}")  # a tracking URI the user set wins
    result = runner.invoke(app, ["fit", "--model", "mlp", "--max-epochs", "1", *TINY, "--trainer.logger=[csv,mlflow]", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert other.is_file() and not (run_dir_of(result.output) / "mlflow.db").exists()


# --- 8. the Hub, offline ---------------------------------------------------------------------------------
@pytest.mark.slow  # four processes of the CLI: about 17 s on 2 cores
def test_hub_serve_then_push_and_pull_a_run(tmp_path):
    """`dlstrat hub serve` in its own process prints what to export; a run is pushed to it and pulled back."""
    trained = runner.invoke(app, ["fit", "--model", "mlp", "--max-epochs", "1", *TINY, "--out", str(tmp_path / "runs")])
    assert trained.exit_code == 0, trained.output
    run_dir = run_dir_of(trained.output)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "lightning_dlstrat", "hub", "serve", "--port", str(free_port())],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        banner = server.stdout.readline()
        exports = server.stdout.readline().split()
        assert banner.startswith("Hub-compatible test server on http://127.0.0.1:"), banner + server.stderr.read()
        assert exports[0] == "export"
        hub_env = dict(item.split("=", 1) for item in exports[1:])
        assert set(hub_env) == {"HF_ENDPOINT", "HF_TOKEN", "HF_HUB_DISABLE_XET", "HF_HUB_CACHE"}
        hub_env["HF_HUB_CACHE"] = str(tmp_path / "cache")
        pushed = dlstrat("push", str(run_dir), "--repo-id", "me/mlp-run", env=hub_env)
        assert pushed.returncode == 0, pushed.stderr
        pulled = dlstrat("zoo", "pull", "me/mlp-run", env=hub_env)
        assert pulled.returncode == 0, pulled.stderr
        folder = Path(pulled.stdout.strip().splitlines()[-1])
        assert (folder / "model.safetensors").is_file() and str(folder).startswith(str(tmp_path / "cache"))
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("args", [["zoo", "pull", "org/model"], ["zoo", "publish", "mlp-digits", "--repo-id", "org/model"]])
def test_an_unreachable_hub_fails_once_and_at_once(args, tmp_path, monkeypatch):
    from huggingface_hub import constants

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "test-token")
    started = time.monotonic()
    result = runner.invoke(app, args)
    assert time.monotonic() - started < 3, "no retries"
    assert_clean_failure(result, f"cannot reach the Hub at {url} (connection refused)")
    assert "HF_ENDPOINT" in result.output


# --- 9. examples that run as written ----------------------------------------------------------------------
def test_data_samples_then_predict_as_the_readme_does(tmp_path):
    folder = tmp_path / "digits"
    result = runner.invoke(app, ["data", "samples", "--data", "digits", "--out", str(folder), "-n", "16"])
    assert result.exit_code == 0, result.output
    images = sorted(folder.glob("*.png"))
    assert len(images) == 16 and images[0].name == "test-0000-class-6.png"
    out = tmp_path / "predictions.csv"
    predicted = runner.invoke(app, ["predict", "--zoo", "mlp-digits", str(folder), "--out", str(out)])
    assert predicted.exit_code == 0, predicted.output
    rows = list(csv.DictReader(open(out)))
    right = sum(r["top_class"] == Path(r["input"]).stem.split("-")[-1] for r in rows)
    assert len(rows) == 16 and right >= 15
    assert_clean_failure(runner.invoke(app, ["data", "samples", "--data", "ring8", "--out", str(tmp_path / "r")]), "2-D points, not images")
    assert_clean_failure(runner.invoke(app, ["data", "samples", "--out", str(tmp_path / "z"), "-n", "0"]), "-n must be between 1")


def test_data_list_shows_whole_sentences_without_markup():
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0
    entries: dict[str, str] = {}
    for line in result.output.splitlines():
        if line[:1].strip():
            name, _, text = line.partition(" ")
            entries[name] = text.strip()
        else:
            entries[name] += " " + line.strip()
    assert "digits-hard" in entries and "``" not in result.output and ":func:" not in result.output
    for name, text in entries.items():
        assert text.endswith((".", ")")), (name, text)
        assert not text.startswith(name), (name, text)
