"""``.persona``: an avatar bundle in one file, and loading an avatar from a folder or such a file.

A ``.persona`` file is a zip with exactly three members:

```
persona.json         {"format": "persona-file/1", "members": {name: {"bytes": n, "sha256": hex}}}
manifest.json        the bundle manifest (core.avatar.bundle, "persona-avatar/1")
avatar.safetensors   every avatar tensor (no pickle anywhere)
```
Loading never extracts anything to disk and trusts nothing in the archive: member names must be
exactly these (no paths, links or extras), declared sizes are bounded, members that would inflate
suspiciously (a zip bomb) are refused, each member is read with a size cap and checked against
its SHA-256, and unknown format versions are refused with a clear message. Everything wrong is a
one-line ``UserError`` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from pathlib import Path

from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from core.avatar.avatar import Avatar
from core.avatar.bundle import BUNDLE_FORMAT, MANIFEST, TENSORS, avatar_from_tensors, avatar_tensors, load_bundle
from core.body import BodyModel
from core.config import AvatarConfig, build_dataclass
from core.errors import UserError
from core.io.atomic import atomic_path

PERSONA_SUFFIX = ".persona"
FILE_FORMAT = "persona-file"
FILE_VERSION = 1
INDEX = "persona.json"
MEMBERS = (INDEX, MANIFEST, TENSORS)
MAX_MEMBER_BYTES = 2 * 1024**3  # one avatar's tensors: ~100 MB at the paper's 167k Gaussians
MAX_TOTAL_BYTES = 2 * 1024**3 + 64 * 1024**2
MAX_JSON_BYTES = 16 * 1024**2
MAX_RATIO = 100  # uncompressed / compressed for members over RATIO_FLOOR; float tensors barely compress
RATIO_FLOOR = 1024**2


def save_persona_file(path: str | Path, avatar: Avatar, manifest: dict) -> None:
    """Write ``avatar`` with its bundle ``manifest`` (as ``load_bundle`` returns it) to a ``.persona`` file.

    The tensors are the avatar's own (``avatar_tensors``), so loading gives back the same bits.
    """
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"manifest format must be {BUNDLE_FORMAT}, got {manifest.get('format')!r}")
    manifest = {**manifest, "num_gaussians": avatar.num_gaussians}
    payload = {MANIFEST: json.dumps(manifest, indent=2).encode("utf-8"),
               TENSORS: save_safetensors(avatar_tensors(avatar))}
    index = {"format": f"{FILE_FORMAT}/{FILE_VERSION}",
             "members": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                         for name, data in payload.items()}}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        archive.writestr(INDEX, json.dumps(index, indent=2), compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr(MANIFEST, payload[MANIFEST], compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr(TENSORS, payload[TENSORS], compress_type=zipfile.ZIP_STORED)  # floats do not compress


def load_persona_file(path: str | Path, body: BodyModel | None = None) -> tuple[Avatar, BodyModel, dict]:
    """Load ``(avatar, body model, manifest)`` from a ``.persona`` file (checks in the module doc)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = _checked_members(archive, path)
            index = _json_member(archive, infos[INDEX], path)
            _check_version(index, path)
            data = {name: _read_member(archive, infos[name], path) for name in (MANIFEST, TENSORS)}
    except FileNotFoundError:
        raise UserError("file not found", path) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as err:
        raise UserError(f"not a readable .persona file ({err})", path) from None
    _check_digests(index, data, path)
    try:
        manifest = json.loads(data[MANIFEST])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"corrupt {MANIFEST} inside: {err}", path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise UserError(f"unsupported avatar format {found!r} inside (this version reads {BUNDLE_FORMAT})", path)
    body = body or BodyModel.load()
    _check_body(manifest, body, path)
    try:
        tensors = load_safetensors(data[TENSORS])
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for bad data
        raise UserError(f"corrupt {TENSORS} inside ({type(err).__name__})", path) from None
    try:
        config = build_dataclass(AvatarConfig, manifest["avatar_config"], source=f"{path}:{MANIFEST}")
    except (KeyError, TypeError):
        raise UserError(f"{MANIFEST} inside has no valid avatar_config", path) from None
    return avatar_from_tensors(tensors, body, config, path), body, manifest


def load_avatar(path: str | Path, body: BodyModel | None = None) -> tuple[Avatar, BodyModel, dict]:
    """``(avatar, body, manifest)`` from a bundle folder or a ``.persona`` file; one-line errors otherwise."""
    path = Path(path)
    if path.is_dir():
        return load_bundle(path, body)
    if path.suffix.lower() == PERSONA_SUFFIX or zipfile.is_zipfile(path):
        return load_persona_file(path, body)
    if not path.exists():
        raise UserError("no such avatar: give a bundle folder (from `persona-studio reconstruct`) or a .persona file",
                        path)
    raise UserError("not an avatar: give a bundle folder or a .persona file", path)


def _checked_members(archive: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by name, after the name, type and size checks."""
    infos: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in archive.infolist():
        name = info.filename
        if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/") or ":" in name:
            raise UserError(f"unsafe member name {name!r} in the archive (refusing to read it)", path)
        if name not in MEMBERS:
            raise UserError(f"unexpected member {name!r} (a .persona file holds only {', '.join(MEMBERS)})", path)
        if name in infos:
            raise UserError(f"member {name!r} appears twice", path)
        kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type bits; 0 when the writer set none
        if info.is_dir() or kind not in (0, stat.S_IFREG):
            raise UserError(f"member {name!r} is not a plain file", path)
        limit = MAX_JSON_BYTES if name.endswith(".json") else MAX_MEMBER_BYTES
        if info.file_size > limit:
            raise UserError(f"member {name!r} declares {info.file_size} bytes (limit {limit})", path)
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise UserError(f"member {name!r} would inflate {info.file_size / max(info.compress_size, 1):.0f}x "
                            f"(a zip bomb?)", path)
        total += info.file_size
        infos[name] = info
    if total > MAX_TOTAL_BYTES:
        raise UserError(f"members declare {total} bytes in all (limit {MAX_TOTAL_BYTES})", path)
    missing = [name for name in MEMBERS if name not in infos]
    if missing:
        raise UserError(f"not a .persona file: missing {', '.join(missing)}", path)
    return infos


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytes:
    """A member's bytes, reading at most its declared size + 1 (a lying header cannot make us read more)."""
    with archive.open(info) as stream:
        data = stream.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise UserError(f"member {info.filename!r} does not match its declared size", path)
    return data


def _json_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> dict:
    try:
        value = json.loads(_read_member(archive, info, path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"corrupt {info.filename} inside: {err}", path) from None
    if not isinstance(value, dict):
        raise UserError(f"{info.filename} inside is not a JSON object", path)
    return value


def _check_version(index: dict, path: Path) -> None:
    """Accept ``persona-file/1``; a newer version asks for an update, anything else is not ours."""
    found = index.get("format")
    kind, _, version = str(found).partition("/")
    if kind != FILE_FORMAT or not version.isdigit():
        raise UserError(f"not a .persona file (format {found!r})", path)
    if int(version) != FILE_VERSION:
        newer = " written by a newer persona-studio; update to open it" if int(version) > FILE_VERSION else ""
        raise UserError(f"unsupported .persona version {int(version)}{newer} (this version reads "
                        f"{FILE_FORMAT}/{FILE_VERSION})", path)


def _check_digests(index: dict, data: dict[str, bytes], path: Path) -> None:
    members = index.get("members")
    for name, content in data.items():
        entry = members.get(name) if isinstance(members, dict) else None
        if not isinstance(entry, dict) or entry.get("sha256") != hashlib.sha256(content).hexdigest():
            raise UserError(f"{name} inside does not match its checksum (the file is damaged)", path)


def _check_body(manifest: dict, body: BodyModel, path: Path) -> None:
    """The avatar needs the body model it was made with (same vertex count), as ``load_bundle`` checks."""
    model = manifest.get("body_model") or {}
    expected = model.get("num_vertices")
    if expected != body.num_vertices:
        raise UserError(f"avatar was made with a {expected}-vertex body model ({model.get('file')}), but the body "
                        f"model in use has {body.num_vertices}; pass the same --body-model", path)

