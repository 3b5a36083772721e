"""Refinement benchmark: coarse vs refined on the benchmark objects.

    python benchmarks/bench_refine.py                       # fast preset, default objects
    python benchmarks/bench_refine.py --preset default      # the SV3D recipe (grid 128, 1000 steps)
    python benchmarks/bench_refine.py --objects torus duck --set refine.steps=300
    python benchmarks/bench_refine.py --work /tmp/bench-refine   # keep run folders (coarse reused on rerun)

Each object (in its own process): render a 21-view SV3D static orbit at 256² (--size; RGB on white, or
RGBA with --alpha, which white objects need: cow, airplane, soccerball) with render-orbit, run
``fit --until refine``, then score the coarse mesh and the refined one against the
normalised ground truth (both normalised, GSO protocol): Chamfer (area), IoU 64³, F-score@0.02, and the
median angle between the surface normals and the truth's at nearest points (bumps the distances barely see),
and PSNR on 21 held-out views of a dynamic orbit (elevation 10±20°, azimuths offset half a step) of
(a) the coarse mesh's vertex colours, (b) the refined albedo field (unlit: what gets baked) and (c) the
refined asset shaded by its fitted light, each against unlit ground-truth renders, in the world frame.
Reports refinement time and peak memory (resident growth of the whole run: data + coarse + refine), and
genus (Euler characteristic) of the coarse and refined meshes. Writes
benchmarks/results/bench_refine_<preset>.json.
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
from _objects import object_orbit

DEFAULT_OBJECTS = ["sphere", "torus", "union", "demo", "duck", "bunny", "box"]


def run_object(name: str, preset: str, overrides: list[str], size: int, work: Path,
               alpha: bool = False) -> dict[str, object]:
    import torch

    from recon.config import load_config
    from recon.eval.metrics import EvalConfig, evaluate_meshes, heldout_cameras, mesh_genus, psnr
    from recon.pipeline import run
    from recon.previews import vertex_colored
    from recon.refine.render import render_asset
    from recon.render.mesh import from_trimesh, load_render_mesh
    from recon.render.views import render_views

    cfg = load_config(preset, overrides)
    orbit_dir = object_orbit(name, work, size, alpha)
    run_dir = work / ("run_rgba" if alpha else "run")
    gt = load_render_mesh(orbit_dir / "ground_truth.glb")
    run(cfg, orbit_dir, run_dir, until="coarse")  # reused when the run folder already has it
    start = time.perf_counter()
    with peak_memory() as mem:
        result = run(cfg, orbit_dir, run_dir, until="refine")
    seconds = time.perf_counter() - start
    refine = result.metrics["refine"]
    ecfg = EvalConfig(views=0)
    coarse_m = evaluate_meshes(from_trimesh(result.coarse_mesh.to_trimesh()), gt, ecfg)
    refined_m = evaluate_meshes(from_trimesh(result.refined.mesh.to_trimesh()), gt, ecfg)
    cams = heldout_cameras(EvalConfig(view_size=256))
    truth, _ = render_views(gt, cams, supersample=2)
    coarse_img, _ = render_views(vertex_colored(result.coarse_mesh, result.coarse_mesh.colors), cams, supersample=2)
    albedo_img = render_asset(result.refined, cams, shaded=False)["rgb"]
    shaded_img = render_asset(result.refined, cams, shaded=True)["rgb"]
    with torch.no_grad():
        ps = {"coarse": psnr(coarse_img, truth), "albedo": psnr(albedo_img, truth), "shaded": psnr(shaded_img, truth)}
    cm, rm = result.coarse_mesh, result.refined.mesh
    return {
        "object": name,
        "refine_s": round(refine["seconds"] + refine.get("init_seconds", 0.0), 1),
        "run_s": round(seconds, 1),
        "peak_mb": round(mem["peak_mb"]),
        "chamfer_coarse": round(coarse_m["chamfer_area"], 4),
        "chamfer": round(refined_m["chamfer_area"], 4),
        "iou_coarse": round(coarse_m["iou"], 3),
        "iou": round(refined_m["iou"], 3),
        "f@0.02_coarse": round(coarse_m["fscore@0.02"], 3),
        "f@0.02": round(refined_m["fscore@0.02"], 3),
        "normal_deg_coarse": round(coarse_m["normal_angle_median"], 1),
        "normal_deg": round(refined_m["normal_angle_median"], 1),
        "psnr_coarse": round(ps["coarse"], 2),
        "psnr_albedo": round(ps["albedo"], 2),
        "psnr_shaded": round(ps["shaded"], 2),
        "faces": int(rm.faces.shape[0]),
        "genus_coarse": mesh_genus(cm.verts.numpy(), cm.faces.numpy()),
        "genus": mesh_genus(rm.verts.numpy(), rm.faces.numpy()),
        "band_fraction": round(refine["band_fraction"], 4),
    }


COLUMNS = ["object", "refine_s", "peak_mb", "chamfer_coarse", "chamfer", "iou_coarse", "iou", "f@0.02_coarse",
           "f@0.02", "normal_deg_coarse", "normal_deg", "psnr_coarse", "psnr_albedo", "psnr_shaded", "faces",
           "genus_coarse", "genus"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--objects", nargs="+", default=DEFAULT_OBJECTS)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", type=Path, default=None, help="keep run folders here (coarse results reused)")
    parser.add_argument("--alpha", action="store_true",
                        help="RGBA orbits, masks from alpha (white objects: cow, airplane, soccerball)")
    add_out_argument(parser)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # run one object in this process
    args = parser.parse_args()
    if args.one:
        work = args.work / args.one
        print(json.dumps(run_object(args.one, args.preset, args.overrides, args.size, work, args.alpha)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-refine-") as tmp:
        work = args.work or Path(tmp)
        for name in args.objects:
            cmd = [sys.executable, __file__, "--one", name, "--preset", args.preset, "--size", str(args.size),
                   "--work", str(work)] + (["--alpha"] if args.alpha else [])
            rows.append(json.loads(run_isolated(cmd, f"object {name}", args.overrides)))
            print(f"  {name}: {rows[-1]}", file=sys.stderr)
    mean: dict[str, object] = {"object": "MEAN"}
    for key in COLUMNS[1:]:
        vals = [r[key] for r in rows if isinstance(r[key], (int, float))]
        if vals and not key.startswith("genus"):
            mean[key] = round(sum(vals) / len(vals), 4)
    rows.append(mean)
    print_table(rows, COLUMNS)
    payload = {"machine": machine_info(), "preset": args.preset, "overrides": args.overrides, "size": args.size,
               "alpha": args.alpha, "rows": rows}
    print(f"\nwrote {write_json(f'bench_refine_{Path(args.preset).stem}', payload, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
