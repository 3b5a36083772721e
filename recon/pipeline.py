"""The only place where stages meet: orbit in, artifacts out, in one direction.

Stages: ``data`` (load and check the orbit; write its summary and contact sheet), ``coarse`` (fit the
radiance field, extract ``coarse.ply``), ``refine`` (DMTet with SG lighting and an albedo field ->
``refined.ply`` and the reloadable ``RefinedAsset``) and ``export`` (decimate, unwrap, bake -> ``asset.glb``
and the other formats asked for). Each stage adds one step to ``run``; ``export_run`` re-exports a
finished run folder with other export options. A finished stage's artifact is reused when the run folder
already holds it for the same configuration, and an interrupted fit resumes from its last checkpoint.
``from_stage`` recomputes from the named stage on, reading the earlier stages' saved results from the
run folder.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon.config import PipelineConfig, config_to_dict, config_to_yaml
from recon.data.orbit import load_orbit, orbit_json_dict, transforms_dict
from recon.data.report import contact_sheet, orbit_summary
from recon.io import write_json, write_text
from recon.types import CoarseField, Mesh, Orbit, RefinedAsset

log = logging.getLogger(__name__)

STAGES = ("data", "coarse", "refine", "export")
"""Stages in the order they run; ``--until`` stops after the named one."""


@dataclass
class RunResult:
    """What a run produced.

    Attributes:
        out_dir: the run's output folder.
        orbit: the loaded orbit.
        files: produced files by role ('config', 'contact_sheet', ...).
        metrics: numbers worth reporting (also written to ``metrics.json``).
    """

    out_dir: Path
    orbit: Orbit
    coarse_field: CoarseField | None = None
    coarse_mesh: Mesh | None = None
    refined: RefinedAsset | None = None
    files: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, object] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from recon.errors import ConfigError

        raise ConfigError("device: 'cuda' was asked for but torch sees no CUDA device (use 'auto' or 'cpu')")
    return torch.device(name)


def run_data_stage(orbit: Orbit, out_dir: Path) -> dict[str, Path]:
    """Write what the tool understood of the orbit: summary JSON, contact sheet, orbit/transforms JSON."""
    files = {
        "orbit_summary": write_json(out_dir / "orbit_summary.json", orbit_summary(orbit)),
        "contact_sheet": contact_sheet(orbit, out_dir / "previews" / "orbit_contact_sheet.png"),
    }
    names = orbit.frame_names or [f"{i:03d}.png" for i in range(len(orbit))]
    source = Path(orbit.source)
    rel = [str((source if source.is_dir() else source.parent) / n) for n in names]
    files["transforms"] = write_json(out_dir / "transforms.json", transforms_dict(orbit, rel))
    if orbit.is_orbit:
        files["orbit_json"] = write_json(out_dir / "orbit.json", orbit_json_dict(orbit))
    return files


def run(cfg: PipelineConfig, orbit_path: str | Path, out_dir: str | Path, until: str = STAGES[-1],
        from_stage: str | None = None) -> RunResult:
    """Run the pipeline on the orbit at ``orbit_path``, writing into ``out_dir``.

    Args:
        cfg: the resolved configuration (written to ``out_dir/config.yaml``).
        orbit_path: an orbit folder, a video or a transforms.json.
        out_dir: output folder (created).
        until: last stage to run.
        from_stage: recompute from this stage on; earlier stages' results are read from ``out_dir``
            (``coarse.ply`` for 'refine'). None reuses whatever matches the configuration.
    """
    if until not in STAGES:
        raise ValueError(f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
    if from_stage is not None and from_stage not in STAGES:
        raise ValueError(f"unknown stage {from_stage!r}; stages: {', '.join(STAGES)}")
    if from_stage is not None and STAGES.index(from_stage) > STAGES.index(until):
        raise ValueError(f"--from-stage {from_stage} comes after --until {until}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    files = {"config": write_text(out / "config.yaml", config_to_yaml(cfg))}

    orbit = load_orbit(orbit_path, cfg.data).to(device)
    files.update(run_data_stage(orbit.to("cpu"), out))
    metrics: dict[str, object] = {"frames": len(orbit), "size": orbit.width, "device": str(device)}
    result = RunResult(out_dir=out, orbit=orbit, files=files, metrics=metrics)

    def wanted(stage: str) -> bool:
        return STAGES.index(until) >= STAGES.index(stage)

    def forced(stage: str) -> bool:
        return from_stage is not None and STAGES.index(stage) >= STAGES.index(from_stage)

    from recon.eval.resources import peak_memory

    # Wall time and peak resident memory (growth over the stage's start) of each stage, in metrics.json.
    resources: dict[str, dict[str, float]] = {}
    metrics["resources"] = resources
    if wanted("coarse"):
        with peak_memory(0.005) as resources["coarse"]:
            if from_stage is not None and not forced("coarse"):
                result.coarse_mesh = load_saved_mesh(out / "coarse.ply", "coarse")
            else:
                run_coarse_stage(cfg, result)
    if wanted("refine"):
        with peak_memory(0.005) as resources["refine"]:
            run_refine_stage(cfg, result, force=forced("refine"))
    if wanted("export"):
        source = result.refined if result.refined is not None else result.coarse_mesh
        assert source is not None
        with peak_memory(0.005) as resources["export"]:
            files_out, export_metrics = run_export_stage(cfg, source, out)
        files.update(files_out)
        metrics["export"] = export_metrics

    files["metrics"] = write_json(out / "metrics.json", metrics)
    return result


def _stage_key(*sections: object) -> str:
    """A short hash of the config sections a stage depends on (to tell whether a saved artifact is reusable)."""
    import hashlib
    import json

    blob = json.dumps([config_to_dict(s) for s in sections], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def run_coarse_stage(cfg: PipelineConfig, result: RunResult) -> None:
    """Fit (or resume, or reuse) the coarse field, extract ``coarse.ply``, write previews."""
    from recon.coarse.train import fit_coarse_field
    from recon.extract import extract_mesh
    from recon.previews import coarse_previews

    out = result.out_dir
    key = _stage_key(cfg.seed, cfg.data, cfg.coarse)
    ckpt = out / "checkpoints" / f"coarse_field_{key}.pt"
    field = None
    if ckpt.is_file():
        saved = CoarseField.load(ckpt)
        if saved.step >= cfg.coarse.steps:
            log.info("reusing the coarse field in %s", ckpt)
            field = saved
    if field is None:
        field = fit_coarse_field(cfg.coarse, result.orbit, seed=cfg.seed, checkpoint=ckpt)
    # The extracted mesh is kept beside the field under a key that also covers the extraction settings,
    # so a rerun (a later --until, the benchmark's stage-by-stage runs) does not extract it again.
    mesh_key = _stage_key(key, cfg.extract, hashlib_of(ckpt) if ckpt.is_file() else "unsaved")
    saved_mesh, saved_stats = out / "checkpoints" / f"coarse_mesh_{mesh_key}.ply", \
        out / "checkpoints" / f"coarse_mesh_{mesh_key}.json"
    if saved_mesh.is_file() and saved_stats.is_file():
        import json

        mesh, stats = Mesh.load(saved_mesh), json.loads(saved_stats.read_text())
        log.info("reusing the coarse mesh in %s", saved_mesh)
    else:
        mesh, stats = extract_mesh(cfg.extract, field, result.orbit.to("cpu"))
        mesh.save_ply(saved_mesh)
        write_json(saved_stats, stats)
        mesh = Mesh.load(saved_mesh)  # 8-bit colours, as every later run will read it
    mesh.save_ply(out / "coarse.ply")
    result.coarse_field, result.coarse_mesh = field, mesh
    result.files["coarse_checkpoint"] = ckpt
    result.files["coarse_mesh"] = out / "coarse.ply"
    result.files.update(coarse_previews(result.orbit.to("cpu"), field, mesh, out / "previews"))
    result.metrics["coarse"] = {**field.metrics, **stats}


def load_saved_mesh(path: Path, stage: str) -> Mesh:
    """A mesh an earlier run saved (for ``--from-stage``); a clear error when it is not there."""
    from recon.errors import InputError

    if not path.is_file():
        raise InputError(path, f"no saved {stage} result here; run without --from-stage first")
    mesh = Mesh.load(path)
    if len(mesh.faces) == 0:
        raise InputError(path, f"the saved {stage} mesh is empty")
    return mesh


def run_refine_stage(cfg: PipelineConfig, result: RunResult, force: bool = False) -> None:
    """Refine the coarse mesh (or reuse a finished refinement of the same configuration); write
    ``refined.ply`` and the refinement previews."""
    from recon.previews import refine_previews
    from recon.refine.train import fit_refined

    out = result.out_dir
    assert result.coarse_mesh is not None
    key = _stage_key(cfg.seed, cfg.data, cfg.coarse, cfg.extract, cfg.refine)
    if cfg.guidance.model:  # SDS changes the result; without a model the key stays what it was
        key = _stage_key(key, cfg.guidance)
    if force:
        # --from-stage: the coarse mesh may have changed under the same configuration.
        key = _stage_key(key, hashlib_of(out / "coarse.ply"))
    final = out / "checkpoints" / f"refined_{key}.pt"
    train_ckpt = out / "checkpoints" / f"refine_train_{key}.pt"
    asset = None
    if final.is_file() and not force:
        log.info("reusing the refined asset in %s", final)
        asset = RefinedAsset.load(final)
    if asset is None:
        if force:
            train_ckpt.unlink(missing_ok=True)
        hooks = []
        if cfg.guidance.model:
            from guidance.models import load_sv3d
            from guidance.sds import MaskedSDS

            models = load_sv3d(cfg.guidance, result.orbit.images.device)
            hooks.append(MaskedSDS(cfg.guidance, models, result.orbit))
            log.info("refine: soft-masked SDS with %s over the last %d steps", cfg.guidance.model,
                     cfg.guidance.sds_ramp_steps)
        asset = fit_refined(cfg.refine, result.orbit, result.coarse_mesh, seed=cfg.seed, checkpoint=train_ckpt,
                            extra_losses=hooks, centred_object=cfg.extract.centred_object)
        asset.save(final)
        train_ckpt.unlink(missing_ok=True)
    asset.mesh.save_ply(out / "refined.ply")
    result.refined = asset
    result.files["refined_asset"] = final
    result.files["refined_mesh"] = out / "refined.ply"
    result.files.update(refine_previews(result.orbit.to("cpu"), asset, out / "previews"))
    result.metrics["refine"] = asset.metrics


def hashlib_of(path: Path) -> str:
    """Content hash of a file (short)."""
    import hashlib

    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def _reference_render(source: RefinedAsset | Mesh, cameras) -> Tensor:
    """Unlit renders of what is being exported (the albedo field on the refined mesh, or vertex colours)."""
    from recon.previews import vertex_colored
    from recon.refine.render import render_asset
    from recon.render.views import render_views

    if isinstance(source, RefinedAsset):
        return render_asset(source, cameras, shaded=False)["rgb"]
    return render_views(vertex_colored(source, source.colors), cameras, supersample=2)[0]


def _color_source(source: RefinedAsset | Mesh):
    """world points [P, 3] -> sRGB [P, 3]: the albedo field, or the mesh's vertex colours at the closest point."""
    if isinstance(source, RefinedAsset):
        albedo = source.albedo.cpu()
        return lambda p: albedo.query(p)
    from recon.geometry.closest import ClosestPoint

    verts, faces, colors = source.verts.numpy(), source.faces.numpy(), source.colors.double().numpy()
    closest = ClosestPoint(verts, faces, k=8)

    def vertex_color(p: Tensor) -> Tensor:
        _, face, bary = closest.query(p.double().numpy())
        return torch.from_numpy((colors[faces[face]] * bary[..., None]).sum(1)).float()

    return vertex_color


def run_export_stage(cfg: PipelineConfig, source: RefinedAsset | Mesh, out: Path) -> tuple[dict[str, Path], dict]:
    """Decimate, unwrap and bake ``source`` (a refined asset, or a coarse mesh with vertex colours) and write
    ``asset.<format>`` for each format asked for; previews ``export.png`` (before | after export on held-out
    views) and ``turntable.mp4``. Returns the files written and the export's metrics."""
    from exporters.asset import export_textured
    from exporters.config import check_export_config
    from exporters.writers import write_asset
    from recon.eval.metrics import EvalConfig, heldout_cameras, psnr
    from recon.previews import export_previews, turntable_video
    from recon.render.mesh import load_render_mesh
    from recon.render.views import render_views

    ecfg = cfg.export
    check_export_config(ecfg)
    mesh = source.mesh if isinstance(source, RefinedAsset) else source
    if len(mesh.faces) == 0:
        from recon.errors import InputError

        raise InputError(out, "nothing to export: the reconstructed mesh is empty")
    start = time.perf_counter()
    textured = export_textured(ecfg, mesh.verts.cpu().numpy(), mesh.faces.cpu().numpy(), _color_source(source))
    files: dict[str, Path] = {}
    for fmt in ecfg.formats:
        written = write_asset(textured, out / f"asset.{fmt}", scale=ecfg.scale, up=ecfg.up)
        files[f"asset_{fmt}"] = written[-1]
    metrics: dict[str, object] = {**textured.stats, "source": "refined" if isinstance(source, RefinedAsset)
                                  else "coarse", "seconds": time.perf_counter() - start}

    # The written file, reloaded, against the result before export (unlit, held-out views).
    check_path = files.get("asset_glb") or files.get("asset_obj")
    if check_path is not None and (ecfg.eval_views > 0 or ecfg.turntable_frames > 0):
        exported = load_render_mesh(check_path)
        exported = replace(exported, verts=exported.verts / ecfg.scale) if ecfg.scale != 1.0 else exported
        if ecfg.up != "y" and check_path.suffix == ".obj":
            exported = None  # an OBJ in another frame: no comparison in ours
        if exported is not None and ecfg.eval_views > 0:
            cams = heldout_cameras(EvalConfig(views=ecfg.eval_views, view_size=256))
            before = _reference_render(source, cams)
            after = render_views(exported, cams, supersample=2)[0]
            metrics["psnr_vs_before_export"] = psnr(after, before)
            files.update(export_previews(before, after, out / "previews"))
        if exported is not None and ecfg.turntable_frames > 0:
            files["turntable"] = turntable_video(exported, out / "previews" / "turntable.mp4",
                                                 ecfg.turntable_frames, ecfg.turntable_size)
    log.info("export: %s in %.1f s", ", ".join(p.name for p in files.values()), time.perf_counter() - start)
    return files, metrics


def find_refined_asset(run_dir: Path) -> Path | None:
    """The most recently written refined asset of a run folder (``checkpoints/refined_*.pt``), if any."""
    candidates = sorted((run_dir / "checkpoints").glob("refined_*.pt"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def export_run(run_dir: str | Path, overrides: list[str] | None = None, out_dir: str | Path | None = None,
               source: str = "auto") -> tuple[dict[str, Path], dict]:
    """Re-export a finished run without fitting again.

    Args:
        run_dir: a folder ``orbitmesh fit`` wrote (its ``config.yaml`` is the base configuration).
        overrides: ``export.key=value`` strings (face budget, texture size, formats, ...).
        out_dir: where to write (default: ``run_dir``).
        source: 'refined', 'coarse', or 'auto' (the refined asset when the run has one).
    Raises:
        InputError: not a run folder, or the requested source is missing.
    """
    from recon.config import apply_overrides, load_config
    from recon.errors import InputError

    run = Path(run_dir)
    config_path = run / "config.yaml"
    if not config_path.is_file():
        raise InputError(run, "not an orbitmesh run folder (no config.yaml); run `orbitmesh fit` first")
    cfg = apply_overrides(load_config(config_path), overrides or [])
    out = Path(out_dir) if out_dir is not None else run
    refined_path = find_refined_asset(run) if source in ("auto", "refined") else None
    if refined_path is not None:
        chosen: RefinedAsset | Mesh = RefinedAsset.load(refined_path)
    elif source == "refined":
        raise InputError(run / "checkpoints", "no refined asset (refined_*.pt); run the refine stage first")
    else:
        chosen = load_saved_mesh(run / "coarse.ply", "coarse")
    files, metrics = run_export_stage(cfg, chosen, out)
    return files, metrics


def generate_views(cfg: PipelineConfig, image_path: str | Path, orbit_dir: str | Path, steps: int = 50,
                   size: int = 576, elevation_deg: float = 10.0, dynamic_amplitude_deg: float = 0.0,
                   generator=None) -> Path:
    """Image -> orbit folder: preprocess the image (object found by alpha or background, cropped, padded,
    white), generate 21 views, write frames + orbit.json + transforms.json. ``generator`` is any
    ``guidance.generate.ViewGenerator``; None loads SV3D from ``cfg.guidance.model``."""
    from guidance.generate import SamplingConfig, SV3DGenerator, generate_orbit, preprocess_image
    from guidance.models import load_sv3d

    seed_everything(cfg.seed)
    image = preprocess_image(image_path, size)  # a bad image fails before the model loads
    if generator is None:
        models = load_sv3d(cfg.guidance, resolve_device(cfg.device))
        generator = SV3DGenerator(models, SamplingConfig(steps=steps, size=size, cond_aug=cfg.guidance.cond_aug))
    return generate_orbit(generator, image, Path(orbit_dir), elevation_deg, dynamic_amplitude_deg, seed=cfg.seed)


def image_to_glb(cfg: PipelineConfig, image_path: str | Path, out_dir: str | Path, steps: int = 50, size: int = 576,
                 elevation_deg: float = 10.0, dynamic_amplitude_deg: float = 0.0, generator=None) -> RunResult:
    """Generate an orbit of the image (``OUT/orbit``), then fit and export into ``OUT`` (asset.glb), with
    soft-masked SDS during refinement when ``cfg.guidance.model`` is set. A rerun reuses the generated orbit."""
    out = Path(out_dir)
    orbit_dir = out / "orbit"
    if not (orbit_dir / "orbit.json").is_file():
        log.info("image-to-glb: generating 21 views of %s", Path(image_path).name)
        generate_views(cfg, image_path, orbit_dir, steps, size, elevation_deg, dynamic_amplitude_deg, generator)
    else:
        log.info("image-to-glb: reusing the generated orbit in %s", orbit_dir)
    return run(cfg, orbit_dir, out)
