"""The only place where stages meet: orbit in, artifacts out, in one direction.

Stages so far: ``data`` (load and check the orbit; write its summary and contact sheet), ``coarse``
(fit the radiance field, extract ``coarse.ply``) and ``refine`` (DMTet with SG lighting and an albedo
field -> ``refined.ply`` and the reloadable ``RefinedAsset``). Each later stage adds one step to ``run``
and its artifact to ``RunResult``. A finished stage's artifact is reused when the run folder already holds
it for the same configuration, and an interrupted fit resumes from its last checkpoint. ``from_stage``
recomputes from the named stage on, reading the earlier stages' saved results from the run folder.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recon.config import PipelineConfig, config_to_dict, config_to_yaml
from recon.data.orbit import load_orbit, orbit_json_dict, transforms_dict
from recon.data.report import contact_sheet, orbit_summary
from recon.io import write_json, write_text
from recon.types import CoarseField, Mesh, Orbit, RefinedAsset

log = logging.getLogger(__name__)

STAGES = ("data", "coarse", "refine")
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

    if wanted("coarse"):
        if from_stage is not None and not forced("coarse"):
            result.coarse_mesh = load_saved_mesh(out / "coarse.ply", "coarse")
        else:
            run_coarse_stage(cfg, result)
    if wanted("refine"):
        run_refine_stage(cfg, result, force=forced("refine"))

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
    mesh, stats = extract_mesh(cfg.extract, field, result.orbit.to("cpu"))
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
        asset = fit_refined(cfg.refine, result.orbit, result.coarse_mesh, seed=cfg.seed, checkpoint=train_ckpt)
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
