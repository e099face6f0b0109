"""Avatar bundle folder: everything needed to render the avatar in any pose, without pickle.

```
avatar/
  manifest.json        format, body model (source, file name, vertex count), avatar config,
                       subject shape, training summary
  avatar.safetensors   every tensor of the Avatar (parameters and buffers, incl. the upsampling
                       matrix as COO indices/values)
```
The body model itself is not copied: the embedded one ships with the package, and a user's
licensed SMPL-X stays where it is (the manifest records which one, and loading checks it).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from core.avatar.avatar import Avatar, AvatarTopology
from core.body import PART_PALETTE, BodyModel
from core.config import AvatarConfig, build_dataclass
from core.errors import UserError
from core.io.atomic import atomic_path, write_text_atomic

BUNDLE_FORMAT = "persona-avatar/1"
MANIFEST = "manifest.json"
TENSORS = "avatar.safetensors"


def avatar_tensors(avatar: Avatar) -> dict[str, torch.Tensor]:
    """All of an avatar's tensors, contiguous, with the sparse upsampling split into indices/values."""
    tensors = {k: v.detach().contiguous() for k, v in avatar.state_dict().items()}
    up = avatar.upsample.coalesce()
    tensors["upsample_indices"] = up.indices().contiguous()
    tensors["upsample_values"] = up.values().contiguous()
    tensors["upsample_shape"] = torch.tensor(list(up.shape))
    return tensors


def save_bundle(folder: str | Path, avatar: Avatar, body: BodyModel, subject_params: dict[str, np.ndarray],
                summary: dict | None = None) -> None:
    """Write the bundle folder atomically."""
    manifest = {
        "format": BUNDLE_FORMAT,
        "body_model": {"source": body.source, "file": body.path.name, "num_vertices": body.num_vertices,
                       "num_betas": body.num_betas, "num_expression": body.num_expression},
        "avatar_config": dataclasses.asdict(avatar.config),
        "num_gaussians": avatar.num_gaussians,
        "subject": {k: np.asarray(v, np.float32).reshape(-1).tolist() for k, v in subject_params.items()},
        "summary": summary or {},
    }
    # The folder may also hold the reconstruction's work files, so files are replaced one by one;
    # the manifest goes last, so a folder with a manifest always has its tensors.
    folder = Path(folder)
    with atomic_path(folder / TENSORS) as tmp:
        save_file(avatar_tensors(avatar), str(tmp))
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2))


def read_manifest(folder: str | Path) -> dict:
    """The bundle's manifest, checked for format; one-line errors for anything else."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise UserError("not an avatar bundle (no manifest.json); make one with `persona-studio reconstruct`", folder)
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"corrupt manifest: {err}", path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise UserError(f"unsupported avatar format {found!r} (this version reads {BUNDLE_FORMAT})", path)
    return manifest


def load_bundle(folder: str | Path, body: BodyModel | None = None) -> tuple[Avatar, BodyModel, dict]:
    """Load (avatar, body model, manifest). The body model must match the one the avatar was made with."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    body = body or BodyModel.load()
    expected = manifest["body_model"]["num_vertices"]
    if body.num_vertices != expected:
        raise UserError(f"avatar was made with a {expected}-vertex body model ({manifest['body_model']['file']}), "
                        f"but the body model in use has {body.num_vertices}; pass the same --body-model", folder)
    try:
        tensors = load_file(str(folder / TENSORS))
    except FileNotFoundError:
        raise UserError(f"missing {TENSORS}", folder) from None
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for bad files
        raise UserError(f"corrupt {TENSORS} ({type(err).__name__})", folder) from None
    config = build_dataclass(AvatarConfig, manifest["avatar_config"], source=str(folder / MANIFEST))
    avatar = avatar_from_tensors(tensors, body, config, folder)
    return avatar, body, manifest


def avatar_from_tensors(tensors: dict[str, torch.Tensor], body: BodyModel, config: AvatarConfig,
                        source: Path) -> Avatar:
    """Rebuild an Avatar from ``avatar_tensors`` output (bit-exact parameters)."""
    try:
        shape = tuple(int(s) for s in tensors["upsample_shape"])
        upsample = torch.sparse_coo_tensor(tensors["upsample_indices"], tensors["upsample_values"], shape,
                                           check_invariants=True).coalesce()
        topology = AvatarTopology(upsample=upsample, faces=tensors["faces"], weights=tensors["weights"],
                                  part_labels=tensors["part_labels"].numpy(), rigid=tensors["rigid"])
        avatar = Avatar(topology, tensors["shaped_zero"], tensors["star_transforms"], body.parents.cpu().numpy(),
                        tensors["colors"], torch.as_tensor(PART_PALETTE), config)
        state = {k: v for k, v in tensors.items() if k in avatar.state_dict()}
        avatar.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"avatar tensors do not fit together ({type(err).__name__}: {str(err)[:120]})", source) from None
    return avatar
