"""Exports: turntable/animation videos decode back right, .ply and mesh round trips, .persona files
load bit-exactly and refuse hostile archives, failed exports leave nothing behind."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import stat
import zipfile
from pathlib import Path
from typing import Callable

import av
import numpy as np
import pytest
import torch
from PIL import Image

from core.avatar.avatar import Avatar
from core.avatar.bundle import avatar_tensors, load_bundle, save_bundle
from core.avatar.build import build_avatar
from core.avatar.render import pose_avatar, render_posed
from core.body import BodyModel
from core.camera import intrinsics, orbit_camera
from core.config import AvatarConfig, ExportConfig, RenderConfig
from core.errors import UserError
from core.export import (
    export_file,
    load_avatar,
    load_persona_file,
    pose_params,
    render_animation,
    render_turntable,
    resolve_motion,
    save_persona_file,
    vertex_colors,
)
from core.export.framing import fit_focal
from core.export.poses import motion_params
from core.export.spz import smallest_three_quaternions
from core.export.video import frame_size, output_kind
from core.motion import Motion, load_builtin
from core.render import rasterize
from core.synthetic import striped_colors

CPU = RenderConfig(backend="cpu")
WHITE = torch.ones(3)


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


@pytest.fixture(scope="module")
def bundle(body, tmp_path_factory) -> Path:
    """A bundle folder whose avatar looks trained: coloured, offsets and pose network not at their init."""
    avatar = build_avatar(body, np.zeros(body.num_betas), AvatarConfig(num_gaussians=14000, skinning_grid=32))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        avatar.colors.copy_(torch.as_tensor(striped_colors(avatar.template.numpy(), avatar.part_labels.numpy())))
        avatar.offsets.add_(0.002 * torch.randn(avatar.offsets.shape, generator=generator))
        head = avatar.pose_offsets.mlp.out.weight
        head.copy_(0.01 * torch.randn(head.shape, generator=generator))
    folder = tmp_path_factory.mktemp("bundle")
    save_bundle(folder, avatar, body, {"betas": np.zeros(body.num_betas, np.float32)}, {"note": "test"})
    return folder


@pytest.fixture(scope="module")
def loaded(bundle, body):
    return load_bundle(bundle, body)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / max(mse, 1e-12))


def decode(path: Path) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, float(stream.average_rate)


def silhouette(image: np.ndarray, background=(255, 255, 255), tolerance: int = 12) -> np.ndarray:
    return (np.abs(image.astype(int) - np.array(background)).max(axis=-1) > tolerance)


def expected_turntable_camera(means: torch.Tensor, size: int, frames: int, distance: float, margin: float = 0.08):
    """Front camera and focal as documented: orbit centred on the bbox, widest focal that fits every view."""
    center = (means.amin(0) + means.amax(0)) / 2
    pts = means.double().numpy()
    focal = np.inf
    for k in range(frames):
        view = orbit_camera(center.double(), distance, 2 * math.pi * k / frames).numpy()
        cam = pts @ view[:3, :3].T + view[:3, 3]
        tangent = np.abs(cam[:, :2] / cam[:, 2:3]).max()
        focal = min(focal, size / 2 * (1 - margin) / tangent)
    return orbit_camera(center.double(), distance, 0.0).float(), intrinsics(focal, size, size)


# ------------------------------------------------------------------------------------------ small helpers


def test_output_kinds_and_frame_sizes(tmp_path):
    assert output_kind(tmp_path / "a.mp4") == "mp4" and output_kind(tmp_path / "a.GIF") == "gif"
    assert output_kind(tmp_path / "a.webm") == "webm" and frame_size("webm", 101, 75) == (102, 76)
    assert output_kind(tmp_path / "frames") == "png" and output_kind(tmp_path / "f_%04d.png") == "png"
    for bad in ("a.avi", "a.png"):
        with pytest.raises(UserError, match=bad.split(".")[1]):
            output_kind(tmp_path / bad)
    assert frame_size("mp4", 101, 75) == (102, 76)  # yuv420p needs even sizes
    assert frame_size("mp4", 101, 75, panels=2) == (101, 76)  # 202 wide is already even
    assert frame_size("gif", 512, 512) == (320, 320)
    assert frame_size("gif", 512, 512, panels=2) == (160, 160)
    assert frame_size("png", 101, 75) == (101, 75)


def test_fit_focal_matches_pinhole_geometry():
    points = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.5, 0.0]])
    view = orbit_camera(torch.zeros(3), 3.0, 0.0)
    # x reaches tan = 1/3 -> f = 50 * 3; y reaches 0.5/3 on a 100 px high image -> f = 50 * 6
    assert fit_focal([(points, view)], 100, 100, margin=0.0) == pytest.approx(150.0, rel=1e-6)
    assert fit_focal([(points, view)], 400, 100, margin=0.1) == pytest.approx(45 * 6, rel=1e-6)
    with pytest.raises(UserError, match="distance"):
        fit_focal([(torch.tensor([[0.0, 0.0, 0.8]]), orbit_camera(torch.zeros(3), 0.5, 0.0))], 100, 100)


def test_apose_lowers_the_arms(body, loaded):
    _, _, manifest = loaded
    with torch.no_grad():
        joints = body(**pose_params("apose", manifest, body)).joints[0]
    from core.body.skeleton import JOINT_INDEX

    for side in ("left", "right"):
        shoulder, wrist = joints[JOINT_INDEX[f"{side}_shoulder"]], joints[JOINT_INDEX[f"{side}_wrist"]]
        drop = math.degrees(math.atan2(float(shoulder[1] - wrist[1]), float(abs(wrist[0] - shoulder[0]))))
        assert 35 < drop < 55  # the arm hangs ~45 degrees below the horizontal


# ------------------------------------------------------------------------------------------ videos


def test_turntable_mp4_decodes_and_first_frame_matches_a_direct_render(body, loaded, tmp_path):
    avatar, _, manifest = loaded
    size, frames, fps = 128, 8, 12
    out = tmp_path / "turn.mp4"
    seen = []
    result = render_turntable(avatar, body, manifest, out, ExportConfig(resolution=size, frames=frames, fps=fps),
                              CPU, pose="apose", progress=seen.append)
    decoded, rate = decode(out)
    assert len(decoded) == frames and decoded[0].shape == (size, size, 3) and rate == pytest.approx(fps)
    assert result.frames == frames and seen[-1] == pytest.approx(1.0) and len(seen) == frames
    with torch.no_grad():
        posed = pose_avatar(avatar, body, pose_params("apose", manifest, body), refined=True)
        view, K = expected_turntable_camera(posed.means, size, frames, 3.0)
        direct = render_posed(posed, view, K, size, size, CPU, WHITE).rgb.numpy()
    direct8 = np.round(direct * 255).astype(np.uint8)
    assert psnr(decoded[0], direct8) > 30
    # The framing fits: the body reaches close to the margin on some side but never the border.
    mask = silhouette(decoded[0])
    assert not mask[0].any() and not mask[-1].any() and not mask[:, 0].any() and not mask[:, -1].any()
    rows = np.flatnonzero(mask.any(axis=1))
    assert rows[-1] - rows[0] > 0.75 * size


def test_turntable_png_sequence_quarter_turn_shows_the_side(body, loaded, tmp_path):
    avatar, _, manifest = loaded
    out = tmp_path / "seq"
    render_turntable(avatar, body, manifest, out, ExportConfig(resolution=96, frames=8), CPU, pose="tpose")
    names = sorted(os.listdir(out))
    assert names == [f"frame_{k:04d}.png" for k in range(8)]
    widths = []
    for k in (0, 2, 4):
        mask = silhouette(np.asarray(Image.open(out / names[k]).convert("RGB")))
        cols = np.flatnonzero(mask.any(axis=0))
        widths.append(cols[-1] - cols[0])
    front, side, back = widths
    assert side < 0.5 * front  # arms out: the front is wide, the side narrow
    assert abs(back - front) <= 3  # the back view mirrors the front's silhouette


def test_gif_and_pattern_outputs_and_turntable_while_animating(body, loaded, tmp_path):
    avatar, _, manifest = loaded
    gif = tmp_path / "turn.gif"
    result = render_turntable(avatar, body, manifest, gif, ExportConfig(resolution=400, frames=5, fps=20), CPU,
                              motion=load_builtin("wave"))
    with Image.open(gif) as image:
        assert image.size == (320, 320) and image.n_frames == 5 and image.info.get("loop") == 0
        durations = []
        for k in range(image.n_frames):
            image.seek(k)
            durations.append(image.info["duration"])
        last = np.asarray(image.convert("RGB"))
    assert sum(durations) == 250  # 5 frames at 20 fps
    assert (result.width, result.height) == (320, 320) and silhouette(last).mean() > 0.02
    pattern = tmp_path / "png" / "t_%03d.png"
    render_turntable(avatar, body, manifest, pattern, ExportConfig(resolution=48, frames=3), CPU)
    assert sorted(os.listdir(pattern.parent)) == ["t_000.png", "t_001.png", "t_002.png"]


def test_animation_frame_count_fps_and_side_by_side_mesh(body, loaded, tmp_path):
    avatar, _, manifest = loaded
    motion = load_builtin("wave")  # 120 frames at 30 fps = 4 s
    out = tmp_path / "wave.mp4"
    result = render_animation(avatar, body, manifest, motion, out, ExportConfig(resolution=64), CPU, fps=3,
                              side_by_side=True)
    decoded, rate = decode(out)
    assert len(decoded) == result.frames == 12 and rate == pytest.approx(3)
    assert decoded[0].shape == (64, 128, 3)
    avatar_half, mesh_half = decoded[6][:, :64], decoded[6][:, 64:]
    on_mesh = silhouette(mesh_half)
    assert on_mesh.mean() > 0.03 and silhouette(avatar_half).mean() > 0.03
    grey = mesh_half[on_mesh].astype(int)
    assert np.abs(grey[:, 0] - grey[:, 2]).mean() < 6  # the mesh is shaded grey; the avatar is coloured
    coloured = avatar_half[silhouette(avatar_half)].astype(int)
    assert np.abs(coloured[:, 0] - coloured[:, 2]).mean() > 15


def decode_webm_rgba(path: Path) -> list[np.ndarray]:
    """RGBA frames of a VP9 .webm through libvpx's decoder (FFmpeg's own VP9 decoder drops the alpha plane)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoder = av.CodecContext.create("libvpx-vp9", "r")
        return [frame.to_ndarray(format="rgba")
                for packet in container.demux(stream) for frame in decoder.decode(packet)]


def test_transparent_turntables_and_animations_keep_the_alpha(body, loaded, tmp_path):
    """With export.transparent the frames are RGBA with straight alpha: clear around the avatar, opaque on it,
    and composited over white they give the white-background video's frame; .webm keeps it (VP9's alpha plane),
    as do PNG frames; H.264 and GIF refuse it with a one-line error before anything is written."""
    avatar, _, manifest = loaded
    size, frames = 96, 4
    opaque_png, clear_png, clear_webm = tmp_path / "opaque", tmp_path / "clear", tmp_path / "turn.webm"
    settings = ExportConfig(resolution=size, frames=frames, fps=8)
    transparent = dataclasses.replace(settings, transparent=True)
    render_turntable(avatar, body, manifest, opaque_png, settings, CPU)
    render_turntable(avatar, body, manifest, clear_png, transparent, CPU)
    result = render_turntable(avatar, body, manifest, clear_webm, transparent, CPU)
    assert (result.frames, result.width, result.height) == (frames, size, size)
    for k in range(frames):
        white = np.asarray(Image.open(opaque_png / f"frame_{k:04d}.png")).astype(float)
        with Image.open(clear_png / f"frame_{k:04d}.png") as image:
            assert image.mode == "RGBA"
            rgba = np.asarray(image).astype(float)
        alpha = rgba[..., 3:] / 255.0
        assert alpha[0, 0, 0] == 0 and alpha.max() == 1.0 and 0.05 < (alpha[..., 0] > 0.5).mean() < 0.6
        over_white = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        assert np.abs(over_white - white).max() <= 2.0  # rounding of the straight colour and of the alpha
        assert np.abs(rgba[..., :3][alpha[..., 0] == 1] - white[alpha[..., 0] == 1]).max() <= 1.0
    decoded = decode_webm_rgba(clear_webm)
    assert len(decoded) == frames and decoded[0].shape == (size, size, 4)
    expected = np.asarray(Image.open(clear_png / "frame_0000.png")).astype(float)
    assert np.abs(decoded[0][..., 3].astype(float) - expected[..., 3]).mean() < 2.0  # lossy, but the same matte
    covered = expected[..., 3] == 255
    assert np.abs(decoded[0][covered][:, :3].astype(float) - expected[covered][:, :3]).mean() < 6.0
    # the side-by-side animation's mesh panel is transparent around the body too
    motion = load_builtin("wave").slice(0, 2)
    render_animation(avatar, body, manifest, motion, tmp_path / "anim", transparent, CPU, side_by_side=True)
    panel = np.asarray(Image.open(tmp_path / "anim" / "frame_0000.png"))
    assert panel.shape == (size, 2 * size, 4)
    for half in (panel[:, :size, 3], panel[:, size:, 3]):
        assert half[0, 0] == 0 and (half == 255).mean() > 0.05
    for refused in ("turn.mp4", "turn.gif"):
        with pytest.raises(UserError, match="transparent background needs a .webm video or PNG frames"):
            render_turntable(avatar, body, manifest, tmp_path / refused, transparent, CPU)
        assert not (tmp_path / refused).exists()


def test_follow_camera_keeps_a_moving_body_centred(body, loaded, tmp_path):
    avatar, _, manifest = loaded
    walk = Motion.zeros(6, fps=6)
    walk = Motion(**{k: getattr(walk, k) for k in ("global_orient", "body_pose", "left_hand_pose", "right_hand_pose",
                                                    "jaw_pose", "leye_pose", "reye_pose")},
                  transl=np.stack([np.linspace(-0.6, 0.6, 6), np.zeros(6), np.zeros(6)], axis=1), fps=6)
    centres = {}
    for camera in ("fixed", "follow"):
        out = tmp_path / camera
        render_animation(avatar, body, manifest, walk, out, ExportConfig(resolution=64), CPU, camera=camera)
        centres[camera] = []
        for name in sorted(os.listdir(out)):
            cols = np.flatnonzero(silhouette(np.asarray(Image.open(out / name).convert("RGB"))).any(axis=0))
            centres[camera].append((cols[0] + cols[-1]) / 2)
    fixed, follow = np.array(centres["fixed"]), np.array(centres["follow"])
    assert fixed[-1] - fixed[0] > 15  # the body walks across a fixed shot (+x is image right)
    assert np.ptp(follow) <= 1  # ... and stays put for a following camera


def test_failed_exports_leave_nothing_behind(body, loaded, tmp_path):
    avatar, _, manifest = loaded

    def explode(fraction):
        if fraction >= 0.5:
            raise RuntimeError("stop")

    (tmp_path / "old.mp4").write_bytes(b"previous result")
    for name in ("new.mp4", "old.mp4", "new.gif", "folder"):
        with pytest.raises(RuntimeError, match="stop"):
            render_turntable(avatar, body, manifest, tmp_path / name, ExportConfig(resolution=32, frames=4), CPU,
                             progress=explode)
    with pytest.raises(RuntimeError, match="stop"):
        export_file(tmp_path / "seq.zip", avatar, body, manifest, motion=load_builtin("wave").slice(0, 4),
                    progress=explode)
    assert (tmp_path / "old.mp4").read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["folder", "old.mp4"]  # folder: made, no frames moved in
    assert not list((tmp_path / "folder").iterdir())


# ------------------------------------------------------------------------------------------ .ply


def _draw(m, q, s, o, c):
    """Splats rendered from the front-left over white, as the avatar's exports are checked."""
    view, K = orbit_camera(torch.tensor([0.0, 0.2, 0.0]), 3.0, 0.6), intrinsics(70.0, 96, 128)
    image, _, _ = rasterize(m, q, s, o, c, view[None], K[None], 96, 128, eps2d=0.1, backgrounds=torch.ones(1, 3),
                            rasterize_mode="antialiased", backend="cpu")
    return image[0]


PLY_ORDER = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def test_ply_round_trip_renders_the_same(body, loaded, tmp_path):
    from plyfile import PlyData

    avatar, _, manifest = loaded
    out = tmp_path / "avatar.ply"
    export_file(out, avatar, body, manifest, pose="motion:wave:60")
    data = out.read_bytes()
    header, _, payload = data.partition(b"end_header\n")
    lines = header.decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    assert f"element vertex {avatar.num_gaussians}" in lines
    assert [line.split()[-1] for line in lines if line.startswith("property")] == PLY_ORDER
    assert all(line.startswith("property float ") for line in lines if line.startswith("property"))
    assert len(payload) == 248 * avatar.num_gaussians

    vertex = PlyData.read(str(out))["vertex"]
    column = {name: torch.as_tensor(np.asarray(vertex[name], np.float32)) for name in PLY_ORDER}
    means = torch.stack([column[n] for n in ("x", "y", "z")], 1)
    quats = torch.stack([column[f"rot_{i}"] for i in range(4)], 1)
    scales = torch.stack([column[f"scale_{i}"] for i in range(3)], 1).exp()
    opacities = torch.sigmoid(column["opacity"])
    colors = 0.5 + 0.28209479177387814 * torch.stack([column[f"f_dc_{i}"] for i in range(3)], 1)
    assert all(float(column[f"f_rest_{i}"].abs().max()) == 0 for i in range(45))
    assert torch.allclose(opacities, torch.full_like(opacities, 0.9999), atol=1e-6)

    with torch.no_grad():
        posed = pose_avatar(avatar, body, pose_params("motion:wave:60", manifest, body), refined=True)
    assert torch.allclose(means, posed.means, atol=1e-6) and torch.allclose(colors, posed.colors, atol=1e-6)
    original = _draw(posed.means, posed.quats, posed.scales, posed.opacities, posed.colors)
    again = _draw(means, quats, scales, opacities, colors)
    assert float((original - again).abs().max()) < 2e-3 and float((original - 1).abs().max()) > 0.3


def test_web_splat_round_trip_renders_the_same_at_an_eighth_of_the_size(body, loaded, tmp_path):
    """The .splat file (32-byte records, no header) decodes to the posed Gaussians: positions and scales exact,
    colours and opacity to 1/255, rotations to 1/128, largest first; rendered, it matches the avatar."""
    from core.export.web_splat import SPLAT_DTYPE

    avatar, _, manifest = loaded
    out = tmp_path / "avatar.splat"
    said = export_file(out, avatar, body, manifest, pose="motion:wave:60")
    assert said.startswith(f"{avatar.num_gaussians} Gaussians")
    data = out.read_bytes()
    assert SPLAT_DTYPE.itemsize == 32 and len(data) == 32 * avatar.num_gaussians
    records = np.frombuffer(data, SPLAT_DTYPE)
    with torch.no_grad():
        posed = pose_avatar(avatar, body, pose_params("motion:wave:60", manifest, body), refined=True)
    means = torch.as_tensor(records["position"].copy())
    scales = torch.as_tensor(records["scale"].copy())
    rgba = torch.as_tensor(records["rgba"].astype(np.float32) / 255.0)
    quats = torch.as_tensor((records["rotation"].astype(np.float32) - 128.0) / 128.0)
    importance = scales.prod(dim=1) * rgba[:, 3]
    assert bool((importance[:-1] >= importance[1:]).all())  # largest first
    order = torch.as_tensor(np.argsort(-(posed.scales.prod(dim=1) * posed.opacities).numpy(), kind="stable"))
    assert torch.equal(means, posed.means[order]) and torch.equal(scales, posed.scales[order])
    assert float((rgba[:, :3] - posed.colors[order].clamp(0, 1)).abs().max()) <= 0.5 / 255 + 1e-6
    assert float((rgba[:, 3] - posed.opacities[order]).abs().max()) <= 0.5 / 255 + 1e-6
    assert float((quats - posed.quats[order] / posed.quats[order].norm(dim=1, keepdim=True)).abs().max()) <= 1 / 128

    original = _draw(posed.means, posed.quats, posed.scales, posed.opacities, posed.colors)
    again = _draw(means, quats, scales, rgba[:, 3], rgba[:, :3])
    assert float((original - again).abs().max()) < 0.02 and float((original - 1).abs().max()) > 0.3


def _read_spz(data: bytes) -> dict:
    """A decoder of version-3 .spz files written from the format's description (Niantic's spz README and
    loader), kept apart from core.export.spz: positions, opacities, colours (RGB), scales and wxyz quaternions."""
    import gzip
    import struct

    raw = gzip.decompress(data)
    magic, version, count, sh_degree, fractional, flags, reserved = struct.unpack_from("<IIIBBBB", raw)
    assert (magic, version, sh_degree, reserved) == (0x5053474E, 3, 0, 0)
    sizes = {"positions": 9, "alphas": 1, "colors": 3, "scales": 3, "rotations": 4}
    fields, at = {}, 16
    for name, width in sizes.items():
        fields[name] = np.frombuffer(raw, np.uint8, count * width, at).reshape(count, width)
        at += count * width
    assert at == len(raw)
    p = fields["positions"].astype(np.int64)
    fixed = p[:, 0::3] | (p[:, 1::3] << 8) | (p[:, 2::3] << 16)
    fixed = np.where(fixed >= 1 << 23, fixed - (1 << 24), fixed)
    return {"flags": flags, "means": fixed / float(1 << fractional),
            "opacities": fields["alphas"][:, 0] / 255.0,
            "colors": (fields["colors"] / 255.0 - 0.5) / 0.15 * 0.28209479177387814 + 0.5,
            "scales": np.exp(fields["scales"] / 16.0 - 10.0), "quats": _smallest_three_quats(fields["rotations"])}


def _smallest_three_quats(rotations: np.ndarray) -> np.ndarray:
    """.spz "smallest three" rotations (uint8 [N, 4]) as unit quaternions w, x, y, z [N, 4]."""
    count = len(rotations)
    words = rotations.astype(np.uint64) @ (np.uint64(1) << np.arange(0, 32, 8, dtype=np.uint64))
    quats = np.zeros((count, 4))  # x, y, z, w
    largest = (words >> np.uint64(30)).astype(np.int64)
    rest = words.copy()
    for index in (3, 2, 1, 0):  # the last packed component sits in the lowest bits
        mine = largest != index
        magnitude = (rest & np.uint64(511)).astype(np.float64) / 511 * np.sqrt(0.5)
        negative = ((rest >> np.uint64(9)) & np.uint64(1)).astype(bool)
        quats[mine, index] = np.where(negative, -magnitude, magnitude)[mine]
        rest = np.where(mine, rest >> np.uint64(10), rest)
    quats[np.arange(count), largest] = np.sqrt(np.maximum(0.0, 1.0 - (quats ** 2).sum(axis=1)))
    return quats[:, [3, 0, 1, 2]]


def test_spz_round_trip_renders_the_same_at_a_tenth_of_the_ply(body, loaded, tmp_path):
    """The .spz file decodes (by the test's own reader) to the posed Gaussians within the format's steps:
    positions 1/8192 m, opacity 1/510, colours a step of 0.15 * 255 in the SH coefficient, log scales 1/32,
    rotations to the packing's 9 bits; rendered, it matches the avatar; it is under a tenth of the .ply."""
    avatar, _, manifest = loaded
    out = tmp_path / "avatar.spz"
    said = export_file(out, avatar, body, manifest, pose="motion:wave:60")
    assert said.startswith(f"{avatar.num_gaussians} Gaussians")
    decoded = _read_spz(out.read_bytes())
    with torch.no_grad():
        posed = pose_avatar(avatar, body, pose_params("motion:wave:60", manifest, body), refined=True)
    assert decoded["flags"] == 1  # trained with the Mip-Splatting filter
    assert np.abs(decoded["means"] - posed.means.numpy()).max() <= 0.5 / 4096 + 1e-7
    assert np.abs(decoded["opacities"] - posed.opacities.numpy()).max() <= 0.5 / 255 + 1e-6
    assert np.abs(decoded["colors"] - posed.colors.numpy()).max() <= 0.5 / (0.15 * 255) * 0.2821 + 1e-6
    assert np.abs(np.log(decoded["scales"]) - posed.scales.log().numpy()).max() <= 0.5 / 16 + 1e-6
    unit = posed.quats / posed.quats.norm(dim=1, keepdim=True)
    assert np.abs((decoded["quats"] * unit.numpy()).sum(axis=1)).min() > 1 - 1e-5  # the same rotation (q ~ -q)
    turned = torch.nn.functional.normalize(torch.randn(500, 4, generator=torch.Generator().manual_seed(3)), dim=1)
    again = _smallest_three_quats(smallest_three_quaternions(turned.double().numpy()))
    assert np.abs((again * turned.numpy()).sum(axis=1)).min() > 1 - 1e-5  # any rotation, not only identities

    def as_tensor(key):
        return torch.as_tensor(decoded[key], dtype=torch.float32)

    original = _draw(posed.means, posed.quats, posed.scales, posed.opacities, posed.colors)
    redrawn = _draw(as_tensor("means"), as_tensor("quats"), as_tensor("scales"), as_tensor("opacities"),
                    as_tensor("colors"))
    assert float((original - redrawn).abs().max()) < 0.05 and float((original - 1).abs().max()) > 0.3
    assert float((original - redrawn).abs().mean()) < 2e-3
    ply = tmp_path / "avatar.ply"
    export_file(ply, avatar, body, manifest, pose="motion:wave:60")
    assert out.stat().st_size < ply.stat().st_size / 10


def test_ply_sequence_zip_holds_each_posed_frame(body, loaded, tmp_path):
    from plyfile import PlyData

    avatar, _, manifest = loaded
    motion = load_builtin("wave").slice(0, 90, 30)  # frames 0, 30, 60 at 1 fps
    out = tmp_path / "anim.zip"
    export_file(out, avatar, body, manifest, motion=motion)
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["frame_0000.ply", "frame_0001.ply", "frame_0002.ply", "sequence.json"]
        info = json.loads(archive.read("sequence.json"))
        assert info["frames"] == 3 and info["fps"] == 1
        (tmp_path / "last.ply").write_bytes(archive.read("frame_0002.ply"))  # plyfile is slow on streams
    last = PlyData.read(str(tmp_path / "last.ply"))["vertex"]
    means = np.stack([np.asarray(last[n]) for n in ("x", "y", "z")], 1)
    with torch.no_grad():
        expected = pose_avatar(avatar, body, pose_params("motion:wave:60", manifest, body), refined=True).means
    assert np.abs(means - expected.numpy()).max() < 1e-6
    # the same sequence with .spz frames: the same poses, each frame the format's compressed file
    small = tmp_path / "anim_spz.zip"
    assert export_file(small, avatar, body, manifest, motion=motion, frames_as="spz").startswith("3 posed .spz")
    with zipfile.ZipFile(small) as archive:
        assert sorted(archive.namelist()) == ["frame_0000.spz", "frame_0001.spz", "frame_0002.spz", "sequence.json"]
        assert json.loads(archive.read("sequence.json"))["format"] == "persona-spz-sequence/1"
        decoded = _read_spz(archive.read("frame_0002.spz"))
    assert np.abs(decoded["means"] - expected.numpy()).max() <= 0.5 / 4096 + 1e-7
    assert small.stat().st_size < out.stat().st_size / 4
    for wrong in ({"frames_as": "spz"}, {"frames_as": "obj", "motion": motion}):
        with pytest.raises(UserError, match="--frames-as takes ply or spz"):
            export_file(tmp_path / ("x.ply" if "motion" not in wrong else "x.zip"), avatar, body, manifest, **wrong)


# ------------------------------------------------------------------------------------------ mesh


def test_vertex_colors_average_the_gaussians_each_vertex_feeds():
    # Gaussians 0, 1 are vertices 0, 1; Gaussian 2 sits halfway between them (weights 0.5, 0.5).
    upsample = torch.sparse_coo_tensor(torch.tensor([[0, 1, 2, 2], [0, 1, 0, 1]]),
                                       torch.tensor([1.0, 1.0, 0.5, 0.5]), (3, 2), check_invariants=True)
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    got = vertex_colors(upsample, colors)
    # vertex 0: (1 * red + 0.5 * green) / 1.5
    assert torch.allclose(got, torch.tensor([[2 / 3, 1 / 3, 0.0], [0.0, 1 / 3, 2 / 3]]), atol=1e-6)


def test_mesh_glb_and_obj_load_with_the_avatars_colours(body, loaded, tmp_path):
    import trimesh

    avatar, _, manifest = loaded
    with torch.no_grad():
        expected_vertices = body(**pose_params("apose", manifest, body)).vertices[0].numpy()
    # Each body vertex shows the colours of the Gaussians it feeds (checked on its own above).
    expected_colors = vertex_colors(avatar.upsample, avatar.colors.detach()).numpy()
    for suffix in (".glb", ".obj"):
        out = tmp_path / f"body{suffix}"
        export_file(out, avatar, body, manifest, pose="apose")
        mesh = trimesh.load(out, force="mesh", process=False)
        assert len(mesh.vertices) == body.num_vertices and np.array_equal(mesh.faces, body.faces.numpy())
        assert np.abs(mesh.vertices - expected_vertices).max() < 1e-5
        stored = mesh.visual.vertex_colors[:, :3] / 255.0
        if suffix == ".glb":  # glTF vertex colours are linear light
            stored = np.where(stored <= 0.0031308, stored * 12.92, 1.055 * stored ** (1 / 2.4) - 0.055)
            assert np.median(np.abs(stored - expected_colors)) < 0.005 and np.abs(stored - expected_colors).max() < 0.03
        else:
            assert np.abs(stored - expected_colors).max() <= 0.5 / 255 + 1e-6


# ------------------------------------------------------------------------------------------ .persona


def raw_tensors(avatar: Avatar) -> dict[str, bytes]:
    return {k: (v.dtype, tuple(v.shape), v.numpy().tobytes()) for k, v in avatar_tensors(avatar).items()}


def test_persona_file_round_trip_is_bit_exact(body, bundle, loaded, tmp_path):
    avatar, _, manifest = loaded
    out = tmp_path / "me.persona"
    export_file(out, avatar, body, manifest)
    again, _, manifest_again = load_persona_file(out, body)
    assert raw_tensors(again) == raw_tensors(avatar)
    assert {k: v for k, v in manifest_again.items()} == manifest
    via_any, _, _ = load_avatar(out, body)
    from_folder, _, _ = load_avatar(bundle, body)
    assert raw_tensors(via_any) == raw_tensors(from_folder)
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["avatar.safetensors", "manifest.json", "persona.json"]
        assert json.loads(archive.read("persona.json"))["format"] == "persona-file/1"
    # A .persona made from the loaded .persona is the same file content again.
    second = tmp_path / "again.persona"
    save_persona_file(second, again, manifest_again)
    with zipfile.ZipFile(out) as a, zipfile.ZipFile(second) as b:
        assert all(a.read(n) == b.read(n) for n in a.namelist())


def members_of(persona: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(persona) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if name == symlink:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            stored = name == "avatar.safetensors"  # as we write it; keeps the test fast
            archive.writestr(info, data, compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    return path


def test_hostile_and_foreign_archives_are_refused_without_extracting(body, loaded, tmp_path):
    avatar, _, manifest = loaded
    good = tmp_path / "good.persona"
    save_persona_file(good, avatar, manifest)
    members = members_of(good)
    cases = tmp_path / "cases"
    cases.mkdir()
    index = json.loads(members["persona.json"])

    huge = write_zip(cases / "huge.persona", members)
    raw = bytearray(huge.read_bytes())
    patched = 0
    start = raw.find(b"PK\x01\x02")  # central directory entries
    while start >= 0:
        if raw[start + 46:start + 46 + 18] == b"avatar.safetensors":
            raw[start + 24:start + 28] = (0xFFFFFFF0).to_bytes(4, "little")  # declared uncompressed size
            patched += 1
        start = raw.find(b"PK\x01\x02", start + 4)
    huge.write_bytes(bytes(raw))
    assert patched == 1

    tampered = dict(members)
    tensors = members["avatar.safetensors"]
    tampered["avatar.safetensors"] = tensors[:-1] + bytes([tensors[-1] ^ 0xFF])
    junk = b"\x10" + bytes(64)  # consistent checksums, but not safetensors
    garbage_index = {**index, "members": {**index["members"], "avatar.safetensors": {
        "bytes": len(junk), "sha256": hashlib.sha256(junk).hexdigest()}}}
    garbage = {**members, "avatar.safetensors": junk, "persona.json": json.dumps(garbage_index).encode()}
    hostile = {
        "dotdot": (write_zip(cases / "dotdot.persona", {**members, "../evil": b"x"}), "unsafe member"),
        "absolute": (write_zip(cases / "absolute.persona", {**members, "/tmp/evil": b"x"}), "unsafe member"),
        "unknown": (write_zip(cases / "unknown.persona", {**members, "notes.txt": b"x"}), "unexpected member"),
        "link": (write_zip(cases / "link.persona", members, symlink="manifest.json"), "not a plain file"),
        "huge": (huge, "declares"),
        "bomb": (write_zip(cases / "bomb.persona", {**members, "persona.json": bytes(8 * 1024**2)}), "inflate"),
        "version": (write_zip(cases / "version.persona", {
            **members, "persona.json": json.dumps({**index, "format": "persona-file/2"}).encode()}), "newer"),
        "foreign": (write_zip(cases / "foreign.persona", {"readme.md": b"hi"}), "unexpected member"),
        "tampered": (write_zip(cases / "tampered.persona", tampered), "checksum"),
        "garbage": (write_zip(cases / "garbage.persona", garbage), "corrupt avatar.safetensors"),
        "missing": (write_zip(cases / "missing.persona", {"persona.json": members["persona.json"]}), "missing"),
        "not_zip": ((cases / "text.persona"), "not a readable"),
    }
    (cases / "text.persona").write_text("hello")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for name, (path, message) in hostile.items():
        with pytest.raises(UserError, match=message) as caught:
            load_persona_file(path, body)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value), name
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not (tmp_path.parent / "evil").exists() and not Path("/tmp/evil").exists()


# ------------------------------------------------------------------------------------------ user errors + CLI


def test_bad_inputs_are_one_line_user_errors(body, bundle, loaded, tmp_path):
    avatar, _, manifest = loaded
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    calls = {
        "unknown video extension": lambda: render_turntable(avatar, body, manifest, tmp_path / "t.avi"),
        "unknown export extension": lambda: export_file(tmp_path / "x.fbx", avatar, body, manifest),
        "needs --motion": lambda: export_file(tmp_path / "x.zip", avatar, body, manifest),
        "cannot write": lambda: export_file(blocker / "x.ply", avatar, body, manifest),
        "unknown pose": lambda: export_file(tmp_path / "x.ply", avatar, body, manifest, pose="sitting"),
        "frames 0..119": lambda: pose_params("motion:wave:500", manifest, body),
        "unknown motion": lambda: pose_params("motion:moonwalk:0", manifest, body),
        "not an avatar": lambda: load_avatar(blocker, body),
        "no such avatar": lambda: load_avatar(tmp_path / "nowhere", body),
    }
    bad_clip = tmp_path / "clip.npz"
    np.savez(bad_clip, poses=np.zeros((4, 99)), mocap_frame_rate=30.0)
    calls["(T, 165)"] = lambda: render_animation(avatar, body, manifest, resolve_motion(str(bad_clip)),
                                                 tmp_path / "a.mp4")
    foreign = tmp_path / "foreign_bundle"
    foreign.mkdir()
    (foreign / "manifest.json").write_text(json.dumps({"format": "someone-else/3"}))
    calls["unsupported avatar format"] = lambda: load_avatar(foreign, body)
    for message, call in calls.items():
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
            call()
        assert "\n" not in str(caught.value)
    assert not list(blocker.parent.glob("*.ply"))


def test_cli_commands_run_and_report(bundle, tmp_path, capsys):
    from persona_studio.cli import main

    single = tmp_path / "me.persona"
    assert main(["export", str(bundle), "-o", str(single)]) == 0
    gif = tmp_path / "t.gif"
    assert main(["turntable", str(single), "-o", str(gif), "--frames", "3", "--resolution", "48",
                 "--background", "0,0,0", "--set", "render.backend=cpu"]) == 0
    with Image.open(gif) as image:
        assert image.n_frames == 3 and np.asarray(image.convert("RGB"))[0, 0].tolist() == [0, 0, 0]
    assert "wrote" in capsys.readouterr().out
    assert main(["animate", str(single), "-o", str(tmp_path / "x.mp4"), "--motion", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope" in err[0]
    # a motion exported as .bvh drives the avatar back in: animate takes the file
    exported = tmp_path / "wave.bvh"
    assert main(["export", str(single), "-o", str(exported), "--motion", "wave", "--fps", "2"]) == 0
    assert "frames of 'wave' at 2 frames/s" in capsys.readouterr().out
    clip = tmp_path / "wave.gif"
    assert main(["animate", str(single), "-o", str(clip), "--motion", str(exported), "--resolution", "48",
                 "--set", "render.backend=cpu"]) == 0
    with Image.open(clip) as image:
        assert image.n_frames == round(load_builtin("wave").duration * 2)
    clear = tmp_path / "t.webm"
    assert main(["turntable", str(single), "-o", str(clear), "--frames", "2", "--resolution", "48", "--transparent",
                 "--set", "render.backend=cpu"]) == 0
    assert decode_webm_rgba(clear)[0][0, 0, 3] == 0 and "wrote" in capsys.readouterr().out
    assert main(["turntable", str(single), "-o", str(tmp_path / "t.mp4"), "--transparent"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "transparent background needs a .webm" in err[0] and "t.mp4" in err[0]


# ------------------------------------------------------------------------------------------ rigged glTF


def read_glb(path: Path) -> tuple[dict, Callable]:
    """(the JSON document, accessor index -> numpy array) of a .glb, read by the spec, independently of the writer."""
    import struct

    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_length, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A
    document = json.loads(data[20:20 + json_length])
    bin_length, bin_type = struct.unpack_from("<II", data, 20 + json_length)
    assert bin_type == 0x004E4942
    blob = data[28 + json_length:28 + json_length + bin_length]
    dtypes = {5126: np.float32, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32}
    widths = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}

    def accessor(index: int) -> np.ndarray:
        item = document["accessors"][index]
        view = document["bufferViews"][item["bufferView"]]
        count, width = item["count"], widths[item["type"]]
        values = np.frombuffer(blob, dtypes[item["componentType"]], count * width,
                               view.get("byteOffset", 0) + item.get("byteOffset", 0))
        return values.reshape(count, width) if width > 1 else values

    return document, accessor


def gltf_skinned_vertices(document: dict, accessor, key: int | None) -> np.ndarray:
    """The mesh's vertices as a glTF player skins them: nodes at animation keyframe ``key`` (None: the nodes' own
    TRS), joint matrices = global node transform x inverse bind matrix, weighted by JOINTS_0 / WEIGHTS_0."""
    from scipy.spatial.transform import Rotation

    nodes = [dict(node) for node in document["nodes"]]
    if key is not None:
        animation = document["animations"][0]
        for channel in animation["channels"]:
            sampler = animation["samplers"][channel["sampler"]]
            nodes[channel["target"]["node"]][channel["target"]["path"]] = accessor(sampler["output"])[key].tolist()
    local = []
    for node in nodes:
        matrix = np.eye(4)
        matrix[:3, :3] = Rotation.from_quat(node.get("rotation", [0, 0, 0, 1])).as_matrix()  # x, y, z, w
        matrix[:3, 3] = node.get("translation", [0, 0, 0])
        local.append(matrix)
    parent = {child: index for index, node in enumerate(nodes) for child in node.get("children", [])}
    world = {}

    def global_matrix(index: int) -> np.ndarray:
        if index not in world:
            world[index] = local[index] if index not in parent else global_matrix(parent[index]) @ local[index]
        return world[index]

    skin = document["skins"][0]
    inverse_bind = accessor(skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)  # column-major
    joint_matrices = np.stack([global_matrix(n) @ inverse_bind[k] for k, n in enumerate(skin["joints"])])
    primitive = document["meshes"][0]["primitives"][0]["attributes"]
    positions = np.concatenate([accessor(primitive["POSITION"]), np.ones((len(accessor(primitive["POSITION"])), 1))], 1)
    joints, weights = accessor(primitive["JOINTS_0"]).astype(np.int64), accessor(primitive["WEIGHTS_0"])
    blended = np.einsum("vk,vkij->vij", weights, joint_matrices[joints])
    return np.einsum("vij,vj->vi", blended, positions)[:, :3]


def test_rigged_glb_skins_to_the_posed_and_animated_body(body, loaded, tmp_path):
    avatar, _, manifest = loaded
    betas = np.zeros(body.num_betas, np.float32)
    betas[:3] = (1.0, -1.5, 0.5)
    shaped = {**manifest, "subject": {**manifest.get("subject", {}), "betas": betas.tolist()}}
    motion = load_builtin("dance").slice(0, 60, 10)
    animated, posed = tmp_path / "dance.glb", tmp_path / "apose.glb"
    assert "6 frames of 'dance'" in export_file(animated, avatar, body, shaped, motion=motion)
    assert "pose 'apose'" in export_file(posed, avatar, body, shaped, pose="apose", rig=True)
    document, accessor = read_glb(animated)
    assert [n["name"] for n in document["nodes"][1:]] == list(body.joint_names)
    np.testing.assert_allclose(accessor(document["animations"][0]["samplers"][0]["input"]),
                               np.arange(6) / motion.fps, rtol=1e-6)
    attributes = document["meshes"][0]["primitives"][0]["attributes"]
    joints, weights = accessor(attributes["JOINTS_0"]).astype(np.int64), accessor(attributes["WEIGHTS_0"])
    bind = np.concatenate([accessor(attributes["POSITION"]), np.ones((body.num_vertices, 1))], 1)

    def check(skinned: np.ndarray, posed_body) -> tuple[float, float]:
        # exact: the body model's joint transforms blended with the file's four weights per vertex; close: the body
        # model's own vertices (all its weights, up to 6 joints a vertex)
        transforms = posed_body.joint_transforms[0].double().numpy()
        four = np.einsum("vk,vkij,vj->vi", weights, transforms[joints], bind)[:, :3]
        return np.abs(skinned - four).max(), np.linalg.norm(skinned - posed_body.vertices[0].numpy(), axis=1)

    gaps = []
    for key in range(motion.num_frames):
        with torch.no_grad():
            posed_body = body(**motion_params(motion, [key], shaped, body))
        exact, gap = check(gltf_skinned_vertices(document, accessor, key), posed_body)
        assert exact < 2e-5, (key, exact)  # metres: float32 storage
        gaps.append(gap)
    document, accessor = read_glb(posed)
    assert "animations" not in document
    with torch.no_grad():
        posed_body = body(**pose_params("apose", shaped, body))
    exact, gap = check(gltf_skinned_vertices(document, accessor, None), posed_body)
    assert exact < 2e-5
    gaps = np.concatenate([*gaps, gap])
    # dropping the 5th and 6th influences moves few vertices, and little
    assert np.percentile(gaps, 99) < 2e-3 and gaps.max() < 0.015, (np.percentile(gaps, 99), gaps.max())
    # the mesh is the subject's shape (not the mean) and carries the avatar's colours
    with torch.no_grad():
        subject, mean = (body(betas=torch.as_tensor(b)[None]).shaped[0].numpy() for b in (betas, 0 * betas))
    attributes = document["meshes"][0]["primitives"][0]["attributes"]
    np.testing.assert_allclose(accessor(attributes["POSITION"]), subject, atol=1e-6)
    assert np.abs(subject - mean).max() > 0.01
    colours = accessor(attributes["COLOR_0"])
    assert colours.shape == (body.num_vertices, 4) and colours[:, :3].std() > 10
    with pytest.raises(UserError, match="--rig only applies to .glb"):
        export_file(tmp_path / "x.ply", avatar, body, shaped, rig=True)
