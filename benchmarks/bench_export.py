"""Export benchmark: time and memory of decimate -> unwrap -> bake -> GLB, and what the export loses.

    python benchmarks/bench_export.py                         # fast preset; demo, torus, duck
    python benchmarks/bench_export.py --objects demo --work /tmp/bench-export   # keep runs (reused on rerun)
    python benchmarks/bench_export.py --scaling-only          # only the synthetic size sweep

Part 1, per object (own process): render a 21-view SV3D orbit at 256² of the object, reconstruct it with
``run(..., until="refine")`` (reused when --work already holds the run), then export with the default
export config (20k faces, 1024², GLB) and time each step with the process's peak memory growth. The GLB
is reloaded from disk and rendered unlit along 21 held-out views (dynamic orbit, azimuths offset half a
step) next to the refined result before export (albedo field on the full mesh) and the ground truth, all
4x4 supersampled: ``psnr_vs_before`` compares the two renders directly, ``loss_db`` = PSNR(before, truth)
- PSNR(GLB, truth) (the target: at most 0.5 dB). ``loss_db_ss2`` is the same at 2x2 supersampling, where
the silhouette aliasing of the plain supersampled renders (truth, GLB) against the analytically
antialiased render of the refined result adds 0.1-0.4 dB that has nothing to do with the export. The
Khronos validator's error and warning counts are reported when it is installed (``make setup``).

Part 2, scaling: a bumpy sphere with an analytic colour field at 20k..320k input faces, exported to 20k
faces at 1024² and 2048² (and with a normal map), to show how time and memory grow with the input.

Writes benchmarks/results/bench_export_<preset>.json.
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

DEFAULT_OBJECTS = ["demo", "torus", "duck"]


def _export_row(case: str, cfg, verts, faces, color_fn, path: Path) -> dict[str, object]:
    """Export to ``path`` (GLB) timing each step with the peak memory; the validator's counts when installed."""
    from exporters.asset import export_textured
    from exporters.writers import write_asset

    start = time.perf_counter()
    with peak_memory() as mem:
        textured = export_textured(cfg, verts, faces, color_fn)
        t_write = time.perf_counter()
        write_asset(textured, path)
    end = time.perf_counter()
    stats = textured.stats
    errors, warnings = _validator_counts(path)
    return {
        "case": case, "faces_in": stats["faces_in"], "faces": stats["faces"], "tex": stats["texture_size"],
        "unwrap": stats["unwrap_method"], "simplify_s": round(stats["seconds_simplify"], 2),
        "unwrap_s": round(stats["seconds_unwrap"], 2), "bake_s": round(stats["seconds_bake"], 2),
        "write_s": round(end - t_write, 2), "total_s": round(end - start, 2), "peak_mb": round(mem["peak_mb"]),
        "coverage": round(stats["texture_coverage"], 3), "flipped": stats["flipped_faces"],
        "max_dev": round(stats["max_deviation"], 4), "val_err": errors, "val_warn": warnings,
    }


def _validator_counts(path: Path) -> tuple[object, object]:
    from exporters.validate import ValidatorUnavailable, validate_glb

    try:
        issues = validate_glb(path)["issues"]
    except ValidatorUnavailable:
        return None, None
    return issues["numErrors"], issues["numWarnings"]


def run_object(name: str, preset: str, overrides: list[str], size: int, work: Path) -> dict[str, object]:
    import torch

    from recon.config import load_config
    from recon.eval.metrics import EvalConfig, heldout_cameras, psnr
    from recon.pipeline import run
    from recon.refine.render import render_asset
    from recon.render.mesh import load_render_mesh
    from recon.render.views import render_views

    cfg = load_config(preset, overrides)
    orbit_dir = object_orbit(name, work, size)
    result = run(cfg, orbit_dir, work / "run", until="refine")
    asset = result.refined
    glb = work / "asset.glb"
    row = _export_row(name, cfg.export, asset.mesh.verts.numpy(), asset.mesh.faces.numpy(),
                      lambda p: asset.albedo.query(p), glb)
    cams = heldout_cameras(EvalConfig(view_size=256))
    with torch.no_grad():
        renders = {}
        for ss in (2, 4):
            truth, _ = render_views(load_render_mesh(orbit_dir / "ground_truth.glb"), cams, supersample=ss)
            before = render_asset(asset, cams, shaded=False, supersample=ss)["rgb"]
            after, _ = render_views(load_render_mesh(glb), cams, supersample=ss)
            renders[ss] = (truth, before, after)
    truth, before, after = renders[4]
    p_before, p_after = psnr(before, truth), psnr(after, truth)
    truth2, before2, after2 = renders[2]
    row.update({
        "psnr_vs_before": round(psnr(after, before), 2),
        "psnr_before_gt": round(p_before, 2),
        "psnr_glb_gt": round(p_after, 2),
        "loss_db": round(p_before - p_after, 2),
        "loss_db_ss2": round(psnr(before2, truth2) - psnr(after2, truth2), 2),
    })
    return row


def _bumpy_sphere(faces_wanted: int):
    import numpy as np
    import trimesh

    level = int(round(np.log(faces_wanted / 20) / np.log(4)))
    m = trimesh.creation.icosphere(level, radius=0.4)
    v = np.asarray(m.vertices)
    r = 0.4 + 0.012 * np.sin(12 * v[:, 0] / 0.4) * np.sin(12 * v[:, 1] / 0.4) * np.cos(7 * v[:, 2] / 0.4)
    return v / np.linalg.norm(v, axis=1, keepdims=True) * r[:, None], np.asarray(m.faces)


def run_scaling(faces_in: int, texture: int, normal_map: bool, work: Path) -> dict[str, object]:
    import torch

    from exporters.config import ExportConfig

    def color(p: torch.Tensor) -> torch.Tensor:
        return torch.stack([0.5 + 0.4 * torch.sin(20 * p[:, 0]), 0.5 + 0.4 * torch.cos(17 * p[:, 1]),
                            0.5 + 0.4 * torch.sin(13 * p[:, 2])], dim=1)

    verts, faces = _bumpy_sphere(faces_in)
    cfg = ExportConfig(texture_size=texture, normal_map=normal_map)
    glb = work / f"sphere_{faces_in}_{texture}_{int(normal_map)}.glb"
    return _export_row(f"bumpy sphere{' +normal map' if normal_map else ''}", cfg, verts, faces, color, glb)


SCALING = [(20480, 1024, False), (81920, 1024, False), (327680, 1024, False), (81920, 2048, False),
           (81920, 1024, True)]
COLUMNS = ["case", "faces_in", "faces", "tex", "unwrap", "simplify_s", "unwrap_s", "bake_s", "write_s", "total_s",
           "peak_mb", "coverage", "flipped", "max_dev", "psnr_vs_before", "psnr_before_gt", "psnr_glb_gt", "loss_db",
           "loss_db_ss2", "val_err", "val_warn"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--objects", nargs="*", default=DEFAULT_OBJECTS)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", type=Path, default=None, help="keep run folders here (reused on rerun)")
    parser.add_argument("--scaling-only", action="store_true", help="skip the reconstructed objects")
    add_out_argument(parser)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # one case in this process
    args = parser.parse_args()
    if args.one:
        if args.one.startswith("scaling:"):
            f, t, n = args.one.split(":")[1:]
            row = run_scaling(int(f), int(t), n == "1", args.work)
        else:
            row = run_object(args.one, args.preset, args.overrides, args.size, args.work / args.one)
        print(json.dumps(row))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cases = [] if args.scaling_only else list(args.objects)
        cases += [f"scaling:{f}:{t}:{int(n)}" for f, t, n in SCALING]
        for case in cases:
            cmd = [sys.executable, __file__, "--one", case, "--preset", args.preset, "--size", str(args.size),
                   "--work", str(work)]
            rows.append(json.loads(run_isolated(cmd, f"case {case}", args.overrides)))
            print(f"  {case}: {rows[-1]}", file=sys.stderr)
    print_table(rows, COLUMNS)
    payload = {"machine": machine_info(), "preset": args.preset, "overrides": args.overrides, "size": args.size,
               "rows": rows}
    print(f"\nwrote {write_json(f'bench_export_{Path(args.preset).stem}', payload, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
