"""Whole-process wall time and peak memory of a training run under each supported allocator route.

Usage: ``python scripts/allocator_routes.py [--steps 40] [--rounds 2] [--out routes.json] [-- overrides...]``.

Routes (docs/benchmarks.md, "Allocator routes" and "Huge pages"), each set in the environment the
command starts in, as a user would: plain glibc; glibc's tunables (``GLIBC_TUNABLES``) putting
large blocks on transparent huge pages and keeping freed blocks up to 32 MiB; the same tunables
keeping freed blocks up to 64 MiB without huge pages; and tcmalloc or jemalloc loaded with
``LD_PRELOAD``, as torch's own CPU launcher does (``python -m torch.backends.xeon.run_cpu``); a
route whose library is not installed is skipped. Rounds are interleaved (every route once, then again) so that all routes
see the same phases of a shared machine. Each run is ``iresnet-train experiment=mnist5k_bench``
for ``--steps`` steps without the test; peak memory is the child's ``ru_maxrss`` from ``wait4``.
Prints a markdown table and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
ROUTES = {
    "plain glibc": {},
    "glibc, huge pages, freed blocks up to 32 MiB kept (GLIBC_TUNABLES)": {
        "GLIBC_TUNABLES": f"glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold={32 << 20}"
        f":glibc.malloc.trim_threshold={64 << 20}"
    },
    "glibc, freed blocks up to 64 MiB kept (GLIBC_TUNABLES)": {
        "GLIBC_TUNABLES": f"glibc.malloc.mmap_threshold={64 << 20}:glibc.malloc.trim_threshold={128 << 20}"
    },
    "tcmalloc (LD_PRELOAD)": {"LD_PRELOAD": "libtcmalloc_minimal.so.4"},
    "jemalloc (LD_PRELOAD)": {"LD_PRELOAD": "libjemalloc.so.2"},
}


def find_library(name: str) -> str | None:
    return next((str(Path(d) / name) for d in LIBRARY_DIRS if (Path(d) / name).exists()), None)


def run_once(env_extra: dict[str, str], steps: int, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as log_dir:
        command = ["iresnet-train", "experiment=mnist5k_bench", f"trainer.max_steps={steps}", "test=false",
                   f"paths.log_dir={log_dir}", *extra]  # fmt: skip
        start = time.perf_counter()
        child = subprocess.Popen(command, env={**os.environ, **env_extra}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"error: {' '.join(command)} failed:\n{child.stderr.read().decode()[-2000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="allocator_routes.json")
    parser.add_argument("overrides", nargs="*", help="more iresnet-train overrides (after --)")
    args = parser.parse_args()
    routes = {}
    for name, env in ROUTES.items():
        if "LD_PRELOAD" in env:
            path = find_library(env["LD_PRELOAD"])
            if path is None:
                print(f"skipping {name}: {env['LD_PRELOAD']} is not installed", file=sys.stderr)
                continue
            env = {"LD_PRELOAD": path}
        routes[name] = env
    results = {name: [] for name in routes}
    for round_ in range(args.rounds):
        for name, env in routes.items():
            results[name].append(run_once(env, args.steps, args.overrides))
            print(f"round {round_ + 1}, {name}: {results[name][-1]}", file=sys.stderr)
    report = {"steps": args.steps, "rounds": args.rounds, "overrides": args.overrides, "routes": results}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"| allocator route | wall, s ({args.steps} steps, whole process) | peak RSS, MiB |\n|---|---|---|")
    for name, runs in results.items():
        walls = ", ".join(str(r["wall_s"]) for r in runs)
        peaks = ", ".join(str(r["peak_rss_mib"]) for r in runs)
        print(f"| {name} | {walls} | {peaks} |")


if __name__ == "__main__":
    main()
