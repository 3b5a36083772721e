"""Lighting separation: is the fitted albedo free of the light it was seen under?

    python benchmarks/bench_lighting.py                    # fast preset; demo object and duck
    python benchmarks/bench_lighting.py --objects toy --preset default

For each object, two 21-view SV3D orbits are rendered at 256²: unlit (albedo) and lit by a known white
directional light plus ambient (``render-orbit --lit``: direction (0.4, 0.8, 0.45), ambient 0.35,
Lambertian). ``--shading linear`` (default) applies the light in linear RGB, as a physically based
renderer does; ``--shading srgb`` multiplies the sRGB colour, a harder, unphysical case (its shadows are
~s^2.2 in linear terms, which no light's irradiance is). Both orbits are fitted with
``fit --until refine``. On 21 held-out views (dynamic orbit) where all renders cover the object, we report:

- ``sep_psnr``: PSNR between the albedo fitted from the lit orbit (after one global least-squares scale)
  and the albedo fitted from the unlit orbit. Target: within 2 dB of ``unlit_psnr``, the unlit fit's own
  PSNR against the ground truth, i.e. ``gap = unlit_psnr - lit_psnr`` <= 2 dB where ``lit_psnr`` is the
  scaled lit-fit albedo against the ground truth.
- ``painted_psnr``: the same PSNR if the lit fit had painted its input's shading into the texture (the
  lit ground-truth renders, scaled, against the unlit ones): what separation has to beat.
- ``shading_corr``: correlation, over covered pixels, between log(lit-fit albedo / unlit-fit albedo)
  luminance and log of the true shading (ambient + (1 - ambient) max(0, n.l)). Painted-in shading gives
  ~1; a separated albedo gives ~0.
Each fit runs in its own process. Writes benchmarks/results/bench_lighting_<preset>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

# isort: off
import recon  # noqa: F401  (sets thread counts before torch and numba load)
# isort: on

from _common import add_out_argument, machine_info, print_table, run_isolated, write_json
from _objects import object_mesh

NORMALS = "crease 30"
"""How the lit orbits' shading normals are made (``render_mesh_orbit``); a work folder's lit orbit made
otherwise is rendered again."""


def _fit(name: str, lit: str | None, preset: str, overrides: list[str], size: int, work: Path) -> None:
    from recon.config import load_config
    from recon.pipeline import run
    from recon.render.orbit import render_mesh_orbit

    cfg = load_config(preset, overrides)
    orbit_dir = work / (f"lit_{lit}" if lit else "unlit") / "orbit"
    # Lit orbits rendered before shading used creased normals (smooth vertex normals) are rendered again.
    marker = orbit_dir.parent / "normals.txt"
    stale = lit is not None and (not marker.is_file() or marker.read_text().strip() != NORMALS)
    if stale or not (orbit_dir / "ground_truth.glb").is_file():
        shutil.rmtree(orbit_dir.parent / "run", ignore_errors=True)  # its results were fitted to the old one
        render_mesh_orbit(object_mesh(name, work / "src"), orbit_dir, size=size, supersample=2, lit=lit)
        marker.write_text(NORMALS + "\n")
    run(cfg, orbit_dir, orbit_dir.parent / "run", until="refine")


def _masked_psnr(a, b, mask) -> float:
    mse = float(((a - b) ** 2)[mask].mean())
    return -10 * math.log10(max(mse, 1e-12))


def _score(name: str, shading: str, preset: str, overrides: list[str], work: Path) -> dict[str, object]:
    import torch

    from recon.config import load_config
    from recon.eval.metrics import EvalConfig, heldout_cameras
    from recon.pipeline import run
    from recon.refine.render import render_asset
    from recon.render.mesh import load_render_mesh
    from recon.render.views import render_views, shading_normals
    from recon.shading.soft_light import SoftLight

    cfg = load_config(preset, overrides)
    assets = {}
    for kind, folder in (("unlit", "unlit"), ("lit", f"lit_{shading}")):
        orbit_dir = work / folder / "orbit"
        assets[kind] = run(cfg, orbit_dir, orbit_dir.parent / "run", until="refine").refined  # reused
    gt = load_render_mesh(work / "unlit" / "orbit" / "ground_truth.glb")
    cams = heldout_cameras(EvalConfig(view_size=256))
    light = SoftLight(space=shading)
    truth, t_alpha = render_views(gt, cams, supersample=2)
    truth_lit, _ = render_views(gt, cams, supersample=2, light=light, crease_deg=30.0)
    unlit = render_asset(assets["unlit"], cams)
    lit = render_asset(assets["lit"], cams)
    mask = (unlit["alpha"] > 0.99) & (lit["alpha"] > 0.99) & (t_alpha > 0.99)
    mask3 = mask[..., None].expand(-1, -1, -1, 3)

    def scaled(x, ref):
        s = float((x[mask3] * ref[mask3]).sum() / (x[mask3] ** 2).sum().clamp(min=1e-12))
        return (x * s).clamp(0, 1), s

    lit_scaled, scale = scaled(lit["rgb"], unlit["rgb"])
    lit_vs_gt, _ = scaled(lit["rgb"], truth)
    painted, _ = scaled(truth_lit, truth)
    # True shading at each pixel from the ground truth's normals.
    normals, normal_tri = shading_normals(gt.verts, gt.faces, 30.0)  # as the lit orbit was shaded
    with torch.no_grad():
        from recon.render import interpolate, rasterize
        from recon.render.views import clip_positions

        pos = clip_positions(gt.verts, cams)
        rast = rasterize(pos, gt.faces.int(), (cams.height, cams.width))
        n = torch.nn.functional.normalize(interpolate(normals, rast, normal_tri.int()), dim=-1)
        shade = light.factor(n)
    lum = torch.tensor([0.2126, 0.7152, 0.0722])
    ratio = torch.log((lit_scaled @ lum).clamp(min=1e-3) / (unlit["rgb"] @ lum).clamp(min=1e-3))
    painted_ratio = torch.log((painted @ lum).clamp(min=1e-3) / (truth @ lum).clamp(min=1e-3))
    log_shade = torch.log(shade.clamp(min=1e-3))

    def corr(a, b) -> float:
        a, b = a[mask], b[mask]
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()).clamp(min=1e-12))

    unlit_psnr = _masked_psnr(unlit["rgb"], truth, mask3)
    lit_psnr = _masked_psnr(lit_vs_gt, truth, mask3)
    return {
        "object": name,
        "unlit_psnr": round(unlit_psnr, 2),
        "lit_psnr": round(lit_psnr, 2),
        "gap_db": round(unlit_psnr - lit_psnr, 2),
        "sep_psnr": round(_masked_psnr(lit_scaled, unlit["rgb"], mask3), 2),
        "painted_psnr": round(_masked_psnr(painted, truth, mask3), 2),
        "shading_corr": round(corr(ratio, log_shade), 3),
        "painted_corr": round(corr(painted_ratio, log_shade), 3),
        "scale": round(scale, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--objects", nargs="+", default=["demo", "duck"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--shading", choices=["linear", "srgb"], default="linear",
                        help="where the test light multiplies the colour (see above)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", type=Path, default=None, help="keep run folders here (fits reused on rerun)")
    add_out_argument(parser)
    parser.add_argument("--step", nargs=2, default=None, help=argparse.SUPPRESS)  # NAME fit-lit|fit-unlit|score
    args = parser.parse_args()
    if args.step:
        name, what = args.step
        work = args.work / name
        if what == "score":
            print(json.dumps(_score(name, args.shading, args.preset, args.overrides, work)))
        else:
            _fit(name, args.shading if what == "fit-lit" else None, args.preset, args.overrides, args.size, work)
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-lighting-") as tmp:
        work = args.work or Path(tmp)
        for name in args.objects:
            for what in ("fit-unlit", "fit-lit", "score"):
                cmd = [sys.executable, __file__, "--step", name, what, "--preset", args.preset, "--size",
                       str(args.size), "--shading", args.shading, "--work", str(work)]
                last = run_isolated(cmd, f"object {name} at {what}", args.overrides)
            rows.append(json.loads(last))
            print(f"  {name}: {rows[-1]}", file=sys.stderr)
    columns = ["object", "unlit_psnr", "lit_psnr", "gap_db", "sep_psnr", "painted_psnr", "shading_corr",
               "painted_corr", "scale"]
    print_table(rows, columns)
    payload = {"machine": machine_info(), "preset": args.preset, "shading": args.shading,
               "overrides": args.overrides, "rows": rows}
    suffix = "" if args.shading == "linear" else f"_{args.shading}"
    print(f"\nwrote {write_json(f'bench_lighting_{Path(args.preset).stem}{suffix}', payload, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
