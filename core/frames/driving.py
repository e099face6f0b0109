"""Driving pose videos: a motion retargeted to the subject's shape, drawn as an OpenPose-style
coloured 2D skeleton — the input pose-guided video diffusion models (e.g. MimicMotion) take.

The skeleton uses OpenPose's 18 body keypoints (COCO order) and its customary limb colours,
computed from the subject's posed SMPL-X joints and landmarks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch

from core.body import BodyModel
from core.camera import project_points
from core.motion import Motion

# OpenPose-18 keypoints from body-model joints (J:) or surface landmarks (L:).
OPENPOSE_18 = (
    ("nose", "L:nose"), ("neck", "J:neck"),
    ("right_shoulder", "J:right_shoulder"), ("right_elbow", "J:right_elbow"), ("right_wrist", "J:right_wrist"),
    ("left_shoulder", "J:left_shoulder"), ("left_elbow", "J:left_elbow"), ("left_wrist", "J:left_wrist"),
    ("right_hip", "J:right_hip"), ("right_knee", "J:right_knee"), ("right_ankle", "J:right_ankle"),
    ("left_hip", "J:left_hip"), ("left_knee", "J:left_knee"), ("left_ankle", "J:left_ankle"),
    ("right_eye", "L:right_eye"), ("left_eye", "L:left_eye"), ("right_ear", "L:right_ear"), ("left_ear", "L:left_ear"),
)
DRIVING_DISTANCE = 3.0  # metres from the camera to the body in driving videos (and imported ones)
# Limbs as keypoint index pairs, in OpenPose's drawing order.
OPENPOSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
# OpenPose's customary colours (RGB), one per keypoint / limb.
OPENPOSE_COLORS = np.array([
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
], dtype=np.uint8)


def openpose_keypoints(body: BodyModel, params: dict[str, torch.Tensor]) -> np.ndarray:
    """World positions ``[18, 3]`` of the OpenPose-18 keypoints for one SMPL-X frame."""
    with torch.no_grad():
        out = body(**params)
    joints = {name: out.joints[0, i] for i, name in enumerate(body.joint_names)}
    landmarks = {name: out.landmarks[0, i] for i, name in enumerate(body.landmark_names)}
    points = []
    for _, source in OPENPOSE_18:
        kind, name = source.split(":")
        points.append((joints if kind == "J" else landmarks)[name])
    return torch.stack(points).numpy()


def project(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates ``[N, 2]`` of world ``points [N, 3]`` in front of an OpenCV camera."""
    return project_points(points, viewmat, K)[0]


def draw_skeleton(uv: np.ndarray, width: int, height: int, thickness: int | None = None) -> np.ndarray:
    """An ``[H, W, 3]`` uint8 black image with the skeleton drawn at pixel positions ``uv [18, 2]``."""
    image = np.zeros((height, width, 3), np.uint8)
    thickness = thickness or max(2, round(min(width, height) / 128))
    for k, (a, b) in enumerate(OPENPOSE_LIMBS):
        colour = tuple(int(c) for c in (OPENPOSE_COLORS[k] * 0.6))  # limbs darker than joints, as OpenPose
        p, q = (tuple(int(round(v)) for v in uv[i] - 0.5) for i in (a, b))
        cv2.line(image, p, q, colour, thickness, lineType=cv2.LINE_AA)
    for k, point in enumerate(uv):
        centre = tuple(int(round(v)) for v in point - 0.5)
        cv2.circle(image, centre, thickness + 1, tuple(int(c) for c in OPENPOSE_COLORS[k]), -1, lineType=cv2.LINE_AA)
    return image


def shape_tensor(betas: np.ndarray, count: int) -> torch.Tensor:
    """Betas ``[B]`` as ``[1, count]`` (cut or zero-padded: models differ in shape-component counts)."""
    from core.export.poses import resized

    return resized(torch.as_tensor(np.asarray(betas, np.float32)).reshape(1, -1), count)


def driving_frames(body: BodyModel, motion: Motion, betas: np.ndarray, viewmat: np.ndarray, K: np.ndarray,
                   width: int, height: int) -> Iterator[np.ndarray]:
    """Skeleton images ``[H, W, 3]`` uint8 for every frame of ``motion`` on the subject's shape."""
    betas_t = shape_tensor(betas, body.num_betas)
    for i in range(motion.num_frames):
        params = {k: v for k, v in motion.frame(i, as_tensor=True).items() if k != "expression"}
        params["betas"] = betas_t
        yield draw_skeleton(project(openpose_keypoints(body, params), viewmat, K), width, height)


def subject_betas(source: str | Path) -> np.ndarray:
    """The subject's shape ``[B]`` from an avatar bundle folder, a ``.persona`` file or a Subject folder."""
    from core.avatar.bundle import read_manifest
    from core.errors import UserError
    from core.subject import Subject

    source = Path(source)
    if (source / "subject.json").exists():
        return np.asarray(Subject.load(source).smplx.get("betas", np.zeros(0)), np.float32)
    if source.suffix == ".persona":
        from core.export import load_persona_file

        _, _, manifest = load_persona_file(source)
    elif (source / "manifest.json").exists():
        manifest = read_manifest(source)
    elif (source / "work" / "subject" / "subject.json").exists():
        return subject_betas(source / "work" / "subject")
    else:
        raise UserError("not an avatar bundle, .persona file or Subject folder", source)
    return np.asarray(manifest.get("subject", {}).get("betas", []), np.float32)


def driving_camera(body: BodyModel, betas: np.ndarray, resolution: int,
                   distance: float = DRIVING_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """``(viewmat [4, 4], K [3, 3])`` of the driving video for shape ``betas`` at ``resolution``² pixels:
    ``front_camera`` framing the rest body's height and centre (imported videos are read with it)."""
    from core.frames.generated import front_camera

    with torch.no_grad():
        rest_y = body(betas=shape_tensor(betas, body.num_betas)).vertices[0, :, 1]
    centre, height = float(rest_y.min() + rest_y.max()) / 2, float(rest_y.max() - rest_y.min())
    return front_camera(resolution, distance, centre, height)


def write_driving_video(path: str | Path, body: BodyModel, motion: Motion, betas: np.ndarray, resolution: int,
                        distance: float = DRIVING_DISTANCE, progress=None) -> int:
    """Write the skeleton video of ``motion`` on shape ``betas`` (square ``resolution``); returns frames."""
    from core.export.video import open_frame_writer

    viewmat, K = driving_camera(body, betas, resolution, distance)
    with open_frame_writer(path, resolution, resolution, motion.fps) as writer:
        for i, image in enumerate(driving_frames(body, motion, betas, viewmat, K, resolution, resolution)):
            writer.write(image)
            if progress is not None:
                progress((i + 1) / motion.num_frames)
    return motion.num_frames
