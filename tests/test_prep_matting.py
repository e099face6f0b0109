"""The person's own colour at the soft edge of the mask (core.prep.matting)."""
from __future__ import annotations

import numpy as np

from core.prep.matting import premultiplied_foreground


def test_premultiplied_foreground_removes_the_backdrop_from_soft_edges():
    """A red person with a soft edge over a blue-grey wall: the naive ``a * I`` keeps wall colour in the edge
    pixels; ``premultiplied_foreground`` gives ``a * red`` there. Over black it changes nothing."""
    size = 96
    x = np.arange(size, dtype=np.float32)[None, :].repeat(size, 0)
    alpha = np.clip((60.0 - x) / 8.0, 0.0, 1.0)  # person on the left, an 8-px soft edge
    person, wall = np.array([0.9, 0.1, 0.1], np.float32), np.array([0.3, 0.4, 0.8], np.float32)
    photo = alpha[..., None] * person + (1.0 - alpha[..., None]) * wall
    truth = alpha[..., None] * person
    edge = (alpha > 0.05) & (alpha < 0.95)
    naive = alpha[..., None] * photo
    ours = premultiplied_foreground(photo, alpha)
    assert np.abs(naive - truth)[edge].max() > 0.15  # the wall is in the naive target
    assert np.abs(ours - truth)[edge].max() < 0.02
    np.testing.assert_allclose(ours[alpha == 1.0], photo[alpha == 1.0], atol=1e-6)
    assert not ours[alpha == 0.0].any()
    over_black = alpha[..., None] * person
    np.testing.assert_allclose(premultiplied_foreground(over_black, alpha), over_black, atol=1e-6)
