"""Camera helpers: look_at/orbit put the target at the image centre, in OpenCV axes."""
from __future__ import annotations

import math

import numpy as np
import torch

from core.camera import intrinsics, look_at, orbit_camera


def project(view, K, point):
    cam = view @ torch.cat([point, torch.ones(1)])
    uv = K @ cam[:3]
    return uv[:2] / uv[2], cam[2]


def test_front_orbit_sees_target_at_centre_and_up_is_image_up():
    target = torch.tensor([0.0, 1.0, 0.0])
    view = orbit_camera(target, 3.0, azimuth=0.0)
    K = intrinsics(500.0, 256, 256)
    uv, z = project(view, K, target)
    assert torch.allclose(uv, torch.tensor([128.0, 128.0]), atol=1e-4) and abs(z - 3.0) < 1e-5
    above, _ = project(view, K, target + torch.tensor([0.0, 0.5, 0.0]))
    assert above[1] < 128  # world up is image up
    left_side, _ = project(view, K, target + torch.tensor([0.3, 0.0, 0.0]))
    assert left_side[0] > 128  # the person's left (+x) appears on the image's right, as in a photo


def test_orbit_keeps_distance_and_side_view():
    target = torch.tensor([0.2, 1.0, -0.1])
    for az in (0.0, 1.0, math.pi / 2, 3.0):
        view = orbit_camera(target, 2.5, az, elevation=0.3)
        eye = -view[:3, :3].T @ view[:3, 3]
        assert abs((eye - target).norm() - 2.5) < 1e-5
        assert torch.allclose(view[:3, :3] @ view[:3, :3].T, torch.eye(3), atol=1e-6)
    side = orbit_camera(target, 2.0, math.pi / 2)
    eye = -side[:3, :3].T @ side[:3, 3]
    assert eye[0] > target[0] + 1.9  # azimuth 90° sits on +x


def test_look_at_straight_down_is_finite():
    view = look_at(torch.tensor([0.0, 5.0, 0.0]), torch.zeros(3))
    assert torch.isfinite(view).all()


def test_camera_center_and_facing_points():
    from core.camera import camera_center, facing_camera

    eye = torch.tensor([0.3, 1.2, 2.5])
    view = look_at(eye, torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(camera_center(view), eye, atol=1e-5)
    assert np.allclose(camera_center(view.numpy()), eye.numpy(), atol=1e-5)
    points = torch.tensor([[0.0, 1.0, 0.1], [0.0, 1.0, -0.1]])
    normals = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])  # front and back of a body at the origin
    assert facing_camera(points, normals, view).tolist() == [True, False]


def test_project_points_numpy_and_torch_alike():
    """A point on the optical axis lands on the principal point; one 1 m right at 2 m depth lands f/2 px right;
    numpy and torch give the same pixels and depths."""
    from core.camera import project_points

    view = look_at(torch.tensor([0.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 0.0]))
    K = intrinsics(100.0, 64, 48)
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    pixels, depth = project_points(points, view, K)
    torch.testing.assert_close(depth, torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(pixels[0], K[:2, 2])
    assert abs(abs(float(pixels[1, 0] - pixels[0, 0])) - 50.0) < 1e-4 and abs(float(pixels[1, 1] - pixels[0, 1])) < 1e-4
    np_pixels, np_depth = project_points(points.numpy(), view.numpy(), K.numpy())
    np.testing.assert_allclose(np_pixels, pixels.numpy(), atol=1e-5)
    np.testing.assert_allclose(np_depth, depth.numpy(), atol=1e-6)
