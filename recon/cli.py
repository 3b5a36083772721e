"""The ``orbitmesh`` command. Subcommands parse arguments and call pipeline/data functions, nothing else.

Errors that are the input's fault print one line, ``orbitmesh: error: PATH: problem``, and exit with
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from recon import __version__

DEMO_ORBIT = Path(__file__).resolve().parent / "assets" / "demo_orbit"
"""The bundled demo orbit: 21 views of demo_object.glb beside it (built by ``python -m recon.data.demo``)."""

log = logging.getLogger("orbitmesh")


def _lit_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lit", nargs="?", const="linear", choices=["linear", "srgb"], default=None,
                        help="Lambertian shading under a soft white light, applied in linear RGB (physical; "
                             "the default when given) or to the sRGB colour (a stress test); default unlit "
                             "albedo")


def _common(parser: argparse.ArgumentParser, config: bool = True) -> None:
    g = parser.add_argument_group("common options")
    if config:
        g.add_argument("-c", "--preset", default="default",
                       help="config preset name in configs/ or a YAML path (default: default)")
        g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set data.mask_threshold=0.1 (repeatable)")
        g.add_argument("--seed", type=int, default=None, help="random seed (overrides the config's)")
        g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                       help="where tensors live (overrides the config's)")
    g.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    g.add_argument("-v", "--verbose", action="store_true", help="log debug messages")


def _export_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("export options (shorthands for --set export.KEY=VALUE)")
    g.add_argument("--faces", type=int, default=None, help="face budget of the exported mesh (default 20000; 0 = all)")
    g.add_argument("--texture-size", type=int, default=None, help="albedo texture side in texels (default 1024)")
    g.add_argument("--formats", default=None, metavar="LIST",
                   help="comma-separated formats to write as asset.<fmt>: glb, obj, ply (default glb)")
    g.add_argument("--normal-map", action="store_true", default=None,
                   help="also bake a tangent-space normal map from the full-resolution mesh")
    g.add_argument("--scale", type=float, default=None, help="multiply positions on writing (default 1)")
    g.add_argument("--up", choices=["y", "z"], default=None, help="up axis of OBJ/PLY files (GLB is always +Y)")


def _export_overrides(args: argparse.Namespace) -> list[str]:
    """--faces, --texture-size, ... as ``export.key=value`` overrides."""
    out = []
    for opt, key in (("faces", "faces"), ("texture_size", "texture_size"), ("scale", "scale"), ("up", "up")):
        value = getattr(args, opt, None)
        if value is not None:
            out.append(f"export.{key}={value}")
    if getattr(args, "formats", None):
        items = [f.strip().lower().lstrip(".") for f in args.formats.split(",") if f.strip()]
        out.append(f"export.formats=[{', '.join(items)}]")
    if getattr(args, "normal_map", None):
        out.append("export.normal_map=true")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orbitmesh",
        description="Orbit views of an object in, a UV-textured, lighting-free mesh out (SV3D recipe).",
    )
    parser.add_argument("--version", action="version", version=f"orbitmesh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="run every stage on the bundled demo orbit (preset: fast): orbit in, GLB out")
    p.add_argument("-o", "--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    _export_options(p)
    _common(p)
    p.set_defaults(preset="fast")

    p = sub.add_parser("fit", help="reconstruct a textured asset from an orbit: asset.glb (stages data, coarse, "
                                   "refine, export)")
    p.add_argument("orbit", type=Path, help="orbit folder, video, or transforms.json")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    from recon.pipeline import STAGES

    p.add_argument("--until", choices=STAGES, default=STAGES[-1], help=f"last stage to run (default {STAGES[-1]})")
    p.add_argument("--from-stage", choices=STAGES[1:], default=None,
                   help="recompute from this stage on, reading earlier results from the output folder")
    _export_options(p)
    _common(p)

    p = sub.add_parser("export", help="re-export a finished run (face budget, texture size, formats) without fitting")
    p.add_argument("run", type=Path, help="a folder `orbitmesh fit` wrote")
    p.add_argument("-o", "--out", type=Path, default=None, help="output folder (default: the run folder)")
    p.add_argument("--source", choices=["auto", "refined", "coarse"], default="auto",
                   help="what to export: the refined asset (auto, when present) or the coarse mesh")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set export.padding=8 (repeatable)")
    _export_options(p)
    _common(p, config=False)

    def _generation_options(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("generation (SV3D)")
        g.add_argument("--model", default=None, help="SV3D_p in diffusers format: folder or hub id "
                                                     "(shorthand for --set guidance.model=...)")
        g.add_argument("--elevation", type=float, default=10.0, help="orbit elevation in degrees (default 10)")
        g.add_argument("--dynamic", type=float, default=0.0, metavar="DEG",
                       help="amplitude of a sinusoidal elevation (dynamic orbit); 0 = static")
        g.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
        g.add_argument("--size", type=int, default=576, help="generated frame side (default 576, SV3D's)")

    p = sub.add_parser("generate", help="image -> 21-view orbit folder with SV3D (ready for `fit`)")
    p.add_argument("image", type=Path, help="input image (RGBA, or an object on a plain background)")
    p.add_argument("-o", "--out", type=Path, required=True, help="orbit folder to write")
    _generation_options(p)
    _common(p)

    p = sub.add_parser("image-to-glb", help="image -> orbit (SV3D) -> fit with SDS -> asset.glb, in one command")
    p.add_argument("image", type=Path, help="input image (RGBA, or an object on a plain background)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (orbit/ inside)")
    _generation_options(p)
    _export_options(p)
    _common(p)

    p = sub.add_parser("orbit-info", help="print what was understood of an orbit; write a contact sheet")
    p.add_argument("path", type=Path, help="orbit folder, video, or transforms.json")
    p.add_argument("--sheet", type=Path, default=None,
                   help="contact sheet PNG to write (default: orbit_contact_sheet.png in the current folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    _common(p)

    p = sub.add_parser("convert", help="write an orbit (any accepted input) as an orbit folder + transforms.json")
    p.add_argument("path", type=Path, help="orbit folder, video, or transforms.json")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--alpha", action="store_true", help="write RGBA frames with the mask as alpha")
    _common(p)

    p = sub.add_parser("synth", help="ray-cast an analytic scene into an SV3D-style orbit with its true mesh")
    from recon.data.synthetic import SCENES

    p.add_argument("scene", choices=SCENES, help="analytic scene")
    p.add_argument("-o", "--out", type=Path, required=True, help="output orbit folder")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--frames", type=int, default=21, help="number of frames (default 21)")
    p.add_argument("--elevation", type=float, default=10.0, help="elevation in degrees (default 10)")
    p.add_argument("--dynamic", type=float, default=0.0, metavar="DEG",
                   help="amplitude of a sinusoidal elevation (a dynamic orbit); 0 = static")
    p.add_argument("--supersample", type=int, default=3, help="antialiasing samples per pixel side")
    _lit_option(p)
    p.add_argument("--alpha", action="store_true", help="write RGBA frames")
    _common(p, config=False)

    p = sub.add_parser("render-orbit", help="render a textured mesh (GLB, OBJ+MTL, PLY) into an SV3D-style orbit")
    p.add_argument("mesh", type=Path, help="mesh file: .glb/.gltf, .obj (+.mtl, textures), .ply (vertex colours)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output orbit folder")
    p.add_argument("--size", type=int, default=576, help="image side in pixels (default 576, SV3D's)")
    p.add_argument("--frames", type=int, default=21, help="number of frames (default 21)")
    p.add_argument("--elevation", type=float, default=10.0, help="elevation in degrees (default 10)")
    p.add_argument("--dynamic", type=float, default=0.0, metavar="DEG",
                   help="amplitude of a sinusoidal elevation (a dynamic orbit); 0 = static")
    p.add_argument("--fov", type=float, default=33.8, help="vertical field of view in degrees (default 33.8)")
    p.add_argument("--radius", type=float, default=2.0, help="camera distance (default 2.0)")
    p.add_argument("--supersample", type=int, default=3, help="antialiasing samples per pixel side (default 3)")
    _lit_option(p)
    p.add_argument("--alpha", action="store_true", help="write RGBA frames")
    p.add_argument("--no-transforms", action="store_true", help="do not write transforms.json")
    p.add_argument("--no-normalize", action="store_true",
                   help="keep the mesh's own frame (default: largest extent 1, centred, as CONVENTIONS.md)")
    _common(p, config=False)

    p = sub.add_parser("eval", help="GSO metrics of a mesh against ground truth: Chamfer, F-score, IoU, PSNR/SSIM")
    p.add_argument("pred", type=Path, help="predicted mesh (.glb, .obj, .ply, ...)")
    p.add_argument("gt", type=Path, help="ground-truth mesh")
    p.add_argument("--no-normalize", action="store_true", help="compare in the meshes' own frames")
    p.add_argument("--samples", type=int, default=100_000, help="area-sampled points per mesh (default 100000)")
    p.add_argument("--views", type=int, default=21, help="held-out views for PSNR/SSIM (0 skips them)")
    p.add_argument("--size", type=int, default=256, help="side of the held-out views (default 256)")
    p.add_argument("--json", type=Path, default=None, help="write the metrics as JSON here")
    _common(p, config=False)

    p = sub.add_parser("bench", help="GSO-style benchmark: render, reconstruct, score and report many objects "
                                     "(ablation: visual hull, coarse, refine, full)")
    from recon.eval.gso import add_arguments

    add_arguments(p)
    _common(p, config=False)

    p = sub.add_parser("warmup", help="compile the numba kernels now (once per installation; `make setup` runs it), "
                                      "so the first fit does not spend a minute compiling inside its stages")
    _common(p, config=False)

    p = sub.add_parser("config", help="print the resolved configuration with every field's documentation")
    _common(p)
    return parser


def _load_cfg(args: argparse.Namespace):
    from recon.config import load_config

    overrides = list(args.overrides) + _export_overrides(args)
    if getattr(args, "model", None):
        overrides.append(f"guidance.model={args.model}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    return load_config(args.preset, overrides)


def _print_table(table) -> None:
    from rich.console import Console

    Console(width=120).print(table)


def cmd_demo(args: argparse.Namespace) -> int:
    from recon.data.report import orbit_table
    from recon.pipeline import run

    cfg = _load_cfg(args)
    result = run(cfg, DEMO_ORBIT, args.out)
    _print_table(orbit_table(result.orbit))
    print(f"\nDemo finished: stages run on {DEMO_ORBIT.name} ({len(result.orbit)} frames). Produced:")
    _report(result)
    return 0


def _report(result) -> None:
    for role, path in result.files.items():
        print(f"  {role:22s} {path}")
    coarse = result.metrics.get("coarse")
    if coarse:
        print(f"coarse: {coarse['steps']} steps in {coarse['seconds']:.1f} s, "
              f"train PSNR {coarse['train_psnr']:.2f} dB, {coarse['faces']} faces, "
              f"silhouette IoU {coarse['silhouette_iou']:.3f}")
    refine = result.metrics.get("refine")
    if refine:
        print(f"refine: {refine['steps']} steps in {refine['seconds']:.1f} s, "
              f"train PSNR {refine['train_psnr']:.2f} dB, {refine['faces']} faces")
    export = result.metrics.get("export")
    if export:
        _report_export(export)


def _report_export(export: dict) -> None:
    line = (f"export: {export['faces_in']} -> {export['faces']} faces, {export['texture_size']}² texture, "
            f"UVs by {export['unwrap_method']}, {export['seconds']:.1f} s")
    if "psnr_vs_before_export" in export:
        line += f", {export['psnr_vs_before_export']:.2f} dB PSNR against the result before export"
    print(line)


def cmd_fit(args: argparse.Namespace) -> int:
    from recon.pipeline import run

    cfg = _load_cfg(args)
    result = run(cfg, args.orbit, args.out, until=args.until, from_stage=args.from_stage)
    print(f"fit finished (until {args.until}). Produced:")
    _report(result)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from recon.io import write_json
    from recon.pipeline import export_run

    files, metrics = export_run(args.run, list(args.overrides) + _export_overrides(args), args.out, args.source)
    out = args.out or args.run
    files["export_metrics"] = write_json(out / "export_metrics.json", metrics)
    print(f"export finished ({metrics['source']} result of {args.run}). Produced:")
    for role, path in files.items():
        print(f"  {role:22s} {path}")
    _report_export(metrics)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from recon.pipeline import generate_views

    cfg = _load_cfg(args)
    out = generate_views(cfg, args.image, args.out, args.steps, args.size, args.elevation, args.dynamic)
    print(f"wrote 21 generated views of {args.image.name} ({args.size}x{args.size}), orbit.json and transforms.json "
          f"to {out}; next: orbitmesh fit {out} -o OUT")
    return 0


def cmd_image_to_glb(args: argparse.Namespace) -> int:
    from recon.pipeline import image_to_glb

    cfg = _load_cfg(args)
    result = image_to_glb(cfg, args.image, args.out, args.steps, args.size, args.elevation, args.dynamic)
    print(f"image-to-glb finished: {args.out / 'asset.glb'}. Produced:")
    _report(result)
    return 0


def cmd_orbit_info(args: argparse.Namespace) -> int:
    from recon.data.orbit import load_orbit
    from recon.data.report import contact_sheet, orbit_summary, orbit_table
    from recon.io import write_json

    cfg = _load_cfg(args)
    orbit = load_orbit(args.path, cfg.data)
    _print_table(orbit_table(orbit))
    for note in orbit.notes:
        print(f"note: {note}")
    sheet = contact_sheet(orbit, args.sheet or Path("orbit_contact_sheet.png"))
    print(f"contact sheet: {sheet}")
    if args.json:
        print(f"summary: {write_json(args.json, orbit_summary(orbit))}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from recon.data.orbit import load_orbit, write_orbit

    cfg = _load_cfg(args)
    orbit = load_orbit(args.path, cfg.data)
    out = write_orbit(orbit, args.out, alpha=args.alpha, transforms=True)
    what = "frames, orbit.json and transforms.json" if orbit.is_orbit else "frames and transforms.json"
    print(f"wrote {len(orbit)} {what} to {out}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from recon.data.orbit import write_orbit
    from recon.data.synthetic import make_scene, render_orbit, sv3d_orbit_angles
    from recon.errors import InputError
    from recon.io import atomic_path
    from recon.shading.soft_light import SoftLight

    if args.size < 8 or args.frames < 4 or args.supersample < 1:
        raise InputError(args.out, "need --size >= 8, --frames >= 4 and --supersample >= 1")
    scene = make_scene(args.scene)
    elev, azim = sv3d_orbit_angles(args.frames, args.elevation, args.dynamic)
    orbit = render_orbit(scene, elev, azim, size=args.size, supersample=args.supersample,
                         light=SoftLight(space=args.lit) if args.lit else None, progress=True)
    write_orbit(orbit, args.out, alpha=args.alpha, transforms=True)
    mesh_path = args.out / "ground_truth.ply"
    with atomic_path(mesh_path) as tmp:
        scene.mesh().export(tmp)
    print(f"wrote {len(orbit)} frames of '{args.scene}' ({args.size}x{args.size}), orbit.json, transforms.json "
          f"and {mesh_path.name} to {args.out}")
    return 0


def cmd_render_orbit(args: argparse.Namespace) -> int:
    from recon.errors import InputError
    from recon.render.orbit import render_mesh_orbit

    if args.size < 8 or args.frames < 4 or args.supersample < 1:
        raise InputError(args.out, "need --size >= 8, --frames >= 4 and --supersample >= 1")
    written = render_mesh_orbit(
        args.mesh, args.out, size=args.size, frames=args.frames, elevation=args.elevation,
        dynamic_amplitude=args.dynamic, fov_deg=args.fov, radius=args.radius, supersample=args.supersample,
        lit=args.lit, alpha=args.alpha, transforms=not args.no_transforms, normalize=not args.no_normalize,
    )
    print(f"wrote {args.frames} frames ({args.size}x{args.size}) of {args.mesh.name} to {args.out}: "
          + ", ".join(p.name for p in written))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.table import Table

    from recon.eval.metrics import EvalConfig, evaluate_meshes
    from recon.io import write_json
    from recon.render.mesh import load_render_mesh

    cfg = EvalConfig(normalize=not args.no_normalize, samples=args.samples, views=args.views,
                     view_size=args.size)
    metrics = evaluate_meshes(load_render_mesh(args.pred), load_render_mesh(args.gt), cfg)
    table = Table(title=f"{args.pred.name} vs {args.gt.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}")
    _print_table(table)
    if args.json:
        print(f"metrics: {write_json(args.json, {'pred': str(args.pred), 'gt': str(args.gt), **metrics})}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from recon.eval.gso import run_from_args

    files = run_from_args(args)
    print("benchmark finished. Reports:")
    for role, path in files.items():
        print(f"  {role:10s} {path}")
    print(files["markdown"].read_text())
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from recon.config import config_to_yaml

    print(config_to_yaml(_load_cfg(args)), end="")
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    from recon.warmup import compile_kernels

    print("compiling the numba kernels (every stage once on a tiny orbit) ...", flush=True)
    seconds = compile_kernels()
    print(f"kernels compiled and cached in {seconds:.0f} s")
    return 0


COMMANDS = {
    "demo": cmd_demo,
    "fit": cmd_fit,
    "export": cmd_export,
    "generate": cmd_generate,
    "image-to-glb": cmd_image_to_glb,
    "orbit-info": cmd_orbit_info,
    "convert": cmd_convert,
    "synth": cmd_synth,
    "render-orbit": cmd_render_orbit,
    "eval": cmd_eval,
    "bench": cmd_bench,
    "config": cmd_config,
    "warmup": cmd_warmup,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from recon.log import setup_logging

    setup_logging(args.verbose)
    from recon.errors import OrbitMeshError

    try:
        return COMMANDS[args.command](args)
    except OrbitMeshError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"orbitmesh: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("orbitmesh: interrupted", file=sys.stderr)
        return 130
