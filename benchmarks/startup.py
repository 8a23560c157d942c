"""Start-up time of the CLI: `dlstrat --version`, `dlstrat --help` and `import lightning_dlstrat`.

Each command runs as a fresh process (that is what a user waits for), alternating with a bare
`python -c pass` so that a busy machine slows both alike; the script prints each command's
median wall time and its median excess over the bare interpreter, pair by pair.

    python benchmarks/startup.py --repeats 10
    python benchmarks/startup.py --against /path/to/old/checkout   # A B A B against another version

With ``--against``, each command alternates between this checkout and the other one (run from
source with PYTHONPATH), and the per-pair ratio old / new is printed instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "dlstrat --version": [sys.executable, "-m", "lightning_dlstrat", "--version"],
    "dlstrat --help": [sys.executable, "-m", "lightning_dlstrat", "--help"],
    "import lightning_dlstrat": [sys.executable, "-c", "import lightning_dlstrat"],
    "import lightning_dlstrat, timm (registers darts_net)": [sys.executable, "-c", "import lightning_dlstrat, timm; assert 'darts_net' in timm.list_models('darts*')"],
}
BARE = [sys.executable, "-c", "pass"]


def wall(cmd: list[str], root: str | None = None) -> float:
    env = {**os.environ, "PYTHONPATH": root} if root else None
    start = time.perf_counter()
    # cwd=root too: `python -m` / `-c` put the working directory first on sys.path
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=root)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--against", help="another checkout to compare with, alternating A B A B")
    args = parser.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    for name, cmd in COMMANDS.items():
        if args.against:
            wall(cmd, here), wall(cmd, args.against)  # warm the file cache
            new, old = [], []
            for _ in range(args.repeats):
                new.append(wall(cmd, here))
                old.append(wall(cmd, args.against))
            ratios = [o / n for o, n in zip(old, new)]
            print(f"{name:55s} this {statistics.median(new):.3f} s, other {statistics.median(old):.3f} s; other / this per pair: median {statistics.median(ratios):.1f}x (min {min(ratios):.1f}, max {max(ratios):.1f})")
            continue
        wall(cmd)  # warm the file cache
        times, excess = [], []
        for _ in range(args.repeats):  # A B A B: the command, then the bare interpreter
            t, b = wall(cmd), wall(BARE)
            times.append(t)
            excess.append(t - b)
        print(f"{name:55s} median {statistics.median(times):.3f} s  (over bare python: median {statistics.median(excess):.3f} s, min {min(excess):.3f}, max {max(excess):.3f})")


if __name__ == "__main__":
    main()
