"""The only place where stages meet: orbit in, artifacts out, in one direction.

Stages so far: ``data`` (load and check the orbit; write its summary and contact sheet) and ``coarse``
(fit the radiance field, extract ``coarse.ply``). Each later stage adds one step to ``run`` and its
artifact to ``RunResult``. A finished stage's artifact is reused when the run folder already holds it
for the same configuration, and an interrupted coarse fit resumes from its last checkpoint.
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
from recon.types import CoarseField, Mesh, Orbit

log = logging.getLogger(__name__)

STAGES = ("data", "coarse")
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


def run(cfg: PipelineConfig, orbit_path: str | Path, out_dir: str | Path, until: str = STAGES[-1]) -> RunResult:
    """Run the pipeline on the orbit at ``orbit_path``, writing into ``out_dir``.

    Args:
        cfg: the resolved configuration (written to ``out_dir/config.yaml``).
        orbit_path: an orbit folder, a video or a transforms.json.
        out_dir: output folder (created).
        until: last stage to run.
    """
    if until not in STAGES:
        raise ValueError(f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    files = {"config": write_text(out / "config.yaml", config_to_yaml(cfg))}

    orbit = load_orbit(orbit_path, cfg.data).to(device)
    files.update(run_data_stage(orbit.to("cpu"), out))
    metrics: dict[str, object] = {"frames": len(orbit), "size": orbit.width, "device": str(device)}
    result = RunResult(out_dir=out, orbit=orbit, files=files, metrics=metrics)

    if STAGES.index(until) >= STAGES.index("coarse"):
        run_coarse_stage(cfg, result)

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
