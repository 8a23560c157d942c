"""Reliability and security: safe resume, one run directory per run under DDP, exit 2 everywhere.

Each failure found by the reliability review has its regression test here:
- ``--resume`` never runs code from a checkpoint, even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1;
- only global rank 0 creates and writes the run directory (Lightning's ddp launcher, torchrun);
- creating run directories is atomic under concurrent starts;
- resuming continues the same run in its directory, after SIGINT and after SIGKILL, with the
  same results as an uninterrupted run and one continuous metrics.csv;
- sizes from text and downloaded configs are bounded before anything is allocated;
- bad input exits 2 with one clear paragraph, no traceback and no run directory left behind.
"""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from typer.testing import CliRunner

from _helpers import ROOT, assert_clean_failure, dlstrat, run_dir_of, run_dirs
from lightning_dlstrat.cli import app
from lightning_dlstrat.hub import HubError, build_from_config
from lightning_dlstrat.spaces.darts.genotype import DARTS_V2, Genotype, resolve_genotype
from lightning_dlstrat.run import make_run_dir

runner = CliRunner()
SHORT = ["--accelerator", "cpu", "--max-epochs", "1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2"]


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlp")
    result = runner.invoke(app, ["fit", "--model", "mlp", "--out", str(out), "--model.hidden=[16]", *SHORT])
    assert result.exit_code == 0, result.output
    return run_dir_of(result.output)


# --- safe loading --------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_resume_never_runs_code_planted_in_a_checkpoint(mlp_run, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = torch.load(mlp_run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["extra"] = _Payload(str(marker))  # a real checkpoint, with a pickle that runs a command
    evil = tmp_path / "evil" / "checkpoints" / "last.ckpt"
    evil.parent.mkdir(parents=True)
    torch.save(ckpt, evil)
    shutil.copy(mlp_run / "config.yaml", evil.parent.parent / "config.yaml")
    proc = dlstrat("fit", "--resume", str(evil), env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    assert_clean_failure(proc, "is not a readable checkpoint")
    assert "weights_only=False" not in proc.stderr  # torch's advice to unpickle it is not passed on
    assert not marker.exists()
    proc = dlstrat("test", "--checkpoint", str(evil), env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    assert_clean_failure(proc, "is not a readable checkpoint")
    assert not marker.exists()


def test_every_checkpoint_load_passes_weights_only_true():
    """A source scan: each torch.load / load_from_checkpoint / Trainer fit-test call says weights_only=True."""
    import re

    for path in (ROOT / "lightning_dlstrat").rglob("*.py"):
        text = path.read_text()
        for call in re.finditer(r"(torch\.load|load_from_checkpoint|trainer\.(fit|test|validate))\(([^()]|\([^()]*\))*\)", text):
            if "ckpt_path" in call.group(0) or "torch.load" in call.group(0) or "load_from_checkpoint" in call.group(0):
                assert "weights_only=True" in call.group(0), f"{path.name}: {call.group(0)[:120]}"


# --- one run directory per run ----------------------------------------------------------------------
def test_concurrent_run_directories_are_distinct(tmp_path):
    barrier, made, errors = threading.Barrier(20), [], []

    def start():
        barrier.wait()
        try:
            made.append(make_run_dir(tmp_path, "mlp-digits"))
        except Exception as e:  # pragma: no cover - the failure this test looks for
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(made)) == 20 and all(p.is_dir() for p in made)


def test_ddp_with_three_cpu_processes_leaves_one_run_directory(tmp_path):
    proc = dlstrat("fit", "--model", "mlp", "--out", str(tmp_path), "--strategy", "ddp", "--devices", "3", *SHORT, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory: ") == 1
    (run_dir,) = run_dirs(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run_dir"] == str(run_dir) and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_torchrun_matches_ddp_spawn_and_leaves_one_directory(tmp_path):
    """torchrun --nnodes=2 --nproc-per-node=1 on 127.0.0.1: the path users take when they outgrow one machine."""
    args = ["--model", "mlp", "--seed", "1", "--model.hidden=[16]", "--accelerator", "cpu", "--max-epochs", "2", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2"]
    port = _free_port()
    nodes = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={node}", "--master-addr=127.0.0.1", f"--master-port={port}",
               "-m", "lightning_dlstrat", "fit", *args, "--strategy", "ddp", "--trainer.num_nodes=2", "--devices", "1", "--out", str(tmp_path / "torchrun")]
        nodes.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}))
    outputs = [p.communicate(timeout=400) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert sum(o.count("run directory: ") for o, _ in outputs) == 1
    (run_dir,) = run_dirs(tmp_path / "torchrun")
    spawn = dlstrat("fit", *args, "--strategy", "ddp_spawn", "--devices", "2", "--out", str(tmp_path / "spawn"), env={"OMP_NUM_THREADS": "1"}, timeout=400)
    assert spawn.returncode == 0, spawn.stderr[-2000:]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (run_dir, run_dir_of(spawn.stdout)))
    assert a["test_metrics"] == b["test_metrics"] and a["fit_metrics"] == b["fit_metrics"]
    wa = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(run_dir_of(spawn.stdout) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# --- resume after SIGINT / SIGKILL ---------------------------------------------------------------------
RESUMABLE = ["--model", "mlp", "--accelerator", "cpu", "--max-epochs", "12", "--model.hidden=[256, 256]"]


def _interrupt(tmp_path: Path, sig: int) -> tuple[subprocess.CompletedProcess | None, Path]:
    """Start a run, then send ``sig`` half-way through an epoch; return the process result and its run directory.

    Half-way is timed from two checkpoint writes (an epoch apart), so the signal never lands in
    the instant after a save, before the epoch's train averages are logged.
    """
    proc = subprocess.Popen([sys.executable, "-m", "lightning_dlstrat", "fit", *RESUMABLE, "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline, seen = time.time() + 300, []
    while time.time() < deadline and len(seen) < 2:
        found = list(tmp_path.glob("*/checkpoints/last.ckpt"))
        stamp = found[0].stat().st_mtime_ns if found else None
        if stamp is not None and stamp not in [s for s, _ in seen]:
            seen.append((stamp, time.time()))
        time.sleep(0.01)
    epoch = seen[1][1] - seen[0][1]
    time.sleep(epoch / 2)  # mid-way through the third epoch
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    (run_dir,) = run_dirs(tmp_path)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), run_dir


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    proc = dlstrat("fit", *RESUMABLE, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir_of(proc.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_resume_after_a_kill_continues_the_same_run(tmp_path, sig, uninterrupted):
    killed, run_dir = _interrupt(tmp_path, sig)
    if sig == signal.SIGINT:
        assert killed.returncode == 130, killed.stderr[-2000:]
        assert f"resume it with: dlstrat fit --resume {run_dir}" in killed.stderr and "Traceback" not in killed.stderr
    else:
        assert killed.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    resumed = dlstrat("fit", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert run_dir_of(resumed.stdout) == run_dir and run_dirs(tmp_path) == [run_dir]  # the same directory
    a, b = (json.loads((d / "summary.json").read_text()) for d in (uninterrupted, run_dir))
    assert a["test_metrics"] == b["test_metrics"] and a["fit_metrics"] == b["fit_metrics"]
    wa = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _rows(uninterrupted) == _rows(run_dir)  # one continuous metrics.csv, row for row


def test_last_ckpt_follows_every_epoch_when_the_metric_does_not_improve(tmp_path):
    """Lightning 2.6 writes last.ckpt only beside a new best checkpoint; the run's writes it every epoch, so a resume
    continues from the last epoch trained, not from the best one."""
    never_better = "--trainer.callbacks=[{class_path: ModelCheckpoint, init_args: {monitor: epoch, mode: min}}]"  # epoch 0 stays best
    args = ["fit", "--model", "mlp", "--model.hidden=[16]", "--accelerator", "cpu", never_better, "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--max-epochs", "3"])
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    steps = {p.name: torch.load(p, weights_only=True)["global_step"] for p in (run_dir / "checkpoints").glob("*.ckpt")}
    assert steps == {"best.ckpt": 21, "last.ckpt": 63}  # 21 batches an epoch: the best is epoch 0, the last epoch 2
    resumed = runner.invoke(app, ["fit", "--resume", str(run_dir), "--max-epochs", "4"])
    assert resumed.exit_code == 0, resumed.output
    epochs = [int(r["epoch"]) for r in _rows(run_dir) if r["val/acc"]]
    assert epochs == [0, 1, 2, 3]  # one more epoch, none trained twice
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 84 and any(k.startswith("ModelCheckpoint{") for k in state["callbacks"])  # its state under ModelCheckpoint's key


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["test", "train"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_every_interruption_exits_128_plus_the_signal_with_the_resume_command(tmp_path, sig, stage):
    """SIGTERM during the post-fit test exited 0 with no message and no summary.json; Ctrl-C there exited 1 with
    no message; SIGTERM while training exited 130, as Ctrl-C does. Now: 130 for SIGINT, 143 for SIGTERM, in any
    stage, with the resume command (a real process, signalled while a callback holds it in that stage)."""
    marker = tmp_path / "paused"
    pause = f"--trainer.callbacks=[{{class_path: _helpers.PauseIn, init_args: {{stage: {stage}, marker: '{marker}'}}}}]"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "lightning_dlstrat", "fit", "--model.hidden=[16]", *SHORT[:2], "--max-epochs", "2", *SHORT[4:],
                             pause, "--out", str(tmp_path / "runs")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert proc.returncode == 128 + sig, err[-3000:]
    assert f"resume it with: dlstrat fit --resume {run_dir}" in err and "Traceback" not in err, err[-3000:]
    assert ("terminated (SIGTERM)" in err) == (sig == signal.SIGTERM) and f"while {stage}ing" in err
    assert not (run_dir / "summary.json").exists()


def test_sigterm_to_rank_0_of_ddp_ends_every_rank_with_the_checkpoint_intact(tmp_path):
    """SIGTERM to rank 0 of `--devices 2 --strategy ddp` deadlocked both ranks in 2 of 6 tries (rank 0 in ModelCheckpoint's
    all_reduce, against the broadcast Lightning's signal handler makes). Three tries, each signalled at a random point."""
    import random

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(3):
        out = tmp_path / f"try{attempt}"
        proc = subprocess.Popen([sys.executable, "-m", "lightning_dlstrat", "fit", "--model.hidden=[16]", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
                                 "--max-epochs", "300", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1", "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.time() + 120
        while not list(out.glob("*/checkpoints/last.ckpt")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(random.uniform(0.2, 1.5))
        ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()  # rank 1, started by rank 0
        assert ranks, "rank 1 is not running"
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            for pid in ranks:
                subprocess.run(["kill", "-9", pid])
            pytest.fail(f"try {attempt}: rank 0 did not end within 30 s of SIGTERM")
        assert proc.returncode == 143, err[-3000:]
        (run_dir,) = run_dirs(out)
        assert f"resume it with: dlstrat fit --resume {run_dir}" in err
        for pid in ranks:  # every rank ended (or is a zombie waiting for its parent, which has ended)
            status = Path(f"/proc/{pid}/status")
            assert not status.exists() or "zombie" in status.read_text(), f"rank process {pid} outlived rank 0"
        for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
            assert torch.load(ckpt, weights_only=True)["dlstrat"]["model"] == "mlp"  # intact


# --- bounded sizes ----------------------------------------------------------------------------------------
def test_genotype_text_is_bounded_before_it_expands():
    huge = str(DARTS_V2).replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(0, 200000000)")
    start = time.time()
    with pytest.raises(ValueError, match="200,000,000 elements"):
        Genotype.parse(huge)
    assert time.time() - start < 1.0  # refused from its length, never expanded
    with pytest.raises(ValueError, match="longer than"):
        Genotype.parse("[" * 100_000)
    with pytest.raises(ValueError, match="at most 64"):
        Genotype.from_dict({**DARTS_V2.to_dict(), "normal": [["skip_connect", 0]] * 1000})
    with pytest.raises(ValueError, match="is not a built-in"):
        resolve_genotype("x" * 300)  # longer than a file name may be: not tried as a path, no OSError


def test_downloaded_configs_are_bounded_and_never_read_local_files(tmp_path):
    import lightning_dlstrat.models  # noqa: F401

    huge = {"library_name": "lightning-dlstrat", "architecture": "dlstrat_mlp", "model_args": {"in_shape": [1, 8, 8], "hidden": [200000, 200000]}}
    start = time.time()
    with pytest.raises(HubError, match="more than this loader allows"):
        build_from_config(huge, "org/huge")
    assert time.time() - start < 5.0  # counted on the meta device, nothing allocated
    DARTS_V2.save(tmp_path / "genotype.json")
    as_path = {"library_name": "lightning-dlstrat", "architecture": "darts_net", "model_args": {"genotype": str(tmp_path / "genotype.json"), "C": 4, "layers": 3}}
    with pytest.raises(HubError, match="does not describe a valid DARTSNetwork"):
        build_from_config(as_path, "org/paths")  # a string from a download is never opened as a file
    ranged = {"library_name": "lightning-dlstrat", "architecture": "darts_net", "model_args": {"genotype": str(DARTS_V2).replace("[2, 3, 4, 5]", "range(0, 200000000)", 1)}}
    with pytest.raises(HubError, match="200,000,000 elements"):
        build_from_config(ranged, "org/ranged")


# --- bad input: exit 2, one paragraph, no traceback, nothing left behind ---------------------------------
def _gan_checkpoint(tmp_path: Path) -> Path:
    result = runner.invoke(app, ["fit", "--model", "gan", "--data", "ring8", "--out", str(tmp_path / "gan"), "--trainer.max_steps=2"])
    assert result.exit_code == 0, result.output
    return run_dir_of(result.output) / "checkpoints" / "last.ckpt"


BAD_FLAGS = [
    (["--devices", "0"], "devices=0 runs on nothing"),
    (["--data.batch_size=0"], "batch_size must be a positive integer"),
    (["--data.val_fraction=2"], "val_fraction must be in [0, 1)"),
    (["--model.lr=abc"], "--model.lr must be a number"),
    (["--max-epochs", "-1"], "max_epochs=-1 trains forever"),
    (["--trainer.logger=tensorbored"], "unknown logger 'tensorbored'"),
    (["--model", "darts", "--model.layers=2"], "needs at least 3 cells"),
    (["--model", "darts-net", "--genotype", "g" * 300], "is not a built-in"),
    (["--model.hidden=" + "9" * 10_000_000], "characters)"),  # a 10 MB value is not echoed back in full
]


@pytest.mark.parametrize("flags,message", BAD_FLAGS, ids=[f[0][0].split("=")[0] + str(i) for i, f in enumerate(BAD_FLAGS)])
def test_bad_flags_exit_2_and_leave_nothing(flags, message, tmp_path):
    result = runner.invoke(app, ["fit", *flags, "--out", str(tmp_path)])
    assert_clean_failure(result, message, tmp_path)
    assert len(result.output) < 2000
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "text,message",
    [("trainer: [1, 2]\n", "'trainer' must be a mapping"), ("seed: abc\n", "seed must be an integer"), ('max_epochs: "abc"\n', "max_epochs must be an integer")],
)
def test_config_values_of_the_wrong_type(text, message, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: mlp\n" + text)
    assert_clean_failure(runner.invoke(app, ["fit", "--config", str(cfg), "--out", str(tmp_path / "runs")]), message, tmp_path / "runs")


def test_bad_resume_targets(tmp_path, mlp_run):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    assert_clean_failure(runner.invoke(app, ["fit", "--resume", str(empty)]), "is empty (0 bytes)")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((mlp_run / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    assert_clean_failure(runner.invoke(app, ["fit", "--resume", str(truncated)]), "is not a readable checkpoint")
    assert_clean_failure(runner.invoke(app, ["fit", "--model", "gan", "--resume", str(mlp_run)]), "holds a mlp checkpoint, not gan")
    assert_clean_failure(runner.invoke(app, ["fit", "--resume", str(tmp_path / "nope")]), "does not exist")
    (tmp_path / "fresh").mkdir()
    assert_clean_failure(runner.invoke(app, ["fit", "--resume", str(tmp_path / "fresh")]), "nothing to resume from")


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders): equal snapshots, an untouched folder."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def test_resume_of_a_checkpoint_outside_a_run_directory_leaves_its_folder_untouched(tmp_path, mlp_run):
    """`dlstrat fit --resume ~/Downloads/model.ckpt` used to adopt ~/Downloads as the run: it cut the rows of its
    metrics.csv, overwrote its summary.json and added config.yaml, hparams.yaml and checkpoints/."""
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    shutil.copy(mlp_run / "checkpoints" / "last.ckpt", downloads / "model.ckpt")
    (downloads / "metrics.csv").write_text("epoch,loss\n0,1.5\n1,1.2\n")  # the user's own files, no `step` column
    (downloads / "summary.json").write_text('{"mine": true}\n')
    (downloads / "config.yaml").write_text("# my own settings\nlr: 3\n")
    before = _snapshot(downloads)
    result = runner.invoke(app, ["fit", "--resume", str(downloads / "model.ckpt"), "--out", str(tmp_path / "runs"), "--max-epochs", "2", *SHORT[4:]])
    assert result.exit_code == 0, result.output
    assert _snapshot(downloads) == before  # byte for byte
    run_dir = run_dir_of(result.output)
    assert run_dir.parent == tmp_path / "runs" and (run_dir / ".dlstrat-run").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 6  # it continued the checkpoint's training state
    # a folder holding checkpoints/last.ckpt, but not made by dlstrat, is refused and left alone
    (downloads / "checkpoints").mkdir()
    shutil.copy(downloads / "model.ckpt", downloads / "checkpoints" / "last.ckpt")
    before = _snapshot(downloads)
    assert_clean_failure(runner.invoke(app, ["fit", "--resume", str(downloads)]), "is not a run directory made by dlstrat")
    assert _snapshot(downloads) == before
    # a run directory of an earlier version (no marker; config.yaml written by dlstrat, checkpoints/last.ckpt) resumes in place
    old = tmp_path / "old-run"
    shutil.copytree(mlp_run, old)
    (old / ".dlstrat-run").unlink()
    result = runner.invoke(app, ["fit", "--resume", str(old), "--max-epochs", "2"])
    assert result.exit_code == 0, result.output
    assert run_dir_of(result.output) == old


@pytest.mark.slow
def test_two_processes_cannot_work_on_one_run(tmp_path, mlp_run):
    """Two concurrent `--resume` of one run both trained, interleaving its metrics.csv and checkpoints. Now the
    second exits 2 naming the first (pid and host), and the lock dies with its holder, even by SIGKILL."""
    run = tmp_path / "run"
    shutil.copytree(mlp_run, run)
    first = subprocess.Popen([sys.executable, "-m", "lightning_dlstrat", "fit", "--resume", str(run), "--max-epochs", "100000"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        lock, deadline = run / ".dlstrat-lock", time.time() + 60
        while time.time() < deadline and f"pid {first.pid} " not in (lock.read_text() if lock.is_file() else ""):
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        assert f"pid {first.pid} " in (lock.read_text() if lock.is_file() else ""), "the running run holds no lock"
        second = dlstrat("fit", "--resume", str(run), timeout=120)
        assert_clean_failure(second, f"is in use by pid {first.pid} on host {socket.gethostname()}")
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.communicate()
    from lightning_dlstrat.run import RunLock

    RunLock(run).acquire().release()  # SIGKILL left no stale lock


def test_printed_commands_are_quoted_for_the_shell(tmp_path, mlp_run):
    """The resume command printed on an interruption was not quoted: pasting it failed for a path with a space."""
    import shlex
    import signal as signals

    run = tmp_path / "my runs" / "it's here"
    shutil.copytree(mlp_run, run)

    class CtrlC(L.Callback):
        def on_train_batch_end(self, *args):
            raise KeyboardInterrupt

    from lightning_dlstrat.recipes import fit
    from lightning_dlstrat.run import RunInterrupted

    handler = signals.getsignal(signals.SIGINT)
    try:
        with pytest.raises(RunInterrupted) as caught:
            fit("mlp", resume=str(run), model={"hidden": [16]}, max_epochs=3, trainer={"callbacks": [CtrlC()], "enable_progress_bar": False})
    finally:
        signals.signal(signals.SIGINT, handler)  # Lightning ignores Ctrl-C after one
    pasted = str(caught.value).split("resume it with: ")[1]
    assert shlex.split(pasted) == ["dlstrat", "fit", "--resume", str(run)]
    from lightning_dlstrat.core import shell_command  # what every printed command goes through

    assert shlex.split(shell_command("dlstrat", "fit", "--genotype", run / "genotype.json")) == ["dlstrat", "fit", "--genotype", str(run / "genotype.json")]


def test_resume_reads_its_checkpoint_once(tmp_path, mlp_run, monkeypatch):
    """run.find_resume reads last.ckpt (weights_only=True) and checks it; Lightning restores from that
    same mapping instead of reading the file again."""
    run = tmp_path / "run"
    shutil.copytree(mlp_run, run)
    reads, real_load = [], torch.load

    def counting_load(f, *args, **kwargs):
        reads.append(str(f if isinstance(f, (str, Path)) else getattr(f, "path", getattr(f, "name", f))))  # a path, or the file Lightning opens
        assert kwargs.get("weights_only") is True
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    result = runner.invoke(app, ["fit", "--resume", str(run), "--max-epochs", "2"])
    assert result.exit_code == 0, result.output
    assert run_dir_of(result.output) == run
    assert reads.count(str(run / "checkpoints" / "last.ckpt")) == 1, reads
    ckpt = real_load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["dlstrat"]["model"] == "mlp"  # it did continue from the checkpoint: a second epoch


def test_the_python_api_resumes_through_the_same_checks(tmp_path, mlp_run):
    from lightning_dlstrat.core import DlstratError
    from lightning_dlstrat.recipes import fit

    with pytest.raises(DlstratError, match="holds a mlp checkpoint, not gan; drop --model or resume a gan run"):
        fit("gan", resume=str(mlp_run))
    (tmp_path / "fresh").mkdir()
    with pytest.raises(DlstratError, match="no checkpoints/last.ckpt in it; .* nothing to resume from"):
        fit("mlp", resume=str(tmp_path / "fresh"))
    with pytest.raises(DlstratError, match="does not exist; give a run directory or one of its checkpoints"):
        fit("mlp", resume=str(tmp_path / "nope"))


def test_test_command_refuses_what_it_cannot_score(tmp_path, mlp_run):
    gan_ckpt = _gan_checkpoint(tmp_path)
    assert_clean_failure(runner.invoke(app, ["test", "--checkpoint", str(gan_ckpt)]), "has no test split to score; draw from it with `dlstrat sample")
    ckpt = torch.load(mlp_run / "checkpoints" / "last.ckpt", weights_only=True)
    for change, message in [({"model": "resnet"}, "unknown model 'resnet'"), ({"data": "imagenet"}, "trained on the dataset 'imagenet'")]:
        bad = tmp_path / f"{next(iter(change.values()))}.ckpt"
        torch.save({**ckpt, "dlstrat": {**ckpt["dlstrat"], **change}}, bad)
        assert_clean_failure(runner.invoke(app, ["test", "--checkpoint", str(bad)]), message)
    mismatched = tmp_path / "mismatch.ckpt"
    torch.save({**ckpt, "state_dict": {k: v[:1] for k, v in ckpt["state_dict"].items()}}, mismatched)
    assert_clean_failure(runner.invoke(app, ["test", "--checkpoint", str(mismatched)]), "does not load into a MLPClassifier")


def test_out_that_cannot_hold_a_run(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_clean_failure(runner.invoke(app, ["fit", "--out", str(a_file), *SHORT]), "cannot create a run directory under --out")
    assert a_file.read_text() == "x"


def test_unexpected_errors_are_one_line_with_debug_for_the_traceback(tmp_path, monkeypatch):
    import lightning_dlstrat.run as run

    def boom(*args, **kwargs):
        raise KeyError("an internal bug")

    monkeypatch.setattr(run, "fit_once", boom)
    result = runner.invoke(app, ["fit", "--out", str(tmp_path), *SHORT])
    assert result.exit_code == 1 and "unexpected KeyError" in result.output and "--debug" in result.output
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())
    result = runner.invoke(app, ["--debug", "fit", "--out", str(tmp_path), *SHORT])
    assert isinstance(result.exception, KeyError)


# --- output that tells the truth --------------------------------------------------------------------------
@pytest.mark.slow
def test_darts_progress_line_and_metric_steps_are_the_current_epochs(tmp_path):
    proc = dlstrat("fit", "--model", "darts", "--max-epochs", "2", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = run_dir_of(proc.stdout)
    history = [json.loads(l) for l in (run_dir / "genotype_history.jsonl").read_text().splitlines()]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("epoch ")]
    assert len(lines) == 2
    for line, record in zip(lines, history):  # the line of epoch e shows epoch e's skip count and lr
        shown = dict(kv.split("=") for kv in line.split() if "=" in kv)
        assert float(shown["arch/normal_skips"]) == sum(op == "skip_connect" for op, _ in record["normal"])
        assert "alpha/normal/e0/none" not in shown  # per-edge weights go to metrics.csv only
    rows = _rows(run_dir)
    val_steps = sorted({int(r["step"]) for r in rows if r.get("val/acc")})
    edge_steps = sorted({int(r["step"]) for r in rows if r.get("alpha/normal/e0/none")})
    assert edge_steps == val_steps == [2, 5]  # Lightning's step axis (batches), for every metric


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux `script` to give the run a terminal")
def test_progress_bar_can_be_turned_off_in_a_terminal(tmp_path):
    """In a TTY the Rich bar is the default; --trainer.enable_progress_bar=false must not clash with it."""
    cmd = f"{sys.executable} -m lightning_dlstrat fit --model mlp --out {tmp_path} --trainer.enable_progress_bar=false " + " ".join(SHORT)
    proc = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "run directory: " in proc.stdout and "Traceback" not in proc.stdout
