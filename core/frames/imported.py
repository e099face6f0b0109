"""Imported frames: a video a pose-guided video model made from our driving skeleton video.

The user feeds ``persona-studio frames driving-video`` output (a motion drawn as a skeleton on the
subject's shape, square, from ``front_camera``) and the photo to a model such as MimicMotion, and
imports what it generates. Each video frame becomes a training frame like a generated one:

1. the frame is read, centre-cropped to a square when it is not one (a model that pads or extends
   the square keeps the person in the middle), and resized to the training resolution;
2. mediapipe Holistic (one tracking instance per video) gives the person mask and keypoints;
3. the motion's pose at that frame time, on the subject's (fixed) shape, seen by the driving
   video's camera, starts a short SMPLify-X-style refinement (``core.prep.fit``'s objective) of
   global orientation, body pose, translation and the confidently seen hands;
4. depth, normal and part segmentation are rendered from the refined body
   (``core.prep.geometry.render_geometry``).

Frames without a person, or whose refined body still misses the keypoints or the mask, are skipped.
The fit works in the photo convention (``PHOTO_VIEWMAT``); the stored parameters and ``viewmat`` are
those of the motion's world and the driving camera, like generated frames.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from core.body import BodyModel
from core.errors import UserError, require
from core.frames.driving import DRIVING_DISTANCE, driving_camera, shape_tensor
from core.frames.frameset import FrameSet, pack_frame
from core.io.native_log import quiet_native_logs
from core.motion import Motion, resample
from core.prep.fit import (PHOTO_VIEWMAT, FitObjective, FitWeights, fit_metrics, keypoint_targets,
                           model_surface_points, optimise, person_height_px, project_keypoints,
                           silhouette_target)
from core.prep.geometry import render_geometry, silhouette_iou
from core.prep.landmarks import keypoints_for_fitting
from core.prep.matting import premultiplied_foreground
from core.prep.perception import Perception, holistic_arrays, person_bbox
from core.subject import SMPLX_POSE_SIZES
from core.threads import single_torch_thread

IMPORTED_SOURCE = "imported"
FPS_TOLERANCE = 0.01  # relative: a video at the motion's frame rate is matched frame time to frame time
HAND_CONFIDENCE = 0.5  # a hand's pose is refined only when its keypoints are at least this confident


@dataclass
class ImportSettings:
    """How a video is imported.

    Attributes:
        resolution: training frame size, pixels (square).
        every: use every N-th video frame; max_frames: at most this many frames (None: all).
        iterations: Adam steps of the per-frame pose refinement; learning_rate: its step size.
        max_keypoint_error: skip a frame whose refined body keypoint error exceeds this % of the person's height.
        min_silhouette_iou: skip a frame whose refined body covers the person mask worse than this (IoU).
        distance: camera distance of the driving video, metres.
    """

    resolution: int = 256
    every: int = 1
    max_frames: int | None = None
    iterations: int = 30
    learning_rate: float = 0.02
    max_keypoint_error: float = 8.0
    min_silhouette_iou: float = 0.5
    distance: float = DRIVING_DISTANCE


@dataclass
class ImportResult:
    """The imported frames (None when every frame was skipped) and what happened to each video frame.

    ``per_frame``: one dict per considered video frame: ``index``, ``status`` ("ok", "no person",
    "poor fit") and, when fitted, ``body_keypoint_error_pct`` and ``silhouette_iou``.
    """

    frames: FrameSet | None
    video_frames: int
    per_frame: list[dict] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for f in self.per_frame if f["status"] == status)

    def summary(self) -> str:
        """One line: how many frames were imported and why the others were skipped."""
        used = self.count("ok")
        skipped = [f"{self.count(s)} {s}" for s in ("no person", "poor fit") if self.count(s)]
        return (f"imported {used} of {len(self.per_frame)} frames" + (f" (skipped: {', '.join(skipped)})"
                                                                      if skipped else ""))


# --- the video ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """A video's frame count, frame rate (frames/s) and frame size (pixels)."""

    num_frames: int
    fps: float
    width: int
    height: int


def _av():
    """PyAV, or a one-line error saying that reading a video needs it."""
    return require("av", "reading a video")


def _open_video(path: Path):
    av = _av()

    if not path.is_file():
        raise UserError("video not found" if not path.exists() else "not a file", path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise UserError(f"not a readable video ({type(err).__name__})", path) from None
    if not container.streams.video:
        container.close()
        raise UserError("has no video stream", path)
    return container


def video_info(path: str | Path) -> VideoInfo:
    """Frame count, rate and size of a video file (counted by demuxing when the header lacks the count)."""
    av = _av()

    path = Path(path)
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        count = int(stream.frames or 0)
        if count <= 0:
            count = sum(1 for packet in container.demux(stream) if packet.size)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
    except av.error.FFmpegError as err:
        raise UserError(f"not a readable video ({type(err).__name__})", path) from None
    finally:
        container.close()
    if count <= 0 or width <= 0 or height <= 0:
        raise UserError("the video has no frames", path)
    if not (math.isfinite(fps) and fps > 0):
        raise UserError("the video has no frame rate", path)
    return VideoInfo(count, fps, width, height)


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The video's frames ``[H, W, 3]`` uint8 RGB, in order, decoded one at a time."""
    av = _av()

    path = Path(path)
    container = _open_video(path)
    try:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as err:
        raise UserError(f"the video could not be decoded ({type(err).__name__})", path) from None
    finally:
        container.close()


def square_crop(image: np.ndarray) -> np.ndarray:
    """The centred square ``[S, S, C]`` (S = the shorter side) of an ``[H, W, C]`` image."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top:top + side, left:left + side]


# --- camera and motion ---------------------------------------------------------------------------------


def motion_for_video(motion: Motion, video: VideoInfo) -> Motion:
    """The motion resampled so that its frame ``i`` is the pose of video frame ``i``.

    A video at the motion's frame rate is matched by time (a video model may stop early); any other
    rate means the model re-timed the clip, so the motion is stretched over the video's length.
    """
    if abs(video.fps - motion.fps) <= FPS_TOLERANCE * motion.fps:
        return motion
    return resample(motion, motion.fps * video.num_frames / motion.num_frames)


def world_to_photo(viewmat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rigid ``(R [3, 3], t [3])`` taking a camera's world to the photo world (``PHOTO_VIEWMAT``)."""
    flip = PHOTO_VIEWMAT[:3, :3]
    return flip @ viewmat[:3, :3], flip @ viewmat[:3, 3]


def move_body(params: dict[str, np.ndarray], rotation: np.ndarray, translation: np.ndarray,
              pelvis: np.ndarray) -> dict[str, np.ndarray]:
    """SMPL-X ``params`` (1-D arrays) of the same body moved rigidly by ``x -> R x + t``.

    The body turns about its rest pelvis joint ``pelvis [3]`` (metres), so the translation gains
    ``R (pelvis + transl) + t - pelvis``.
    """
    moved = dict(params)
    orient = Rotation.from_matrix(rotation) * Rotation.from_rotvec(np.asarray(params["global_orient"], np.float64))
    moved["global_orient"] = orient.as_rotvec().astype(np.float32)
    transl = np.asarray(params.get("transl", np.zeros(3)), np.float64)
    moved["transl"] = (rotation @ (pelvis + transl) + translation - pelvis).astype(np.float32)
    return moved


def rest_pelvis(body: BodyModel, shape: dict[str, np.ndarray]) -> np.ndarray:
    """Rest-pose pelvis joint ``[3]`` (metres) of the body with ``shape`` (betas, expression)."""
    with torch.no_grad():
        out = body(**{k: torch.as_tensor(v)[None] for k, v in shape.items()})
    return out.joints[0, 0].double().numpy()


# --- perception ------------------------------------------------------------------------------------------


class VideoPerception:
    """mediapipe Holistic over consecutive video frames: one tracking instance for the whole video.

    Tracking mode measured 0.17 s a frame against 0.25 s for static mode (256² renders, 2 cores), and
    found the body in the same frames. Use as a context manager; call with an ``[H, W, 3]`` uint8 frame.
    """

    def __enter__(self) -> "VideoPerception":
        from mediapipe.python.solutions import holistic

        with quiet_native_logs():  # the graph logs as it starts (core.io.native_log)
            self._model = holistic.Holistic(static_image_mode=False, model_complexity=1, enable_segmentation=True,
                                            refine_face_landmarks=True)
        self._first = True
        return self

    def __exit__(self, *exc) -> None:
        self._model.close()

    def __call__(self, image: np.ndarray) -> Perception | None:
        """The person in ``image`` (pixels of ``image``), or None when no body or no mask was found."""
        height, width = image.shape[:2]
        with quiet_native_logs() if self._first else contextlib.nullcontext():  # and as its models first run
            result = self._model.process(np.ascontiguousarray(image))
        self._first = False
        found = holistic_arrays(result, width, height)
        if found is None or result.segmentation_mask is None:
            return None
        bbox = person_bbox(found["mask"], found["body"], (width, height))
        if bbox is None:
            return None
        return Perception(mask=found["mask"], body=found["body"], left_hand=found["left_hand"],
                          right_hand=found["right_hand"], face=found["face"], body_world=found["body_world"],
                          bbox=bbox)


# --- pose refinement ------------------------------------------------------------------------------------


def confident_hands(names: list[str], conf: np.ndarray) -> list[str]:
    """Hand-pose parameter names (``left_hand_pose`` ...) whose finger keypoints are confidently seen."""
    hands = []
    for side in ("left", "right"):
        rows = [k for k, n in enumerate(names) if n.startswith(f"{side}_") and n != f"{side}_wrist"
                and any(f in n for f in ("thumb", "index", "middle", "ring", "pinky"))]
        if rows and float(np.mean(conf[rows])) >= HAND_CONFIDENCE:
            hands.append(f"{side}_hand_pose")
    return hands


def refine_pose(body: BodyModel, start: dict[str, np.ndarray], mask: np.ndarray, names: list[str],
                keypoints: np.ndarray, conf: np.ndarray, K: np.ndarray, iterations: int, learning_rate: float,
                weights: FitWeights | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Refine a pose to detected keypoints and a person mask with ``core.prep.fit``'s objective.

    Args:
        start: SMPL-X parameters (1-D arrays, photo convention: camera ``PHOTO_VIEWMAT``), shape included.
        mask: ``[H, W]`` person mask in [0, 1]; names, keypoints ``[K, 2]`` px, conf ``[K]``: fitting keypoints.
        K: ``[3, 3]`` intrinsics of the mask's pixels.
    Returns:
        (refined parameters, ``fit_metrics`` of the result). Only ``global_orient``, ``body_pose``,
        ``transl`` and the hands in ``confident_hands`` move; the shape stays fixed.
    """
    weights = weights or FitWeights()
    surface = model_surface_points(body)
    height_px = person_height_px(mask, conf, keypoints)
    with single_torch_thread():
        objective = FitObjective(body, surface, keypoint_targets(names, keypoints, conf, surface),
                                 silhouette_target(mask, K, None, weights.silhouette_size), K, height_px, weights)
        params = {k: torch.as_tensor(np.asarray(v, np.float32)).reshape(1, -1).clone() for k, v in start.items()}
        free = ["global_orient", "transl", "body_pose", *confident_hands(names, conf)]
        # The fit's last stage: keypoints at full weight and the silhouette on from the first step
        # (the start pose is already close); the camera, limbs and body stages are skipped.
        optimise(params, objective, (iterations,), (learning_rate,), [("hands", free)])
    result = {k: v[0].numpy().astype(np.float32) for k, v in params.items()}
    projected = project_keypoints(body, result, names, K)
    return result, fit_metrics(projected, keypoints, conf, height_px, names)


# --- the import -------------------------------------------------------------------------------------------


def fitted_shape(body: BodyModel, smplx: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The subject's ``betas`` and ``expression`` sized for ``body`` (1-D float32)."""
    betas = shape_tensor(np.asarray(smplx.get("betas", np.zeros(0)), np.float32), body.num_betas)[0]
    expression = shape_tensor(np.asarray(smplx.get("expression", np.zeros(0)), np.float32), body.num_expression)[0]
    return {"betas": betas.numpy(), "expression": expression.numpy()}


def motion_pose(motion: Motion, index: int) -> dict[str, np.ndarray]:
    """Pose parameters (no shape) of motion frame ``index`` as 1-D float32 arrays."""
    return {k: np.asarray(v, np.float32).reshape(-1) for k, v in motion.frame(index).items() if k in SMPLX_POSE_SIZES}


def import_frame(body: BodyModel, image: np.ndarray, perception: Perception, start: dict[str, np.ndarray],
                 viewmat: np.ndarray, K: np.ndarray, pelvis: np.ndarray, settings: ImportSettings,
                 renderer=None) -> tuple[dict | None, dict]:
    """One training frame from a square video frame at ``settings.resolution``.

    Args:
        image: ``[S, S, 3]`` uint8 frame; perception: the person found in it (pixels of ``image``).
        start: world SMPL-X parameters (pose + shape) the video is assumed to show.
        viewmat, K: the driving camera at ``settings.resolution``; pelvis: rest pelvis ``[3]`` of the shape.
    Returns:
        (frame dict as ``FrameSet.frame`` returns, or None for a poor fit; metrics with
        ``body_keypoint_error_pct`` and ``silhouette_iou``).
    """
    size = settings.resolution
    scale = size / image.shape[0]
    names, xy, conf = keypoints_for_fitting(perception)
    mask = cv2.resize(perception.mask, (size, size), interpolation=cv2.INTER_AREA)
    rotation, translation = world_to_photo(viewmat)
    refined, metrics = refine_pose(body, move_body(start, rotation, translation, pelvis), mask, names, xy * scale,
                                   conf, K, settings.iterations, settings.learning_rate)
    geometry = render_geometry(body, refined, K, size, size, renderer)
    metrics["silhouette_iou"] = silhouette_iou(geometry["mask"], mask)
    error = metrics.get("body_keypoint_error_pct", float("nan"))
    if not (error <= settings.max_keypoint_error and metrics["silhouette_iou"] >= settings.min_silhouette_iou):
        return None, metrics
    rgb = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    params = move_body(refined, rotation.T, -rotation.T @ translation, pelvis)
    return {"rgb": premultiplied_foreground(rgb, mask), "mask": mask[..., None], "depth": geometry["depth"],
            "normal": geometry["normal"], "part_seg": geometry["part_seg"], "K": K, "viewmat": viewmat,
            "params": params}, metrics


def import_video(video: str | Path, motion: Motion, body: BodyModel, smplx: dict[str, np.ndarray],
                 settings: ImportSettings | None = None,
                 progress: Callable[[float], None] | None = None) -> ImportResult:
    """Training frames from a video generated from the driving video of ``motion`` on this subject.

    Args:
        video: the generated video (any container/codec PyAV reads; non-square frames are centre-cropped).
        motion: the motion the driving video showed; smplx: the subject's parameters (``betas``,
            optionally ``expression``).
        settings: resolution, frame selection, refinement; progress: ``callable(fraction)``.
    Returns:
        ``ImportResult``; its FrameSet has ``source="imported"`` and labels ``"<video name>:<frame>"``.
    """
    from core.render.mesh import MeshRenderer

    settings = settings or ImportSettings()
    if settings.every < 1:
        raise UserError(f"--every must be at least 1, got {settings.every}")
    if settings.max_frames is not None and settings.max_frames < 1:
        raise UserError(f"--max-frames must be at least 1, got {settings.max_frames}")
    video = Path(video)
    info = video_info(video)
    timed = motion_for_video(motion, info)
    shape = fitted_shape(body, smplx)
    pelvis = rest_pelvis(body, shape)
    viewmat, K = driving_camera(body, shape["betas"], settings.resolution, settings.distance)
    wanted = list(range(0, info.num_frames, settings.every))[:settings.max_frames]
    frames, labels, per_frame = [], [], []
    renderer = MeshRenderer()
    try:
        with VideoPerception() as perceive:
            for index, image in enumerate(read_frames(video)):
                if index > wanted[-1]:
                    break
                image = square_crop(image)
                perception = perceive(image)  # every frame, so tracking follows the motion
                if index not in wanted:
                    continue
                record = {"index": index, "status": "no person"}
                if perception is not None:
                    start = {**motion_pose(timed, min(index, timed.num_frames - 1)), **shape}
                    frame, metrics = import_frame(body, image, perception, start, viewmat, K, pelvis, settings,
                                                  renderer)
                    record.update(status="ok" if frame is not None else "poor fit",
                                  body_keypoint_error_pct=metrics.get("body_keypoint_error_pct"),
                                  silhouette_iou=metrics["silhouette_iou"])
                    if frame is not None:
                        frames.append(pack_frame(frame))
                        labels.append(f"{video.name}:{index}")
                per_frame.append(record)
                if progress is not None:
                    progress(len(per_frame) / len(wanted))
    finally:
        renderer.close()
    result_frames = FrameSet.from_frames(frames, source=IMPORTED_SOURCE, labels=labels) if frames else None
    return ImportResult(frames=result_frames, video_frames=info.num_frames, per_frame=per_frame)


def resize_frames(frames: FrameSet, size: int) -> FrameSet:
    """``frames`` at ``size``² pixels: colours and mask area-filtered, geometry and parts nearest, K scaled."""
    if frames.rgb.shape[1] == size:
        return frames
    scale = size / frames.rgb.shape[1]

    def each(images: np.ndarray, smooth: bool) -> np.ndarray:
        mode = cv2.INTER_AREA if smooth else cv2.INTER_NEAREST
        out = [cv2.resize(image.astype(np.float32), (size, size), interpolation=mode) for image in images]
        return np.stack(out).astype(images.dtype) if not smooth else np.round(np.stack(out)).astype(images.dtype)

    K = frames.K.copy()
    K[:, :2] *= scale
    return FrameSet(rgb=each(frames.rgb, True), mask=each(frames.mask, True), depth=each(frames.depth, False),
                    normal=each(frames.normal, False), part_seg=each(frames.part_seg, False), K=K,
                    viewmat=frames.viewmat, params=frames.params, source=frames.source, labels=list(frames.labels))


def subject_folder(source: str | Path) -> Path:
    """The Subject folder of ``source``: a Subject folder itself or a reconstruct output (its work/subject)."""
    source = Path(source)
    for folder in (source, source / "work" / "subject"):
        if (folder / "subject.json").is_file():
            return folder
    if not source.exists():
        raise UserError("not found; give a Subject folder (from prep) or a reconstruct output folder", source)
    raise UserError("not a Subject folder or reconstruct output (no subject.json, no work/subject)", source)


def default_output(subject_dir: Path, video: str | Path) -> Path:
    """Where imported frames go by default: beside the Subject folder, named after the video."""
    return subject_dir.parent / f"imported_{Path(video).stem}.npz"
