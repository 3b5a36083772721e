"""Rasterizer benchmark: faces x resolution x views; rasterize, +interpolate+L2 fwd+bwd, +antialias.

    python benchmarks/bench_render.py                 # the full grid (issue targets at 320k faces)
    python benchmarks/bench_render.py --quick         # 20k faces only
    python benchmarks/bench_render.py --device cuda   # same grid on CUDA (nvdiffrast when installed)

Meshes are icospheres (radius 0.45) seen by SV3D's 21 orbit cameras (or the first one for views=1).
Times are the minimum over --repeats runs after a warm-up; peak memory is the resident-set growth
during the case, each case running in a fresh process. Writes benchmarks/results/bench_render.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

# isort: off
import recon  # noqa: F401  (sets thread counts and OMP_WAIT_POLICY before torch and numba load)
import torch
import trimesh
# isort: on

from _common import add_out_argument, best_of, machine_info, peak_memory, print_table, write_json

from recon.data.cameras import orbit_cameras, sv3d_azimuths
from recon.render import antialias, edge_topology, interpolate, rasterize
from recon.render.views import clip_positions

SUBDIVISIONS = {20_480: 5, 81_920: 6, 327_680: 7}
TARGETS_S = {  # issue 3 targets on 2 cores, 320k faces x 21 views: (rasterize, +interp+L2 fwd+bwd, +antialias)
    (327_680, 256, 21): (0.15, 0.40, 0.50),
    (327_680, 512, 21): (0.25, 0.75, 1.10),
}


def run_case(faces: int, res: int, views: int, repeats: int, device: str) -> dict[str, object]:
    mesh = trimesh.creation.icosphere(SUBDIVISIONS[faces], radius=0.45)
    verts = torch.tensor(mesh.vertices, dtype=torch.float32, device=device)
    tri = torch.tensor(mesh.faces, dtype=torch.int32, device=device)
    az = sv3d_azimuths()[-views:]
    cams = orbit_cameras(torch.full_like(az, 10.0), az, 2.0, 33.8, res)
    pos = clip_positions(verts, cams.to(device))
    colors = torch.rand(len(verts), 3, device=device)
    target = torch.rand(views, res, res, 3, device=device)
    edge_topology(tri)  # topology is cached across steps in training; build it once here

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def raster_only() -> None:
        with torch.no_grad():
            rasterize(pos, tri, (res, res))
        sync()

    def fwd_bwd(aa: bool) -> None:
        p = pos.detach().requires_grad_(True)
        c = colors.detach().requires_grad_(True)
        rast = rasterize(p, tri, (res, res))
        img = interpolate(c, rast, tri)
        if aa:
            img = antialias(img, rast, p, tri)
        ((img - target) ** 2).mean().backward()
        sync()

    row: dict[str, object] = {"faces": faces, "res": res, "views": views}
    rasterize(pos[:1], tri, (8, 8))  # load the compiled kernels before measuring memory
    with peak_memory() as mem:
        row["rasterize_ms"] = best_of(raster_only, repeats)
        row["raster_interp_l2_fwd_bwd_ms"] = best_of(lambda: fwd_bwd(False), repeats)
        row["with_antialias_ms"] = best_of(lambda: fwd_bwd(True), repeats)
    row["peak_mb"] = mem["peak_mb"]
    target_s = TARGETS_S.get((faces, res, views))
    if target_s and device == "cpu":
        got = (row["rasterize_ms"], row["raster_interp_l2_fwd_bwd_ms"], row["with_antialias_ms"])
        row["targets_ms"] = "/".join(f"{t * 1000:.0f}" for t in target_s)
        row["meets"] = "yes" if all(g <= t * 1000 for g, t in zip(got, target_s, strict=True)) else "NO"
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k faces only")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    add_out_argument(parser)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # FACES,RES,VIEWS: one case, JSON out
    args = parser.parse_args()
    if args.case:
        faces, res, views = (int(v) for v in args.case.split(","))
        print(json.dumps(run_case(faces, res, views, args.repeats, args.device)))
        return 0
    faces_list = [20_480] if args.quick else list(SUBDIVISIONS)
    rows = []
    for faces in faces_list:
        for res in (256, 512):
            for views in (1, 21):
                # Each case in a fresh process, so that its peak memory is its own (compiled kernels load
                # from numba's cache).
                proc = subprocess.run(
                    [sys.executable, __file__, "--case", f"{faces},{res},{views}", "--repeats", str(args.repeats),
                     "--device", args.device],
                    capture_output=True, text=True, check=True,
                )
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"  done {faces} faces, {res}², {views} views", file=sys.stderr)
    columns = ["faces", "res", "views", "rasterize_ms", "raster_interp_l2_fwd_bwd_ms", "with_antialias_ms",
               "peak_mb", "targets_ms", "meets"]
    print_table(rows, columns)
    path = write_json(f"bench_render_{args.device}", {"machine": machine_info(), "rows": rows}, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
