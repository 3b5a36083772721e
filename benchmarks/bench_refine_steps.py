"""Refinement step time: settings compared back to back on one coarse mesh, without a whole run each.

    python benchmarks/bench_refine_steps.py W/sphere/orbit W/sphere/run/coarse.ply \\
        --case before:refine.views_per_step=8,refine.pixels_per_step=16384 --case after: --rounds 2

Each case (a name, then overrides of the preset, comma-separated; none for the preset itself) runs
``fit_refined`` from the coarse mesh (for example a ``bench_refine.py --work W`` run folder's
``coarse.ply``) in its own process and stops at the last step of ``--windows``; the cases alternate for ``--rounds``
rounds, so a machine whose speed drifts slows them alike. Reports, per case and round, wall and CPU
(user + system, all threads) milliseconds per step over two windows: after the offset-grid phase in the
first resolution phase (steps 160-300 by default) and the start of the second (300-360): the default
preset's 1000 steps take ~70% of their time in the second and third phases, whose steps cost the same at
a 256² input. CPU time counts only this process's work, so time stolen by other processes (a shared or
virtual machine) does not inflate it as it does the wall time. Writes benchmarks/results/bench_refine_steps.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# isort: off
import recon  # noqa: F401  (sets thread counts before torch and numba load)
# isort: on

from _common import add_out_argument, machine_info, print_table, run_isolated, write_json


def _fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2."""
    print(f"bench_refine_steps: {message}", file=sys.stderr)
    raise SystemExit(2)


COLUMNS = ["case", "round", "wall_ms_a", "wall_ms_b", "cpu_ms_a", "cpu_ms_b", "faces"]


def run_case(orbit_dir: Path, coarse_path: Path, preset: str, overrides: list[str], windows: list[int]) -> dict:
    """Time one refinement's steps in this process: wall and CPU ms per step over the two windows."""
    import resource
    import time

    from recon.config import load_config
    from recon.data.orbit import load_orbit
    from recon.refine.train import fit_refined
    from recon.types import Mesh

    cfg = load_config(preset, overrides)
    orbit = load_orbit(orbit_dir, cfg.data)
    coarse = Mesh.load(coarse_path)
    a, b, c = windows
    marks: dict[int, tuple[float, float]] = {}
    faces: list[int] = []

    class _Stop(Exception):
        pass

    def hook(ctx):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        marks[ctx.step] = (time.perf_counter(), usage.ru_utime + usage.ru_stime)
        faces.append(int(ctx.faces.shape[0]))
        if ctx.step == c:
            raise _Stop
        return None

    try:
        fit_refined(cfg.refine, orbit, coarse, seed=cfg.seed, progress=False,
                    centred_object=cfg.extract.centred_object, extra_losses=[hook])
    except _Stop:
        pass
    if c not in marks:
        _fail(f"the refinement ended before step {c}: lower STOP in --windows")

    def per_step(lo: int, hi: int, k: int) -> float:
        return round((marks[hi][k] - marks[lo][k]) / (hi - lo) * 1000.0, 1)

    return {"wall_ms_a": per_step(a, b, 0), "wall_ms_b": per_step(b, c, 0), "cpu_ms_a": per_step(a, b, 1),
            "cpu_ms_b": per_step(b, c, 1), "faces": faces[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("orbit", type=Path, help="the orbit folder")
    parser.add_argument("coarse", type=Path, help="the coarse mesh (a run folder's coarse.ply)")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--case", dest="cases", action="append", default=[], metavar="NAME:KEY=VAL,...",
                        help="a setting to time (repeatable; 'NAME:' alone is the preset)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--windows", type=int, nargs=3, default=[160, 300, 360], metavar=("A", "B", "STOP"),
                        help="steps A-B and B-STOP are timed; the run stops at STOP")
    add_out_argument(parser)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # JSON overrides: one case here
    args = parser.parse_args()
    for path in (args.orbit, args.coarse):
        if not path.exists():
            _fail(f"{path}: not found")
    if not (args.windows[0] < args.windows[1] < args.windows[2]):
        _fail(f"--windows {args.windows}: need A < B < STOP")
    if args.one is not None:
        print(json.dumps(run_case(args.orbit, args.coarse, args.preset, json.loads(args.one), args.windows)))
        return 0
    cases = []
    for spec in args.cases or ["preset:"]:
        name, _, sets = spec.partition(":")
        cases.append((name, [s for s in sets.split(",") if s]))
    rows = []
    for rnd in range(1, args.rounds + 1):
        for name, overrides in cases:
            cmd = [sys.executable, __file__, str(args.orbit), str(args.coarse), "--preset", args.preset,
                   "--windows", *map(str, args.windows), "--one", json.dumps(overrides)]
            rows.append({"case": name, "round": rnd, **json.loads(run_isolated(cmd, f"case {name}"))})
            print(f"  {name} round {rnd}: {rows[-1]}", file=sys.stderr)
    print_table(rows, COLUMNS)
    payload = {"machine": machine_info(), "preset": args.preset, "orbit": str(args.orbit),
               "coarse": str(args.coarse), "windows": args.windows,
               "cases": {name: overrides for name, overrides in cases}, "rows": rows}
    print(f"\nwrote {write_json('bench_refine_steps', payload, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
