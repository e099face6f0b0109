"""Typed configuration: dataclasses loaded from TOML presets, with dotted overrides.

A preset file may set any subset of keys; the rest keep the dataclass defaults. Unknown keys and
wrong types are errors naming the file, the key and the expected type. Overrides such as
``train.iterations=500`` are parsed as TOML values and checked the same way.
"""
from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from core.errors import UserError
from core.paths import PRESETS_DIR


@dataclass
class BodyConfig:
    """Which body model drives the avatar."""

    model: str = ""  # path to a SMPL-X-format .npz; "" = PERSONA_SMPLX_MODEL env var, else embedded
    num_betas: int = 10
    num_expression: int = 50


@dataclass
class PrepConfig:
    """Photo preprocessing (mask, keypoints, SMPL-X fit, albedo)."""

    max_side: int = 2048  # photos larger than this (pixels) are downscaled first
    crop_size: int = 512  # side of the square person crop used for training (pixels)
    crop_margin: float = 0.1  # margin around the person as a fraction of its height
    grabcut: bool = True
    fit_iterations: list[int] = field(default_factory=lambda: [60, 120, 60])  # camera, body, hands/face
    # Weight of person-mask pixels the fitted body leaves uncovered, against 1 for body outside the mask. The
    # mask is the dressed person: at 1 loose clothes pulled the bare shape wider (messi5: betas[2] 2.3, a
    # paunch seen from the side). Against ground truth on 6 dressed synthetic people
    # (benchmarks/results/fit_truth_uncovered.md), 1 -> 0.2: shape error 0.95 -> 0.72 cm, misregistration
    # 0.74 -> 0.68 % of height (90th percentile 1.40 -> 1.19), bone angles 9.3 -> 8.2 deg, bare-body IoU
    # 0.85 -> 0.91. Set 1 for tight clothing.
    silhouette_uncovered: float = 0.2


@dataclass
class FramesConfig:
    """Generated training frames (re-posed photo-textured body along driving motions)."""

    motions: list[str] = field(default_factory=lambda: ["idle", "walk_in_place", "wave", "turn_around", "dance", "talk"])
    num_generated: int = 120
    resolution: int = 512  # pixels, square
    camera_distance: float = 3.0  # metres
    # Photo-only steps before the frames are rendered, so that they show the photo's clothed
    # silhouette and learned colours rather than the bare fitted body.
    warmup_iterations: int = 200


@dataclass
class AvatarConfig:
    """Gaussian avatar: count, triplane and pose MLP."""

    num_gaussians: int = 60000  # reached by subdividing the body mesh, then subsampling
    init_scale: float = 0.45  # initial isotropic std-dev, as a fraction of the mean edge length at each Gaussian
    triplane_channels: int = 32
    triplane_resolution: int = 128
    triplane_extent: float = 2.0  # metres, side of the cube the planes cover
    mlp_width: int = 128
    mlp_layers: int = 3
    offset_scale: float = 0.01  # metres, multiplies the MLP output
    skinning_grid: int = 64  # cells per side of the diffused skinning volume


@dataclass
class SamplingConfig:
    """Balanced sampling and the seam boundary."""

    photo_share: float = 0.5  # fraction of draws that pick the photo (0.5 = as often as all generated frames)
    seam_threshold: float = 0.02
    seam_dilate: float = 0.015  # fraction of the person's height in pixels
    boundary_image_weight: float = 0.1  # photo image-loss weight on the seam boundary
    # Photo registration (0 = off): the first ``register_photo_at`` of the steps draw the other frames only;
    # then ``register_steps`` extra steps fit the photo's orientation, body pose and shift to the avatar those
    # frames taught (the avatar held still; image and mask terms), and the photo joins in that pose. The fit
    # from keypoints misplaces bones by several degrees, and every colour the photo teaches lands where its
    # pose puts it. Not done with only our offline generator's frames, which come from that fit
    # (core.trainer.registration_window). Chosen on two synthetic people outside the benchmark's (full method
    # +1.9 dB on novel poses); on the benchmark's six, +1.5 dB (README "Quality").
    register_photo_at: float = 0.3
    register_steps: int = 60


@dataclass
class FrameLossWeights:
    """Loss weights for one frame type (the photo, or generated frames)."""

    image: float = 1.0  # 0.8 L1 + 0.2 (1 - SSIM) on the base render
    image_refined: float = 0.1  # same on the refined render (with pose offsets)
    mask: float = 1.0
    depth: float = 0.01  # scale-invariant, on min-max normalised depth
    normal: float = 1.0  # L1 + (1 - cos)
    part_seg: float = 1.0  # L1 on part-segmentation colours
    albedo: float = 0.0  # image loss against the albedo image
    hand_mask: float = 0.0


@dataclass
class LossConfig:
    """Geometry-weighted optimisation: per-frame-type weights and regularisers."""

    ssim_weight: float = 0.2
    photo: FrameLossWeights = field(
        default_factory=lambda: FrameLossWeights(
            image=1.0, image_refined=0.1, mask=1.0, depth=0.001, normal=0.1, part_seg=0.1, albedo=0.1, hand_mask=0.0
        )
    )
    generated: FrameLossWeights = field(
        default_factory=lambda: FrameLossWeights(
            image=1.0, image_refined=0.1, mask=1.0, depth=0.01, normal=1.0, part_seg=1.0, albedo=0.0, hand_mask=50.0
        )
    )
    laplacian_offsets: float = 1e6
    laplacian_offsets_face_hands: float = 1e7
    laplacian_refined_offsets: float = 1e5
    laplacian_scales: float = 1e6
    laplacian_colors: float = 0.1
    # Gaussians seen edge-on in the photo shrink to sharpen its silhouette (median 0.67x their start on
    # messi5, a third below 0.5x) and leave see-through gaps in every other view. A squared hinge on
    # log(scale / start) below log(scale_floor) keeps them covering the surface. On by default since
    # session 13: 600-step runs on 2 synthetic people gained 0.05-0.15 dB on novel poses, novel views and
    # the photo's view (benchmarks/results/quality_preview_quick_oracle-drift_s13_600_floor*.md), and on
    # messi5 the body's pixels under alpha < 0.9 around an A-pose turntable went 2.1 % -> 1.0 % (the dotted
    # forearms are gone) for -0.3 dB in the photo's view. The paper preset leaves it off (not in PERSONA).
    scale_floor: float = 0.5
    scale_floor_weight: float = 10.0
    # Its mirror image: the same hinge on log(scale / start) above log(scale_ceiling). Off by default. On messi5
    # (standard preset, 1500 steps) hand, hair and hem Gaussians grow to 7-14x their start, and seen from the photo
    # the raised hand wears a translucent halo ~14 cm across. A 4x ceiling (weight 10) shrank that halo (848 -> 582
    # pixels of alpha > 0.05 outside the mask) but did not remove it, and cost 2.2 dB in the photo's view
    # (25.15 -> 22.93), nearly all of it in the hair and the shorts, whose volume those large Gaussians carry;
    # on 2 synthetic people (preview, 600 steps) it was neutral (novel poses 22.60 -> 22.61 dB). A hard bound on
    # the hands alone (OptimConfig.hand_scale_max, on by default) does what this was for.
    scale_ceiling: float = 4.0
    scale_ceiling_weight: float = 0.0
    # With optim.lr_photo_pose: sum of squares of the photo's pose correction (radians). Adam moves
    # every parameter at about its learning rate, so joints the photo says little about would otherwise
    # wander as far as those it corrects.
    photo_pose_prior: float = 1.0
    # The same while registering the photo (sampling.register_photo_at): the avatar holds still then, so the
    # image pins the pose down without it.
    register_pose_prior: float = 0.0


@dataclass
class OptimConfig:
    """Adam with per-group learning rates and a step decay."""

    lr_offsets: float = 1e-3
    lr_triplane: float = 1e-3
    lr_mlp: float = 1e-3
    lr_scales: float = 1e-2
    lr_colors: float = 1e-2
    lr_part_colors: float = 1e-2
    lr_smplx: float = 1e-3
    lr_smplx_hands: float = 1e-4
    # the photo's orientation and body pose refined in training (0 = kept as fitted; off: with prep's fit the
    # correction stayed under 0.4 degrees per joint and moved no score beyond noise, see README)
    lr_photo_pose: float = 0.0
    lr_register: float = 0.01  # the photo's pose and shift while it is registered (sampling.register_photo_at)
    eps: float = 1e-15
    decay_at: float = 0.75  # fraction of training after which learning rates are divided
    decay_factor: float = 0.1
    # After each step the hands' Gaussians are held to at most this multiple of their start scale (0 = no limit;
    # off in the paper preset). The generated frames' hand-mask term grows some to 10x and more, and their tails
    # show as a translucent halo round the hand. On messi5 (standard preset, 1500 steps) 4x took the halo away
    # (alpha > 0.05 outside the photo's mask: 848 -> 391 pixels) and the photo's view gained 0.2 dB
    # (25.15 -> 25.35); on 2 synthetic people (preview, 600 steps) no hand got past 4x, so nothing changed.
    hand_scale_max: float = 4.0


@dataclass
class TrainConfig:
    """Training schedule."""

    iterations: int = 3000
    batch_size: int = 1
    seed: int = 0
    render_size: int = 512  # pixels, square training renders
    checkpoint_every: int = 500
    snapshot_every: int = 10
    # Colour behind the avatar while training: "random" (a new uniform colour each step, the
    # targets composited over it) keeps semi-transparent edge Gaussians from learning the backdrop;
    # on a fixed black one they darken and show as dark rims on any other background.
    background: str = "random"  # random | black | white
    # Where training runs: "auto" picks CUDA when a GPU and gsplat (its rasterizer) are there and
    # render.backend allows it, else the CPU; "cuda" insists (an error without a GPU or gsplat).
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class RenderConfig:
    """Rasterizer choice."""

    backend: str = "auto"  # auto | cpu | gsplat
    rasterize_mode: str = "antialiased"  # classic | antialiased (Mip-Splatting 2D filter)
    eps2d: float = 0.1  # the 2D filter kernel (PERSONA uses 0.1)


@dataclass
class AblationConfig:
    """Switches for the method's parts, for benchmarks."""

    balanced_sampling: bool = True
    geometry_weighting: bool = True
    pose_offsets: bool = True


@dataclass
class ExportConfig:
    """Defaults for turntables and animations."""

    resolution: int = 512
    frames: int = 120
    fps: int = 30
    elevation: float = 0.0  # degrees
    distance: float = 3.0  # metres
    background: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    transparent: bool = False  # RGBA frames (straight alpha) instead of the background: .webm or PNGs


@dataclass
class Config:
    """A whole preset."""

    name: str = "standard"
    description: str = ""
    body: BodyConfig = field(default_factory=BodyConfig)
    prep: PrepConfig = field(default_factory=PrepConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    avatar: AvatarConfig = field(default_factory=AvatarConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def preset_names() -> list[str]:
    """Names of the presets shipped in ``presets/`` (without ``.toml``), sorted."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def preset_path(name_or_path: str | Path) -> Path:
    """Resolve a preset name (``preview``) or a path to a ``.toml`` file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        return candidate
    path = PRESETS_DIR / f"{name_or_path}.toml"
    if not path.exists():
        raise UserError(f"unknown preset '{name_or_path}'; choose one of: {', '.join(preset_names())} or give a .toml path")
    return path


def load_preset(name_or_path: str | Path = "standard", overrides: list[str] | None = None) -> Config:
    """Load a preset by name or path, then apply ``key.sub=value`` overrides."""
    path = preset_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("preset file not found", path) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"not valid TOML: {err}", path) from None
    data.setdefault("name", path.stem)
    config = build_dataclass(Config, data, source=str(path))
    validate(config, source=str(path))
    for item in overrides or []:
        apply_override(config, item)
    validate(config, source="--set " + " ".join(overrides or []))
    return config


# Keys whose value must be one of a few words.
CHOICES = {
    "render.backend": ("auto", "cpu", "gsplat"),
    "render.rasterize_mode": ("classic", "antialiased"),
    "train.background": ("random", "black", "white"),
    "train.device": ("auto", "cpu", "cuda"),
}


def validate(config: Config, source: str) -> None:
    """Check values that a type alone cannot: word choices and positive sizes."""
    for dotted, allowed in CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(config, section), key)
        if value not in allowed:
            raise UserError(f"key '{dotted}' must be one of {', '.join(allowed)}, got {value!r}", source)
    positive = {
        "train.iterations": config.train.iterations,
        "train.render_size": config.train.render_size,
        "avatar.num_gaussians": config.avatar.num_gaussians,
        "frames.resolution": config.frames.resolution,
        "prep.crop_size": config.prep.crop_size,
        "export.resolution": config.export.resolution,
        "export.fps": config.export.fps,
    }
    for dotted, value in positive.items():
        if value <= 0:
            raise UserError(f"key '{dotted}' must be positive, got {value}", source)
    for dotted, value in (("sampling.photo_share", config.sampling.photo_share),
                          ("sampling.register_photo_at", config.sampling.register_photo_at)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"key '{dotted}' must be in [0, 1), got {value}", source)
    if config.sampling.register_steps < 0:
        raise UserError(f"key 'sampling.register_steps' must be 0 or more, got {config.sampling.register_steps}",
                        source)
    if not 0.0 <= config.prep.silhouette_uncovered <= 1.0:
        raise UserError(f"key 'prep.silhouette_uncovered' must be in [0, 1], got {config.prep.silhouette_uncovered}",
                        source)


def build_dataclass(cls: type, data: dict[str, Any], source: str, prefix: str = "", base: Any = None) -> Any:
    """Build dataclass ``cls`` from a TOML table, checking keys and types recursively. Keys the table leaves
    out keep their values in ``base`` (default: ``cls()``), so a nested table changes only what it names:
    ``[loss.generated]`` with ``image = 0.1`` keeps the generated frames' other weights, not the plain
    ``FrameLossWeights`` defaults."""
    base = cls() if base is None else base
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise UserError(f"unknown key '{dotted}' (known here: {', '.join(sorted(known))})", source)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            kwargs[key] = build_dataclass(hints[key], value, source, prefix=f"{dotted}.", base=getattr(base, key))
        else:
            kwargs[key] = _checked_value(hints[key], value, source, dotted)
    return dataclasses.replace(base, **kwargs)


def _checked_value(hint: Any, value: Any, source: str, dotted: str) -> Any:
    """Check ``value`` against a field's type hint; nested dataclasses are built from tables."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"key '{dotted}' must be a table ([{dotted}])", source)
        return build_dataclass(hint, value, source, prefix=f"{dotted}.")
    origin = typing.get_origin(hint)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise UserError(f"key '{dotted}' must be a list of {_type_name(item_hint)}", source)
        return [_checked_value(item_hint, v, source, f"{dotted}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise UserError(f"key '{dotted}' must be {_type_name(hint)}, got {type(value).__name__} {value!r}", source)
    return value


def _type_name(hint: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def apply_override(config: Config, item: str) -> None:
    """Apply one ``section.key=value`` override in place (value in TOML syntax; bare words are strings)."""
    source = f"--set {item}"
    if "=" not in item:
        raise UserError("override must look like section.key=value", source)
    dotted, raw = (s.strip() for s in item.split("=", 1))
    parts = dotted.split(".")
    target: Any = config
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(target) or part not in {f.name for f in dataclasses.fields(target)}:
            raise UserError(f"unknown key '{'.'.join(parts[:depth + 1])}'", source)
        if depth < len(parts) - 1:
            target = getattr(target, part)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as cpu or preview
    hint = typing.get_type_hints(type(target))[parts[-1]]
    if dataclasses.is_dataclass(hint):
        raise UserError(f"'{dotted}' is a section; set one of its keys instead", source)
    setattr(target, parts[-1], _checked_value(hint, value, source, dotted))


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for manifests and saving presets)."""
    return dataclasses.asdict(config)


def dumps_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Serialise a nested dict of scalars, lists and tables as TOML (enough for our configs)."""
    scalars = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    parts = ["\n".join(scalars)] if scalars else []
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            parts.append(f"[{name}]\n" + dumps_toml(value, prefix=f"{name}.").rstrip("\n"))
    return "\n\n".join(parts).strip() + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def save_preset(config: Config, path: str | Path) -> None:
    """Write a config as a preset TOML file atomically."""
    from core.io.atomic import write_text_atomic

    write_text_atomic(path, dumps_toml(config_to_dict(config)))
