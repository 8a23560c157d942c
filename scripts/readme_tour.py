"""Run the README's commands top to bottom, as written, and report what each did.

Every line of the README's ```bash blocks that starts with a command of this package (``dlstrat``,
``python -m lightning_dlstrat``, ``pip install``) runs through ``bash -c`` in the working directory,
in order, so later lines find the runs earlier ones made (``runs/NAME-latest``). Three kinds of line
cannot run as written on a machine without a Hub account or a database, and are changed or left out,
each said in the report:

- ``ORG/...`` repo ids go to a Hub-compatible server started for the tour (``dlstrat hub serve``),
  with ``HF_ENDPOINT`` / ``HF_TOKEN`` exported, as docs/zoo.md's offline walk-through does;
- ``postgresql://db/...`` becomes ``--postgres URL`` when given (``source .ci/postgres.sh`` makes one),
  else the line is left out;
- ``dlstrat hub serve`` serves until stopped: it runs for 20 s and must print the endpoint;
- ``dlstrat zoo pull NAME`` reads the Hub: NAME is first published to the local Hub under the zoo's
  repo id (``dlstrat zoo publish``), as the Hub holds it;
- lines with ``...`` are templates (torchrun) and the test command (``python -m pytest``) is CI's: left out.

Usage, on a fresh clone in a fresh virtual environment (the README's promise):
    python -m venv /tmp/tour && . /tmp/tour/bin/activate && cd CLONE
    python scripts/readme_tour.py --report tour.md [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

STARTS = ("dlstrat ", "python -m lightning_dlstrat", "pip install ")


def commands(readme: str) -> list[str]:
    """The README's command lines, in order."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        lines += [line.strip() for line in block.splitlines() if line.strip().startswith(STARTS)]
    return lines


def hub_server() -> tuple[subprocess.Popen, dict[str, str]]:
    """``dlstrat hub serve --port 0`` in the background; the environment it prints."""
    proc = subprocess.Popen(["dlstrat", "hub", "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # "  export HF_ENDPOINT=... HF_TOKEN=... ..."
        if line.strip().startswith("export "):
            return proc, dict(item.split("=", 1) for item in line.split()[1:])
    raise SystemExit(f"dlstrat hub serve printed no environment (exit code {proc.wait()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--report", default="tour.md", help="markdown table of every command: exit code, seconds, its last line")
    parser.add_argument("--postgres", help="a PostgreSQL URL to use for the README's postgresql://db/... study")
    parser.add_argument("--from-line", type=int, default=0, help="start at the N-th command (0: the first)")
    args = parser.parse_args()

    server, hub_env = hub_server()
    env = {**os.environ, **hub_env}
    rows, failed = [], 0
    try:
        for i, line in enumerate(commands(Path(args.readme).read_text())):
            if i < args.from_line:
                continue
            run, note, timeout = line, "", 3600
            template = "..." in line.split(" #")[0]  # a command with `...` in it, not in its comment
            if template or line.startswith("pip install \".[test]\""):
                rows.append((i, line, "left out", "", "a template (`...`)" if template else "the test command: CI runs it"))
                continue
            if "postgresql://db/" in line:
                if not args.postgres:
                    rows.append((i, line, "left out", "", "needs a PostgreSQL server: pass --postgres URL"))
                    continue
                run = re.sub(r"postgresql://db/\S+", args.postgres, line)
                note = "database: --postgres"
            if "ORG/" in line:
                run, note = line.replace("ORG/", "tour/"), "to the tour's local Hub (dlstrat hub serve)"
            if line.startswith("dlstrat hub serve"):
                run, note, timeout = re.sub(r"--port \d+", "--port 0", line), "ran 20 s (it serves until stopped)", 20
            for name in re.findall(r"zoo pull (\S+)", line.split(" #")[0]):  # the local Hub holds the zoo's models as the Hub does
                subprocess.run(["dlstrat", "zoo", "publish", name, "--repo-id", f"lightning-dlstrat/{name}"], env=env, capture_output=True, check=True)
                note = f"{name} published to the tour's local Hub first, as the Hub holds it"
            print(f"[{i}] {run}", flush=True)
            started = time.time()
            try:
                proc = subprocess.run(["bash", "-c", run], env=env, capture_output=True, text=True, timeout=timeout)
                code, out = proc.returncode, (proc.stdout if proc.stdout.strip() and proc.returncode == 0 else proc.stdout + proc.stderr)
            except subprocess.TimeoutExpired as stopped:
                out = (stopped.stdout or b"").decode() if isinstance(stopped.stdout, bytes) else (stopped.stdout or "")
                code = 0 if timeout == 20 and "HF_ENDPOINT=" in out else "timeout"
            seconds = time.time() - started
            last = next((x for x in reversed(out.strip().splitlines()) if x.strip()), "")
            failed += code != 0
            rows.append((i, line, code, f"{seconds:.0f}", note + ("; " if note else "") + last[:160]))
            print(f"    exit {code} in {seconds:.0f} s: {last[:200]}", flush=True)
            if code != 0:
                print(out[-3000:], flush=True)
    finally:
        server.terminate()
    with open(args.report, "w") as f:
        f.write("| # | command | exit | s | note / last line |\n|---|---|---|---|---|\n")
        for i, line, code, seconds, note in rows:
            f.write(f"| {i} | `{line.split('  #')[0].strip()}` | {code} | {seconds} | {note.replace('|', '/')} |\n")
    print(f"{len(rows)} commands, {failed} failed; report: {args.report}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
