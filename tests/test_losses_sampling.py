"""Loss terms and balanced sampling: checks against independent expectations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core import losses
from core.sampling import BalancedSampler, seam_boundary, sobel_magnitude


def test_box_filter_matches_average_pooling():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 2, 20, 17, generator=g)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3), mode="replicate")
    expected = torch.nn.functional.avg_pool2d(padded, 7, stride=1)
    assert torch.allclose(losses.box_filter(x, 7), expected, atol=1e-5)


def test_ssim_identical_is_one_and_noise_lowers_it():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 32, 32, 3, generator=g)
    assert torch.allclose(losses.ssim_map(img, img), torch.ones_like(img), atol=1e-4)
    noisy = (img + 0.2 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    assert losses.ssim_map(img, noisy).mean() < 0.9


def test_ssim_matches_global_formula_on_constant_patches():
    # With constant images the local statistics are exact: SSIM = (2ab + c1) / (a² + b² + c1).
    a, b = 0.3, 0.6
    s = losses.ssim_map(torch.full((1, 16, 16, 1), a), torch.full((1, 16, 16, 1), b))
    expected = (2 * a * b + 0.01**2) / (a**2 + b**2 + 0.01**2)
    # float32 running sums leave ~1e-5 of error in the local moments
    assert torch.allclose(s, torch.full_like(s, expected), atol=2e-4)


def test_ssim_cpu_kernels_match_the_torch_definition_values_and_gradients():
    """Float32 CPU images take core.ssim_cpu's numba passes: the same map and gradients (w.r.t. both images)
    as the torch ops (in float64 as the reference), on shapes down to one pixel (every window clamped) and on
    a non-contiguous crop, as training passes them."""
    g = torch.Generator().manual_seed(3)
    for shape, window in (((1, 47, 31, 3), 11), ((2, 9, 13, 2), 11), ((1, 3, 40, 1), 11), ((1, 1, 1, 3), 11),
                          ((1, 2, 2, 1), 11), ((1, 20, 24, 3), 5)):
        a = torch.rand(shape, generator=g).requires_grad_()
        b = torch.rand(shape, generator=g).requires_grad_()
        upstream = torch.randn(shape, generator=g)
        ours = losses.ssim_map(a, b, window)
        assert ours.grad_fn is not None and "SSIMMap" in type(ours.grad_fn).__name__
        a64, b64 = a.detach().double().requires_grad_(), b.detach().double().requires_grad_()
        reference = losses.ssim_map_torch(a64, b64, window)
        assert torch.allclose(ours.double(), reference, atol=1e-5), (ours.double() - reference).abs().max()
        grads = torch.autograd.grad((ours * upstream).sum(), [a, b])
        grads_ref = torch.autograd.grad((reference * upstream.double()).sum(), [a64, b64])
        for mine, ref in zip(grads, grads_ref):
            assert torch.allclose(mine.double(), ref, atol=1e-5 * ref.abs().max()), (mine.double() - ref).abs().max()
    image = torch.rand(1, 40, 50, 3, generator=g).requires_grad_()
    target = torch.rand(1, 40, 50, 3, generator=g)
    crop = image[:, 5:30, 7:40]  # a loss window: a non-contiguous view
    (grad,) = torch.autograd.grad(losses.ssim_map(crop, target[:, 5:30, 7:40]).sum(), image)
    (grad_ref,) = torch.autograd.grad(losses.ssim_map_torch(crop, target[:, 5:30, 7:40]).sum(), image)
    assert torch.allclose(grad, grad_ref, atol=1e-4 * grad_ref.abs().max())
    assert grad[:, :5].abs().max() == 0 and grad[:, 5:30, 7:40].abs().max() > 0


def test_image_loss_weight_map_ignores_zero_weight_pixels():
    pred = torch.zeros(1, 8, 8, 3)
    target = torch.zeros(1, 8, 8, 3)
    target[:, :, :4] = 1.0  # differs only on the left half
    weight = torch.zeros(1, 8, 8, 1)
    weight[:, :, 4:] = 1.0
    assert losses.image_loss(pred, target, weight, ssim_weight=0.0) == 0.0
    assert torch.isclose(losses.image_loss(pred, target, None, ssim_weight=0.0), torch.tensor(0.5))


def test_depth_loss_is_scale_and_shift_invariant():
    g = torch.Generator().manual_seed(1)
    depth = 2.0 + torch.rand(1, 16, 16, 1, generator=g)
    mask = torch.ones_like(depth)
    assert losses.depth_loss(depth, 5.0 * depth + 3.0, mask) < 1e-10
    assert losses.depth_loss(depth, torch.rand(1, 16, 16, 1, generator=g), mask) > 1e-3


def test_normal_loss_zero_for_same_direction_and_two_plus_for_opposite():
    n = torch.zeros(1, 4, 4, 3)
    n[..., 2] = 1.0
    mask = torch.ones(1, 4, 4, 1)
    assert losses.normal_loss(n, 3.0 * n, mask) < 1e-6
    assert torch.isclose(losses.normal_loss(n, -n, mask), torch.tensor(4.0))  # L1 = 2, 1 - cos = 2


def test_laplacian_is_zero_for_constant_and_linear_on_a_grid_interior():
    # A 3x3 grid of vertices triangulated; the centre vertex's neighbours average to the centre.
    xs, ys = np.meshgrid(np.arange(3), np.arange(3))
    idx = np.arange(9).reshape(3, 3)
    faces = []
    for r in range(2):
        for c in range(2):
            a, b, d, e = idx[r, c], idx[r, c + 1], idx[r + 1, c], idx[r + 1, c + 1]
            faces += [[a, b, e], [a, e, d]]
    adj = losses.mesh_adjacency(torch.tensor(faces), 9)
    const = torch.ones(9, 2)
    assert losses.laplacian_loss(const, adj) < 1e-12
    bump = torch.zeros(9, 1)
    bump[4] = 1.0  # the centre vertex raised: its Laplacian is 1, each neighbour's is -1/deg
    assert losses.laplacian_loss(bump, adj) > 1.0 / 9


def test_uniform_laplacian_and_its_gradient_match_a_loop_over_neighbours():
    # Two squares sharing an edge plus an isolated vertex 6 (degree 0: its Laplacian is x itself).
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2]])
    adj = losses.mesh_adjacency(faces, 7)
    neighbours = {i: set() for i in range(7)}
    for f in faces.tolist():
        for a in f:
            neighbours[a] |= set(f) - {a}
    g = torch.Generator().manual_seed(4)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    expected = torch.stack([x[i] - (x[sorted(nb)].mean(0) if nb else 0.0) for i, nb in neighbours.items()])
    xf = x.float().requires_grad_()
    out = losses.uniform_laplacian(xf, adj)
    assert torch.allclose(out.double(), expected, atol=1e-6)
    # gradient of <L x, w> is Lᵀ w: compare with the dense matrix built from the neighbour lists
    dense = torch.eye(7, dtype=torch.float64)
    for i, nb in neighbours.items():
        for j in nb:
            dense[i, j] = -1.0 / len(nb)
    w = torch.randn(7, 3, generator=g)
    (out * w).sum().backward()
    assert torch.allclose(xf.grad.double(), dense.T @ w.double(), atol=1e-6)
    assert torch.allclose(adj.laplacian.to_dense().double(), dense)


def test_psnr_of_known_mse():
    a = torch.zeros(1, 4, 4, 3)
    assert abs(losses.psnr(a, a + 0.1) - 20.0) < 1e-4


def test_balanced_sampler_draws_photo_half_the_time():
    s = BalancedSampler(num_generated=30, photo_share=0.5, seed=3)
    for _ in range(600):
        s.draw()
    assert abs(s.photo_fraction - 0.5) < 1e-9  # whole epochs: exactly half
    assert (s.counts[1:] == 10).all()  # every generated frame drawn once per epoch
    unbalanced = BalancedSampler(num_generated=30, balanced=False, seed=3)
    for _ in range(310):
        unbalanced.draw()
    assert abs(unbalanced.photo_fraction - 1 / 31) < 1e-9


def test_sampler_resume_reproduces_the_sequence():
    a = BalancedSampler(num_generated=7, seed=11)
    first = [a.draw() for _ in range(10)]
    b = BalancedSampler(num_generated=7, seed=11)
    b.load_state_dict(a.state_dict())
    assert [a.draw() for _ in range(25)] == [b.draw() for _ in range(25)]
    assert first != [BalancedSampler(num_generated=7, seed=12).draw() for _ in range(10)]


def test_sampler_without_the_photo_passes_over_its_places_uncounted():
    """``draw(photo=False)`` (registration's generated-only phase) walks the same sequence, skipping the photo."""
    a, b = BalancedSampler(num_generated=5, seed=2), BalancedSampler(num_generated=5, seed=2)
    sequence = [a.draw() for _ in range(80)]  # about half are the photo
    skipped = [b.draw(photo=False) for _ in range(20)]
    assert skipped == [i for i in sequence if i][:20]
    assert b.counts[0] == 0 and b.counts.sum() == 20
    assert BalancedSampler(num_generated=0).draw(photo=False) == 0  # nothing else to draw


def test_seam_boundary_finds_depth_jump_not_smooth_surface():
    h, w = 64, 64
    mask = np.zeros((h, w), bool)
    mask[8:56, 8:56] = True
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    smooth = np.stack([xx * 0.004, yy * 0.004, np.zeros_like(xx)], -1)  # 4 mm per pixel
    assert not seam_boundary(smooth, mask, dilate_fraction=0.0).any()
    jump = smooth.copy()
    jump[:, 32:, 2] += 0.2  # an arm 20 cm in front of the torso from column 32 on
    seam = seam_boundary(jump, mask, dilate_fraction=0.0)
    assert seam[20:40, 31:33].all() and not seam[:, :28].any() and not seam[:, 36:].any()
    wide = seam_boundary(jump, mask, dilate_fraction=0.1)  # radius ~5 px
    assert wide[30, 28] and not wide[30, 24]


def test_sobel_magnitude_of_ramp():
    ramp = np.tile(np.arange(10, dtype=np.float32) * 0.5, (10, 1))
    assert np.allclose(sobel_magnitude(ramp)[2:-2, 2:-2], 0.5)


@pytest.mark.parametrize("hinge, bound, factors, sign", [
    (losses.scale_floor_loss, 0.5, [1.3, 0.6, 0.25, 0.5], -1.0),  # descent grows the 0.25x one
    (losses.scale_ceiling_loss, 4.0, [3.9, 0.2, 8.0, 4.0], 1.0),  # descent shrinks the 8x one
], ids=["floor", "ceiling"])
def test_scale_hinges_move_only_scales_past_their_bound(hinge, bound, factors, sign):
    start = torch.tensor([0.01, 0.01, 0.02, 0.02])
    log_scales = torch.log(start * torch.tensor(factors)).requires_grad_()
    loss = hinge(log_scales, start, bound)
    assert abs(loss.item() - math.log(factors[2] / bound) ** 2 / 4) < 1e-6  # only the third one counts
    loss.backward()
    assert sign * log_scales.grad[2] > 0 and torch.all(log_scales.grad[[0, 1, 3]] == 0)
    assert float(hinge(torch.log(start), start, bound)) == 0.0
