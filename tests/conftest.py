"""Shared test settings: quiet Lightning, CPU only, runs written under tmp_path."""

import logging
import warnings

import pytest

logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning.fabric").setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        yield


# --- helpers shared by the test files (import them: `from conftest import ...`) --------------------
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_dir_of(output: str) -> Path:
    """The run directory a `dlstrat fit` printed."""
    line = [l for l in output.splitlines() if l.startswith("run directory: ")][-1]
    return Path(line.removeprefix("run directory: "))


def dlstrat(*args: str, env: dict | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """The CLI in a real process (`python -m lightning_dlstrat`), as a user's shell runs it.

    One OpenMP thread per process: with several processes on a small machine (DDP ranks, or other
    tests), spinning OpenMP threads made a 10-second run take minutes (docs/gan.md, Threads).
    """
    return subprocess.run(
        [sys.executable, "-m", "lightning_dlstrat", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kwargs,
    )


def assert_clean_failure(result, message: str, out: Path | None = None) -> None:
    """Bad input: exit 2, the message in one paragraph, no traceback, and no run directory left behind."""
    output = result.output if hasattr(result, "output") else result.stdout + result.stderr
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert code == 2, output
    assert message in " ".join(output.split()), output
    assert "Traceback" not in output
    assert len([l for l in output.strip().splitlines() if l.startswith("Error: ")]) == 1
    if out is not None and out.exists():
        assert not [p for p in out.rglob("*") if p.is_dir() and "-" in p.name], list(out.rglob("*"))
