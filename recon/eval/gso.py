"""The GSO benchmark runner: render, reconstruct, score, report — in local processes or as Ray tasks.

For each object (a Google-Scanned-Objects folder, any textured mesh, or a named offline object): normalise
it (CONVENTIONS.md), render SV3D's static 21-view orbit as input (optionally with generated-view
imperfections, ``recon.eval.realism``) and hold out 21 views of a dynamic orbit for the 2D metrics, run
the pipeline stage by stage (time and peak memory per stage), and score every variant of the ablation:

- ``visual-hull``: the masks' visual hull (128³, marching cubes), coloured with the mean object colour;
- ``coarse``: the coarse stage's mesh with its vertex colours;
- ``refine``: the refined mesh with its albedo field (no export);
- ``full``: the exported ``asset.glb`` (the deliverable: 20k faces, baked texture);
- ``sds``: the full pipeline with soft-masked SDS from ``--sds-model`` (SV3D_p in diffusers format) in the
  refinement, reusing the coarse stage — reported as skipped when no model is given.

Metrics (GSO protocol, ``recon.eval.metrics``): Chamfer on area samples and on vertices, F-score at
0.01/0.02/0.05, volume IoU 64³ (both meshes normalised), PSNR/SSIM on the held-out views (world frame,
unlit). Results are cached per (object, configuration hash) in ``OUT/objects/<name>/<hash>/result.json``;
a rerun skips what is there and the pipeline itself resumes an interrupted fit. Reports in
``OUT/report_<hash>/``: per-object ``results.csv`` / ``results.json``, ``report.md`` (mean and median per
variant, next to SV3D's published numbers), ``summary.png`` (metric vs time per variant) and a contact
sheet per object (ground truth vs each variant on held-out views).
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

VARIANTS = ("visual-hull", "coarse", "refine", "full", "sds")
"""The ablation, in the order of SV3D's tables."""

SV3D_GSO = [
    ("SV3D (paper), generated views", 0.024, 0.614),
    ("SV3D (paper), ground-truth renders", 0.021, 0.689),
]
"""(label, Chamfer, IoU) from SV3D's paper, Table 5 (GSO, 3D evaluation)."""

PROTOCOL_NOTE = (
    "SV3D's numbers are on GSO objects from its own generated orbits (576², its 21 views) with its own "
    "renderer; ours are on the objects listed here, from orbits our renderer makes (size above, optional "
    "realism perturbations instead of a video model), Chamfer as the mean of the two directed mean L2 "
    "distances on 100k area samples of both meshes normalised to unit extent. Same metric definitions, "
    "different objects and inputs: a guide, not a like-for-like comparison."
)


@dataclass(frozen=True)
class BenchObject:
    """One benchmark object: a name (unique in a run) and its mesh file."""

    name: str
    mesh: Path


@dataclass
class BenchSettings:
    """What one benchmark run does to every object."""

    preset: str = "fast"
    """Pipeline preset (name in configs/ or a YAML path)."""
    overrides: list[str] = field(default_factory=list)
    """``section.key=value`` overrides of the preset."""
    size: int = 256
    """Side of the input orbit's views (SV3D: 576)."""
    realism: str = "none"
    """Generated-view imperfections of the input orbit: none, mild, default or strong (recon.eval.realism)."""
    rgb: bool = False
    """Input frames RGB on white, masks from the background colour (as raw SV3D frames), not RGBA."""
    variants: tuple[str, ...] = VARIANTS
    """Which rows of the ablation to run."""
    heldout_views: int = 21
    """Held-out views (dynamic orbit, azimuths offset half a step) for PSNR/SSIM."""
    samples: int = 100_000
    """Area samples per mesh for Chamfer and F-score."""
    seed: int = 0
    """Seed of the pipeline, the perturbations and the surface sampling."""
    sds_model: str = ""
    """SV3D_p (folder or hub id) for the ``sds`` variant; empty: that variant is reported as skipped."""

    def key(self) -> str:
        """Hash of everything that changes results (the resolved pipeline config included)."""
        from recon.config import config_to_dict

        blob = {**asdict(self), "config": config_to_dict(self.pipeline_config()), "scoring": 1}
        blob.pop("overrides")
        blob.pop("preset")
        if not blob["rgb"]:
            blob.pop("rgb")  # keys of RGBA runs stay those of the runs before the option
        return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:10]

    def pipeline_config(self):
        from recon.config import load_config

        # The run's own export previews (turntable, before/after renders) are not needed: scoring renders.
        # SDS only in the 'sds' variant (``sds_model``), never in the base run.
        quiet = ["export.turntable_frames=0", "export.eval_views=0"]
        return load_config(self.preset, [*quiet, *self.overrides, f"seed={self.seed}", "guidance.model="])


# ---------------------------------------------------------------------------------------------------
# Finding objects.


def _gso_model(folder: Path) -> Path | None:
    """The mesh of a GSO object folder (``meshes/model.obj``), if it is one."""
    for candidate in (folder / "meshes" / "model.obj", folder / "model.obj"):
        if candidate.is_file():
            return candidate
    return None


def discover_objects(sources: list[str], count: int = 0, seed: int = 0, cache: Path | None = None) -> list[BenchObject]:
    """Objects named by ``sources``: GSO roots (one folder per object with ``meshes/model.obj``), single GSO
    object folders, mesh files, glob patterns, or names of offline objects (``recon.eval.objects``).
    ``count`` > 0 picks that many with ``seed`` (sorted by name first, so the pick is stable).

    Raises:
        InputError: a source that matches nothing.
    """
    from recon.errors import InputError
    from recon.eval.objects import OFFLINE_OBJECTS, object_mesh
    from recon.render.mesh import MESH_SUFFIXES

    found: dict[str, Path] = {}

    def add(name: str, mesh: Path) -> None:
        base, k = name, 1
        while name in found and found[name] != mesh:
            k += 1
            name = f"{base}_{k}"
        found[name] = mesh

    for src in sources:
        path = Path(src)
        if src in OFFLINE_OBJECTS and not path.exists():
            add(src, object_mesh(src, (cache or Path.home() / ".cache" / "orbitmesh" / "objects") / "generated"))
        elif path.is_dir():
            model = _gso_model(path)
            if model is not None:
                add(path.name, model)
                continue
            models = [(d.name, _gso_model(d)) for d in sorted(path.iterdir()) if d.is_dir()]
            models = [(n, m) for n, m in models if m is not None]
            if not models:
                raise InputError(path, "no GSO objects here (expected <object>/meshes/model.obj)")
            for name, model in models:
                add(name, model)
        elif path.is_file():
            add(path.stem, path)
        else:
            matches = sorted(p for p in map(Path, glob.glob(src, recursive=True))
                             if p.suffix.lower() in MESH_SUFFIXES)
            if not matches:
                raise InputError(path, f"matches no object (known offline objects: {', '.join(OFFLINE_OBJECTS)})")
            for m in matches:
                add(m.parent.parent.name if m.parent.name == "meshes" else m.stem, m)
    objects = [BenchObject(n, m) for n, m in sorted(found.items())]
    if 0 < count < len(objects):
        objects = sorted(random.Random(seed).sample(objects, count), key=lambda o: o.name)
    return objects


# ---------------------------------------------------------------------------------------------------
# One object.


def _visual_hull_mesh(orbit, res: int = 128):
    """Marching cubes of the masks' visual hull (no tolerance, no dilation), coloured with the mean object
    colour of the views: the simple baseline."""
    import mcubes
    import numpy as np
    import torch
    from scipy import ndimage

    from recon.coarse.occupancy import visual_hull
    from recon.extract import orient_outwards
    from recon.types import Mesh

    occ = visual_hull(orbit, res=res, bound=0.6, dilation_frac=0.0, tolerance_views=0)
    grid = ndimage.gaussian_filter(np.pad(occ.grid.numpy().astype(np.float32), 1), 0.8)
    v, f = mcubes.marching_cubes(grid, 0.5)
    cell = 1.2 / res
    verts = (v - 1 + 0.5) * cell - 0.6  # padded index -> cell centre -> world
    faces = orient_outwards(verts, f.astype(np.int64))
    w = orbit.masks[..., None]
    mean = (orbit.images * w).sum((0, 1, 2)) / w.sum().clamp(min=1)
    colors = mean.expand(len(verts), 3).clone()
    return Mesh(torch.tensor(verts, dtype=torch.float32), torch.tensor(faces.astype(np.int64)), colors)


def _score(pred, gt, heldout_truth, cams, settings: BenchSettings, images=None,
           textured: bool = True) -> tuple[dict, object]:
    """Geometry metrics (both normalised) and 2D metrics (world frame; None for an untextured object) of a
    RenderMesh ``pred``; ``images`` replaces its renders (for the albedo field)."""
    import torch

    from recon.eval.metrics import EvalConfig, evaluate_meshes, psnr, ssim
    from recon.render.views import render_views

    metrics = evaluate_meshes(pred, gt, EvalConfig(views=0, samples=settings.samples, seed=settings.seed))
    if images is None:
        with torch.no_grad():
            images, _ = render_views(pred, cams, supersample=2)
    metrics["psnr"] = psnr(images, heldout_truth) if textured else None
    metrics["ssim"] = ssim(images, heldout_truth) if textured else None
    return metrics, images


def _stage_seconds(metrics: dict, stage: str) -> float:
    """A stage's time in a run's metrics: for refine and export their own compute time (a reused artifact
    reports the run that made it), for coarse its wall time in this run (fit, or reload, plus extraction)."""
    wall = metrics["resources"][stage]["seconds"]
    if stage == "coarse":
        return wall
    own = metrics.get(stage, {})
    return float(own.get("seconds", wall)) + float(own.get("init_seconds", 0.0))


def run_object(obj: BenchObject, settings: BenchSettings, out_root: Path) -> dict:
    """Render, reconstruct and score one object (cached: returns the saved result when present)."""
    import numpy as np
    import torch

    from recon.data.orbit import load_orbit
    from recon.eval.metrics import EvalConfig, heldout_cameras
    from recon.eval.realism import REALISM_LEVELS, render_realistic_orbit
    from recon.eval.resources import peak_memory
    from recon.io import write_json, write_png
    from recon.pipeline import run
    from recon.previews import vertex_colored
    from recon.refine.render import render_asset
    from recon.render.mesh import load_render_mesh
    from recon.render.views import render_views
    from recon.shading.soft_light import SoftLight

    key = settings.key()
    work = out_root / "objects" / obj.name / key
    result_path = work / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    cfg = settings.pipeline_config()
    orbit_dir = out_root / "objects" / obj.name / (f"orbit_{settings.size}_{settings.realism}_{settings.seed}"
                                                   + ("_rgb" if settings.rgb else ""))
    if not (orbit_dir / "orbit.json").is_file():
        render_realistic_orbit(obj.mesh, orbit_dir, settings.size, REALISM_LEVELS[settings.realism], settings.seed,
                               rgba=not settings.rgb)
    gt = load_render_mesh(obj.mesh).normalized()
    cams = heldout_cameras(EvalConfig(views=settings.heldout_views, view_size=settings.size))
    with torch.no_grad():
        truth, truth_alpha = render_views(gt, cams, supersample=2)
    # An untextured object renders white on white: PSNR/SSIM say nothing there (and run to infinity).
    solid = truth_alpha > 0.99
    textured = bool(solid.any()) and float(truth[solid].std(dim=0).max()) > 0.01

    variants: dict[str, dict] = {}
    stages: dict[str, dict] = {}
    renders: dict[str, torch.Tensor] = {}
    meshes: dict[str, object] = {}
    wanted = set(settings.variants)
    if "visual-hull" in wanted:
        start = time.perf_counter()
        with peak_memory() as mem:
            hull = _visual_hull_mesh(load_orbit(orbit_dir, cfg.data))
        seconds = time.perf_counter() - start
        meshes["visual-hull"] = vertex_colored(hull, hull.colors)
        m, renders["visual-hull"] = _score(meshes["visual-hull"], gt, truth, cams, settings, textured=textured)
        variants["visual-hull"] = {**m, "seconds": seconds, "peak_mb": mem["peak_mb"]}
    last = "export" if "full" in wanted else "refine" if "refine" in wanted else "coarse" if "coarse" in wanted \
        else None
    result = None
    order = ("coarse", "refine", "export")
    if last is not None:
        run_dir = work / "run"
        result = run(cfg, orbit_dir, run_dir, until=last)
        for stage, res in result.metrics["resources"].items():
            stages[stage] = {"seconds": _stage_seconds(result.metrics, stage), "wall_seconds": res["seconds"],
                             "peak_mb": res["peak_mb"]}
    elapsed = 0.0
    for variant, stage in (("coarse", "coarse"), ("refine", "refine"), ("full", "export")):
        if stage in stages:
            elapsed += stages[stage]["seconds"]
        if variant not in wanted or result is None:
            continue
        peak = max(stages[s]["peak_mb"] for s in stages if order.index(s) <= order.index(stage))
        if variant == "coarse":
            meshes[variant] = vertex_colored(result.coarse_mesh, result.coarse_mesh.colors)
            m, renders[variant] = _score(meshes[variant], gt, truth, cams, settings, textured=textured)
        elif variant == "refine":
            asset = result.refined
            with torch.no_grad():
                images = render_asset(asset, cams, shaded=False)["rgb"]
            meshes[variant] = vertex_colored(asset.mesh, asset.mesh.colors)
            m, renders[variant] = _score(meshes[variant], gt, truth, cams, settings, images, textured)
        else:
            meshes[variant] = load_render_mesh(run_dir / "asset.glb")
            m, renders[variant] = _score(meshes[variant], gt, truth, cams, settings, textured=textured)
        variants[variant] = {**m, "seconds": elapsed, "peak_mb": peak}
    if "sds" in wanted and not settings.sds_model:
        variants["sds"] = {"skipped": "no SV3D model given (--sds-model)"}
    elif "sds" in wanted:
        import shutil
        from dataclasses import replace

        sds_cfg = replace(cfg, guidance=replace(cfg.guidance, model=settings.sds_model))
        sds_dir = work / "run_sds"
        base_ckpts = work / "run" / "checkpoints"
        (sds_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        for ckpt in base_ckpts.glob("coarse_field_*.pt") if base_ckpts.is_dir() else []:
            if not (sds_dir / "checkpoints" / ckpt.name).exists():
                shutil.copy2(ckpt, sds_dir / "checkpoints" / ckpt.name)  # same key: the coarse stage is reused
        with peak_memory() as mem:
            sds_result = run(sds_cfg, orbit_dir, sds_dir, until="export")
        seconds = stages.get("coarse", {}).get("seconds", 0.0) + sum(
            _stage_seconds(sds_result.metrics, s) for s in ("refine", "export"))
        meshes["sds"] = load_render_mesh(sds_dir / "asset.glb")
        m, renders["sds"] = _score(meshes["sds"], gt, truth, cams, settings, textured=textured)
        variants["sds"] = {**m, "seconds": seconds, "peak_mb": mem["peak_mb"]}

    # Contact sheet: ground truth, then each variant, on four held-out views. An untextured object's
    # albedo renders are white on white, so its sheet shows the shapes under the soft light instead.
    views = np.linspace(0, len(cams) - 1, 4).round().astype(int)
    shown = [v for v in VARIANTS if v in renders]
    if textured:
        sheet_rows = [truth[views], *[renders[v][views] for v in shown]]
    else:
        light, grey = SoftLight(), (0.75, 0.75, 0.75)
        sheet_cams = cams.subset(torch.from_numpy(views))
        with torch.no_grad():
            sheet_rows = [render_views(m, sheet_cams, supersample=2, light=light, background=grey)[0]
                          for m in (gt, *[meshes[v] for v in shown])]
    rows = [torch.cat(list(r), dim=1) for r in sheet_rows]
    sheet = write_png(work / "contact_sheet.png", torch.cat(rows, dim=0).clamp(0, 1).numpy())
    out = {"object": obj.name, "mesh": str(obj.mesh), "key": key, "textured": textured,
           "settings": asdict(settings), "stages": stages, "variants": variants, "contact_sheet": str(sheet),
           "row_order": ["truth", *[v for v in VARIANTS if v in renders]]}
    write_json(result_path, out)
    return json.loads(result_path.read_text())  # the same form a cached rerun returns


def _run_object_in_worker(obj: BenchObject, settings: BenchSettings, out_root: str) -> dict:
    """Entry point of a worker process or Ray task (imports inside, after its thread set-up)."""
    from recon.log import setup_logging

    setup_logging(False)
    return run_object(obj, settings, Path(out_root))


# ---------------------------------------------------------------------------------------------------
# Many objects, reports.


def run_all(objects: list[BenchObject], settings: BenchSettings, out_root: Path, workers: int = 1,
            ray_address: str | None = None) -> list[dict]:
    """Run every object (cached ones return at once): in this process, in ``workers`` local processes, or
    as Ray tasks on the cluster at ``ray_address`` ('local' starts a local instance). Results come back in
    the objects' order."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    if ray_address:
        import ray

        if ray_address == "local":
            ray.init(num_cpus=max(1, workers), include_dashboard=False, ignore_reinit_error=True)
        else:
            ray.init(address=ray_address, ignore_reinit_error=True)
        task = ray.remote(num_cpus=1)(_run_object_in_worker)
        # Results travel back to the driver (Ray's object store); the run folders stay where each task ran.
        return ray.get([task.remote(o, settings, str(out_root)) for o in objects])
    if workers <= 1:
        return [run_object(o, settings, out_root) for o in objects]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Each worker gets its share of the cores (read by recon._env when the worker imports recon).
    os.environ["ORBITMESH_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_run_object_in_worker, o, settings, str(out_root)) for o in objects]
        return [f.result() for f in futures]


METRIC_COLUMNS = ["chamfer_area", "chamfer_vertex", "fscore@0.01", "fscore@0.02", "fscore@0.05", "iou", "psnr",
                  "ssim", "seconds", "peak_mb"]


def result_rows(results: list[dict]) -> list[dict]:
    """One row per (object, variant) with every metric (skipped variants carry their reason)."""
    rows = []
    for r in results:
        for variant in VARIANTS:
            if variant not in r["variants"]:
                continue
            v = r["variants"][variant]
            row = {"object": r["object"], "variant": variant}
            if "skipped" in v:
                row["skipped"] = v["skipped"]
            else:
                row.update({k: v.get(k) for k in METRIC_COLUMNS})
            rows.append(row)
    return rows


def write_reports(results: list[dict], settings: BenchSettings, out_root: Path) -> dict[str, Path]:
    """results.csv, results.json, report.md and summary.png in ``out_root/report_<key>/``."""
    import statistics

    from recon.io import atomic_path, write_json, write_text

    report_dir = out_root / f"report_{settings.key()}"
    rows = result_rows(results)
    files = {"json": write_json(report_dir / "results.json", {"settings": asdict(settings), "results": results})}
    with atomic_path(report_dir / "results.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["object", "variant", *METRIC_COLUMNS, "skipped"])
        writer.writeheader()
        writer.writerows(rows)
    files["csv"] = report_dir / "results.csv"

    lines = [f"# Benchmark: {len(results)} objects, preset `{settings.preset}`"
             + (f" with {' '.join(settings.overrides)}" if settings.overrides else "")
             + f", input {settings.size}² {'RGB on white' if settings.rgb else 'RGBA'}, "
             + f"realism `{settings.realism}`, seed {settings.seed}", "",
             f"Objects: {', '.join(r['object'] for r in results)}.", "",
             "| variant | n | Chamfer mean | Chamfer median | IoU mean | IoU median | F@0.02 mean | PSNR mean "
             "| SSIM mean | time mean (s) | peak mean (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        vals = [row for row in rows if row["variant"] == variant]
        if not vals:
            continue
        if all("skipped" in v for v in vals):
            lines.append(f"| {variant} | 0 | skipped: {vals[0]['skipped']} |||||||||")
            continue

        def col(k: str, agg, vs=vals) -> str:
            xs = [v[k] for v in vs if v.get(k) is not None]
            return f"{agg(xs):.4g}" if xs else ""

        lines.append(f"| {variant} | {len(vals)} | {col('chamfer_area', statistics.mean)} | "
                     f"{col('chamfer_area', statistics.median)} | {col('iou', statistics.mean)} | "
                     f"{col('iou', statistics.median)} | {col('fscore@0.02', statistics.mean)} | "
                     f"{col('psnr', statistics.mean)} | {col('ssim', statistics.mean)} | "
                     f"{col('seconds', statistics.mean)} | {col('peak_mb', statistics.mean)} |")
    for label, cd, iou in SV3D_GSO:
        lines.append(f"| {label} | GSO | {cd} | | {iou} | | | | | | |")
    untextured = [r["object"] for r in results if not r.get("textured", True)]
    if untextured:
        lines += ["", f"PSNR/SSIM are over textured objects only: {', '.join(untextured)} render white on white."]
    lines += ["", PROTOCOL_NOTE, "", "Per object:", "",
              "| object | variant | Chamfer | IoU | F@0.02 | PSNR | SSIM | time (s) |",
              "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "skipped" in row:
            continue
        p2d = "–" if row["psnr"] is None else f"{row['psnr']:.2f}"
        s2d = "–" if row["ssim"] is None else f"{row['ssim']:.3f}"
        lines.append(f"| {row['object']} | {row['variant']} | {row['chamfer_area']:.4f} | {row['iou']:.3f} | "
                     f"{row['fscore@0.02']:.3f} | {p2d} | {s2d} | {row['seconds']:.1f} |")
    lines += ["", "Contact sheets (columns: held-out views; rows as listed):", ""]
    lines += [f"- {r['object']} ({', '.join(r['row_order'])}): `{r['contact_sheet']}`" for r in results]
    files["markdown"] = write_text(report_dir / "report.md", "\n".join(lines) + "\n")
    files["plot"] = summary_plot(rows, report_dir / "summary.png")
    return files


def summary_plot(rows: list[dict], path: Path) -> Path:
    """Chamfer and PSNR against time, one colour per variant, one point per object (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recon.io import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for variant in VARIANTS:
        vals = [r for r in rows if r["variant"] == variant and "skipped" not in r]
        if not vals:
            continue
        axes[0].scatter([r["seconds"] for r in vals], [r["chamfer_area"] for r in vals], label=variant)
        with_2d = [r for r in vals if r["psnr"] is not None]
        axes[1].scatter([r["seconds"] for r in with_2d], [r["psnr"] for r in with_2d], label=variant)
    axes[0].set(xlabel="time (s)", ylabel="Chamfer (area, lower is better)", xscale="symlog")
    axes[1].set(xlabel="time (s)", ylabel="PSNR held-out (dB)", xscale="symlog")
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------
# Command line (``orbitmesh bench`` and ``python benchmarks/gso.py``).


def add_arguments(p: argparse.ArgumentParser) -> None:
    from recon.eval.realism import REALISM_LEVELS

    p.add_argument("sources", nargs="+", help="GSO root(s), GSO object folders, mesh files, globs, or offline "
                                              "object names (demo, duck, bunny, soccerball, sphere, torus, ...)")
    p.add_argument("-o", "--out", type=Path, default=Path("out/bench"), help="results folder (default out/bench)")
    p.add_argument("-n", "--count", type=int, default=0, help="pick this many objects with --seed (0: all)")
    p.add_argument("--preset", default="fast", help="pipeline preset (default fast)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a pipeline config value (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pick, the perturbations and the pipeline")
    p.add_argument("--size", type=int, default=256, help="input orbit side in pixels (default 256; SV3D 576)")
    p.add_argument("--realism", choices=list(REALISM_LEVELS), default="none",
                   help="generated-view imperfections of the input orbit (default none)")
    p.add_argument("--rgb", action="store_true",
                   help="input frames RGB on white (masks from the background colour, as raw SV3D frames) "
                        "instead of RGBA")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated ablation rows (default all: {','.join(VARIANTS)})")
    p.add_argument("--sds-model", default="", metavar="MODEL",
                   help="SV3D_p (diffusers folder or hub id) for the +SDS variant (default: that row is skipped)")
    p.add_argument("--workers", type=int, default=1, help="objects in parallel local processes (default 1)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run each object as a Ray task on this cluster ('local' starts one; needs the ray extra)")


def run_from_args(args: argparse.Namespace) -> dict[str, Path]:
    from recon.errors import ConfigError

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ConfigError(f"--variants: {','.join(unknown) or 'empty'} (choose from {', '.join(VARIANTS)})")
    settings = BenchSettings(preset=args.preset, overrides=list(args.overrides), size=args.size,
                             realism=args.realism, rgb=args.rgb, variants=variants, seed=args.seed,
                             sds_model=args.sds_model)
    settings.pipeline_config()  # a bad preset or override fails here, before any work
    objects = discover_objects(list(args.sources), args.count, args.seed)
    log.info("benchmark: %d objects (%s), key %s", len(objects), ", ".join(o.name for o in objects), settings.key())
    start = time.perf_counter()
    results = run_all(objects, settings, args.out, args.workers, args.ray)
    files = write_reports(results, settings, args.out)
    log.info("benchmark: %d objects in %.0f s", len(objects), time.perf_counter() - start)
    return files
