"""Animation sanity measures: surface distances, silhouette IoU, and the per-frame check on avatars."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.animation_check import check_frames, silhouette_iou, surface_distances, surface_samples
from core.avatar.build import build_avatar
from core.body import BodyModel
from core.config import AvatarConfig
from core.motion import load_builtin

CUBE_VERTICES = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32)
CUBE_FACES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                       [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])


def test_samples_cover_every_face_within_the_spacing():
    spacing = 0.05
    samples = surface_samples(CUBE_VERTICES, CUBE_FACES, spacing)
    # Every sample lies on the cube's surface: one coordinate is 0 or 1, all in [0, 1].
    assert np.all((samples >= -1e-6) & (samples <= 1 + 1e-6))
    assert np.all(np.min(np.minimum(np.abs(samples), np.abs(samples - 1)), axis=1) < 1e-6)
    # Random surface points all have a sample within the spacing.
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 1, (500, 3)).astype(np.float32)
    axis = rng.integers(0, 3, 500)
    points[np.arange(500), axis] = rng.integers(0, 2, 500)
    assert surface_distances(points, CUBE_VERTICES, CUBE_FACES, spacing).max() <= spacing


def test_distances_match_the_exact_distance_to_a_cube():
    rng = np.random.default_rng(1)
    outside = rng.uniform(-0.5, 1.5, (300, 3)).astype(np.float32)
    exact = np.linalg.norm(outside - np.clip(outside, 0, 1), axis=1)
    outside, exact = outside[exact > 0], exact[exact > 0]
    inside = rng.uniform(0.1, 0.9, (300, 3)).astype(np.float32)
    exact_inside = np.minimum(inside, 1 - inside).min(axis=1)
    spacing = 0.01
    for points, truth in ((outside, exact), (inside, exact_inside)):
        found = surface_distances(points, CUBE_VERTICES, CUBE_FACES, spacing)
        assert np.all(found >= truth - 1e-5)  # never nearer than the real surface
        assert np.all(found <= truth + spacing)  # and at most one sample spacing further


def test_silhouette_iou():
    a = np.zeros((10, 10))
    b = np.zeros((10, 10))
    a[:, :6] = 1.0
    b[:, 4:] = 1.0
    assert silhouette_iou(a, b) == pytest.approx(20 / 100)
    assert silhouette_iou(a, a) == 1.0
    assert silhouette_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


def test_check_frames_flags_gaussians_thrown_off_the_body(body):
    betas = np.zeros(body.num_betas, np.float32)
    avatar = build_avatar(body, betas, AvatarConfig(num_gaussians=14000))
    manifest = {"subject": {"betas": betas.tolist()}}
    motion = load_builtin("wave")
    good = check_frames(avatar, body, manifest, motion, [10, 40], size=256)
    assert [c.label for c in good] == ["wave:10", "wave:40"]
    for check in good:
        assert check.p99_cm < 2.0  # on the surface up to skinning differences
        assert min(check.iou.values()) > 0.75  # thin untrained splats, blurred at 256^2
        assert min(check.covered.values()) > 0.8
    with torch.no_grad():
        thrown = torch.zeros(avatar.num_gaussians, dtype=torch.bool)
        thrown[::50] = True  # 2 % of the Gaussians 30 cm out to the side
        avatar.offsets[thrown] += torch.tensor([0.3, 0.0, 0.0])
    bad = check_frames(avatar, body, manifest, motion, [10], size=128)[0]
    assert bad.p99_cm > 8.0
    assert bad.max_cm > 20.0
    assert bad.iou["front"] < good[0].iou["front"]  # stray splats outside the body silhouette
