"""Configuration: one dataclass per stage, composed into ``PipelineConfig``.

Presets are YAML files in ``configs/`` at the repository root. Loading is strict: an unknown key or a
value of the wrong type is a ``ConfigError`` naming the key and the file. Overrides come from the
command line as ``--set section.key=value`` (the value is parsed as YAML, then type-checked).

The dataclass defaults *are* the SV3D recipe; ``configs/default.yaml`` spells them out and a test keeps
the two identical. Every field carries a one-line docstring (the string literal right after it), which
``field_docs`` reads from the source so ``orbitmesh config`` can print it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from exporters.config import ExportConfig
from guidance.models import GuidanceConfig
from recon.coarse.config import CoarseConfig, ExtractConfig
from recon.errors import ConfigError
from recon.refine.config import RefineConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
"""Where the bundled presets live (the repository's ``configs/``; the project installs editable)."""


@dataclass
class DataConfig:
    """How orbit folders, videos and transforms.json are read (recon.data)."""

    mask_threshold: float = 0.05
    """A pixel is background when every channel is within this of the background colour (0..1)."""
    mask_open_px: int = 1
    """Radius in pixels of the morphological opening that removes speckle from derived masks."""
    min_component_frac: float = 0.001
    """Mask components smaller than this fraction of the image are dropped as noise."""
    max_hole_frac: float = 0.0005
    """Holes in a derived mask smaller than this fraction of the image are filled (real holes stay)."""
    alpha_threshold: float = 0.5
    """With an alpha channel, alpha above this counts as object in the binary mask."""
    soft_outline: bool = True
    """Derived masks: estimate the outline pixels' coverage from their colour (as alpha), not 0/1."""
    soft_outline_max_px: int = 4
    """Soft outline: widest outline (pixels) a blurred frame's is read over; chosen per frame (1: one ring)."""
    max_resolution: int = 0
    """Downsample frames whose longer side exceeds this many pixels (0 keeps the input size)."""


@dataclass
class PipelineConfig:
    """Everything one run needs; each stage reads only its own section."""

    seed: int = 0
    """Seed for torch, numpy and Python's random: the same seed gives the same result."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where tensors live: 'auto' takes CUDA when available, else the CPU."""
    data: DataConfig = field(default_factory=DataConfig)
    """Reading the orbit."""
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    """The coarse radiance field."""
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    """Marching cubes to the coarse mesh."""
    refine: RefineConfig = field(default_factory=RefineConfig)
    """DMTet refinement with SG lighting and an albedo field."""
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    """The diffusion model (SV3D) for soft-masked SDS during refinement and for image -> orbit."""
    export: ExportConfig = field(default_factory=ExportConfig)
    """Face budget, UV atlas, baked texture and the files written."""


# ---------------------------------------------------------------------------------------------------
# Documentation of fields, read from the source.


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of a config dataclass to the docstring written right after it."""
    source = textwrap.dedent(inspect.getsource(cls))
    class_def = ast.parse(source).body[0]
    assert isinstance(class_def, ast.ClassDef)
    docs: dict[str, str] = {}
    body = class_def.body
    for stmt, nxt in zip(body, [*body[1:], None], strict=True):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


# ---------------------------------------------------------------------------------------------------
# Type checking of YAML values against dataclass annotations.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` as type ``tp`` or raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    fail = ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise fail
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise fail
    if tp is type(None):
        if value is None:
            return None
        raise fail
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise fail
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail
        return _build(tp, value, where)
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")


def _build(cls: type, values: dict[str, Any], where: str, base: Any = None) -> Any:
    """Instantiate dataclass ``cls`` from ``values`` layered over ``base`` (or the defaults)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
    obj = base if base is not None else cls()
    updates = {}
    for key, value in values.items():
        key_where = f"{where}.{key}" if not where.endswith(":") else f"{where} {key}"
        current = getattr(obj, key)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            updates[key] = _build(hints[key], value, key_where, base=current)
        else:
            updates[key] = _coerce(value, hints[key], key_where)
    return dataclasses.replace(obj, **updates)


# ---------------------------------------------------------------------------------------------------
# Public API.


def preset_path(name_or_path: str | Path) -> Path:
    """Resolve a preset name ('fast') or a YAML path to an existing file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError(f"{candidate}: no such config file")
        return candidate
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    if not bundled.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"{bundled}: no preset named {name_or_path!r} (presets: {names})")
    return bundled


def load_config(preset: str | Path = "default", overrides: list[str] | None = None) -> PipelineConfig:
    """Load a preset strictly and apply ``section.key=value`` overrides.

    Args:
        preset: a preset name from ``configs/`` or a path to a YAML file.
        overrides: strings like ``"data.mask_threshold=0.1"``; values are parsed as YAML.
    Raises:
        ConfigError: unknown key, wrong type or unparsable file, naming the key and the file.
    """
    path = preset_path(preset)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    cfg = _build(PipelineConfig, values, f"{path}:")
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: PipelineConfig, overrides: list[str]) -> PipelineConfig:
    """Apply ``section.key=value`` strings to ``cfg`` (strictly typed); returns a new config."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. data.mask_threshold=0.1")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        nested: Any = value
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        cfg = _build(PipelineConfig, nested, "--set:", base=cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view of a config (tuples become lists) for YAML/JSON."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def config_to_yaml(cfg: Any, with_docs: bool = True) -> str:
    """YAML text of a config; with ``with_docs`` each key is preceded by its docstring as a comment."""
    lines: list[str] = []

    def emit(obj: Any, indent: str) -> None:
        docs = field_docs(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if with_docs and f.name in docs:
                lines.append(f"{indent}# {docs[f.name]}")
            if dataclasses.is_dataclass(value):
                lines.append(f"{indent}{f.name}:")
                emit(value, indent + "  ")
            else:
                dumped = yaml.safe_dump(config_to_dict(value), default_flow_style=True, width=10_000).strip()
                dumped = dumped.removesuffix("\n...").removesuffix("...").strip()
                lines.append(f"{indent}{f.name}: {dumped}")

    emit(cfg, "")
    return "\n".join(lines) + "\n"


def all_config_classes() -> list[type]:
    """Every config dataclass reachable from PipelineConfig (for documentation checks)."""
    seen: list[type] = []

    def walk(cls: type) -> None:
        if cls in seen:
            return
        seen.append(cls)
        for tp in typing.get_type_hints(cls).values():
            if dataclasses.is_dataclass(tp):
                walk(tp)

    walk(PipelineConfig)
    return seen
