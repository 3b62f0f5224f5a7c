"""Follow the README as written: run every command of its ```bash blocks, in order, timed.

    git clone REPO /work/readme-clone   # a sibling of ../shared, so the data resolves
    python3 benchmarks/readme_walk.py --repo /work/readme-clone --out readme-walk.json

Each command is the README's text (continuation lines joined, comments dropped), run with
`bash -c` in the clone; after the quick start's first block the commands run with
`.venv/bin` first on PATH, as the README says ("Every later command assumes the virtual
environment"). Commands naming placeholders (`path/to/`, `BUNDLE`, `KEY`) are listed as
not runnable, sections given with `--skip-section` (default: "Measuring", the benchmark
list) are left out. For each command: wall time, exit code, the load average before and
after (the machine may be shared) and the last lines of its output, into a JSON file and a
Markdown table. `--lock FILE` takes an flock around each command so other heavy jobs can
wait their turn.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

PLACEHOLDERS = re.compile(r"path/to/|\bBUNDLE\b|\bKEY\b|mine\.npz")


def commands(readme: str, skip_sections: set[str]) -> list[tuple[str, str]]:
    """(section, command) for every command line of every ```bash block, in order."""
    out, section, in_block, pending = [], "", False, ""
    for line in readme.splitlines():
        if not in_block and line.startswith("#"):
            section = line.lstrip("#").strip()
        if line.strip().startswith("```"):
            in_block = line.strip() == "```bash" and not in_block
            continue
        if not in_block or any(section.startswith(s) for s in skip_sections):
            continue
        text = line.rstrip()
        if not pending and (not text.strip() or text.lstrip().startswith("#")):
            continue
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        cmd = re.sub(r"\s+#\s.*$", "", pending + text.strip()).strip()
        pending = ""
        out.append((section, cmd))
    return out


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_one(cmd: str, repo: Path, env: dict[str, str], lock: Path | None) -> dict:
    fd = os.open(lock, os.O_CREAT | os.O_RDWR) if lock else None
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        before, t0 = loadavg(), time.perf_counter()
        r = subprocess.run(["bash", "-c", cmd], cwd=repo, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, errors="replace")
        wall = time.perf_counter() - t0
        return {"rc": r.returncode, "wall_s": round(wall, 1), "load_before": before,
                "load_after": loadavg(), "tail": r.stdout.replace("\r", "\n")[-3000:]}
    finally:
        if fd is not None:
            os.close(fd)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repo", type=Path, required=True, help="the fresh clone to run in")
    p.add_argument("--out", type=Path, default=Path("readme-walk.json"), help="JSON to write")
    p.add_argument("--skip-section", action="append", default=["Measuring"],
                   help="README section (heading prefix) to leave out; repeatable")
    p.add_argument("--only-section", action="append", default=None,
                   help="run only these sections (heading prefix); repeatable")
    p.add_argument("--lock", type=Path, default=None, help="flock file taken around each command")
    p.add_argument("--list", action="store_true", help="print the commands and stop")
    a = p.parse_args()
    repo = a.repo.resolve()
    cmds = commands((repo / "README.md").read_text(), set(a.skip_section))
    if a.only_section:
        cmds = [(s, c) for s, c in cmds if any(s.startswith(o) for o in a.only_section)]
    if a.list:
        for s, c in cmds:
            print(f"[{s}] {c}")
        return 0
    env = {**os.environ, "PATH": f"{repo / '.venv/bin'}:{os.environ['PATH']}",
           "VIRTUAL_ENV": str(repo / ".venv")}
    rows: list[dict] = []
    for section, cmd in cmds:
        if PLACEHOLDERS.search(cmd):
            rows.append({"section": section, "cmd": cmd, "rc": None, "note": "placeholder"})
        else:
            print(f"$ {cmd}", file=sys.stderr, flush=True)
            rows.append({"section": section, "cmd": cmd, **run_one(cmd, repo, env, a.lock)})
            print(f"  rc {rows[-1]['rc']}, {rows[-1]['wall_s']} s, load "
                  f"{rows[-1]['load_before']} -> {rows[-1]['load_after']}", file=sys.stderr,
                  flush=True)
        a.out.write_text(json.dumps(rows, indent=1))
    md = ["| section | command | rc | wall s | load before → after |", "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['section'][:30]} | `{r['cmd'][:90]}` | {r['rc']} | "
                  f"{r.get('wall_s', '')} | {r.get('load_before', '')} → {r.get('load_after', '')} |")
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
