"""Photo loading, person perception, keypoint mapping, crops/intrinsics and albedo (core.prep).

Real photos come from Debian's ``opencv-doc`` package (messi5.jpg, basketball1.png); the tests that
need them skip, saying so, when it is not installed. Nothing here is committed from those images.
"""
from __future__ import annotations

import gzip
import io
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from core.errors import UserError
from core.prep.albedo import albedo_from_file, estimate_albedo, linear_to_srgb, srgb_to_linear
from core.prep.crop import (
    Crop,
    crop_image,
    crop_intrinsics,
    crop_points,
    default_intrinsics,
    person_crop,
    uncrop_points,
)
from core.prep.image_io import apply_exif_orientation, load_photo
from core.prep.landmarks import BONE_PAIRS, FITTING_NAMES, KEYPOINT_TABLE, bone_directions, keypoints_for_fitting
from core.prep.perception import (
    FALLBACK_HAND_CONFIDENCE,
    Perception,
    fallback_hands,
    load_perception,
    perceive,
    perceive_photo,
    refine_mask_grabcut,
    save_perception,
)

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    """messi5.jpg and basketball1.png from opencv-doc, un-gzipped into a tmp dir if Debian gzipped them."""
    out = tmp_path_factory.mktemp("opencv_samples")
    for name in ("messi5.jpg", "basketball1.png"):
        plain, packed = OPENCV_DATA / name, OPENCV_DATA / (name + ".gz")
        if plain.exists():
            shutil.copyfile(plain, out / name)
        elif packed.exists():
            with gzip.open(packed, "rb") as src, open(out / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            pytest.skip(f"{plain} not found: install the Debian package opencv-doc (apt-get install opencv-doc)")
    return out


@pytest.fixture(scope="module")
def messi_path(sample_dir) -> Path:
    return sample_dir / "messi5.jpg"


@pytest.fixture(scope="module")
def messi(messi_path) -> Perception:
    return perceive_photo(load_photo(messi_path))  # default: GrabCut refinement on


@pytest.fixture(scope="module")
def basketball(sample_dir) -> Perception:
    return perceive_photo(load_photo(sample_dir / "basketball1.png"))


@pytest.fixture(scope="module")
def messi_u8(messi_path) -> np.ndarray:
    return np.asarray(Image.open(messi_path).convert("RGB"))


def _assert_one_line_user_error(excinfo, path: Path, *words: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message and path.name in message, message
    for word in words:
        assert word in message.lower(), message


# --- image input ------------------------------------------------------------------------------------


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("suffix, kwargs", [(".png", {}), (".bmp", {}), (".webp", {"lossless": True})])
def test_lossless_formats_round_trip(messi_u8, tmp_path, suffix, kwargs):
    path = _save(Image.fromarray(messi_u8), tmp_path / f"photo{suffix}", **kwargs)
    photo = load_photo(path)
    assert photo.rgb.dtype == np.float32 and photo.alpha is None and photo.scale == 1.0
    np.testing.assert_allclose(photo.rgb, messi_u8 / 255.0, atol=1e-6)
    assert photo.orig_size == (messi_u8.shape[1], messi_u8.shape[0])


def test_jpeg_and_cmyk_jpeg(messi_u8, tmp_path):
    rgb = load_photo(_save(Image.fromarray(messi_u8), tmp_path / "p.jpg", quality=95)).rgb
    cmyk = load_photo(_save(Image.fromarray(messi_u8).convert("CMYK"), tmp_path / "c.jpg", quality=95)).rgb
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    assert np.abs(rgb - messi_u8 / 255.0).mean() < 0.02
    assert cmyk.shape == rgb.shape and np.abs(cmyk - messi_u8 / 255.0).mean() < 0.03


def test_16bit_colour_png_keeps_full_precision(tmp_path):
    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, (80, 96, 3), dtype=np.uint16)
    rgba16 = np.concatenate([rgb16, rng.integers(0, 65536, (80, 96, 1), dtype=np.uint16)], axis=-1)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[..., ::-1])
    cv2.imwrite(str(tmp_path / "rgba16.png"), rgba16[..., [2, 1, 0, 3]])
    photo = load_photo(tmp_path / "rgb16.png")
    np.testing.assert_allclose(photo.rgb, rgb16 / 65535.0, atol=1e-6)  # 8-bit would be off by up to 1/510
    with_alpha = load_photo(tmp_path / "rgba16.png")
    np.testing.assert_allclose(with_alpha.alpha, rgba16[..., 3] / 65535.0, atol=1e-6)


def test_16bit_grey_grey_and_grey_alpha(tmp_path):
    grey16 = np.random.default_rng(2).integers(0, 65536, (70, 90), dtype=np.uint16)
    photo = load_photo(_save(Image.fromarray(grey16), tmp_path / "g16.png"))
    np.testing.assert_allclose(photo.rgb[..., 1], grey16 / 65535.0, atol=1e-6)
    assert np.array_equal(photo.rgb[..., 0], photo.rgb[..., 2])
    grey8 = (grey16 >> 8).astype(np.uint8)
    alpha = np.full_like(grey8, 255)
    alpha[:, :30] = 0
    photo = load_photo(_save(Image.fromarray(np.stack([grey8, alpha], -1), "LA"), tmp_path / "la.png"))
    np.testing.assert_allclose(photo.rgb[..., 0], grey8 / 255.0, atol=1e-6)
    assert photo.alpha is not None and photo.alpha[:, :30].max() == 0 and photo.alpha[:, 30:].min() == 1


def test_palette_with_transparency_and_rgba(messi_u8, tmp_path):
    palette_image = Image.fromarray(messi_u8).quantize(colors=32)
    indices = np.asarray(palette_image)
    clear_index = int(indices[0, 0])
    palette_image.info["transparency"] = clear_index
    photo = load_photo(_save(palette_image, tmp_path / "p.png", transparency=clear_index))
    assert photo.alpha is not None
    assert np.array_equal(photo.alpha == 0, indices == clear_index)

    rgba = np.dstack([messi_u8, np.full(messi_u8.shape[:2], 255, np.uint8)])
    assert load_photo(_save(Image.fromarray(rgba), tmp_path / "opaque.png")).alpha is None  # no mask in it
    rgba[:, :100, 3] = 0
    photo = load_photo(_save(Image.fromarray(rgba), tmp_path / "rgba.png"))
    assert photo.alpha[:, :100].max() == 0 and photo.alpha[:, 100:].min() == 1


def _exif_bytes(orientation: int | None = None, focal_35mm: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if focal_35mm is not None:
        exif.get_ifd(0x8769)[0xA405] = focal_35mm
    return exif.tobytes()


def test_exif_rotated_jpeg_is_made_upright_and_focal_is_read(messi_u8, tmp_path):
    # Orientation 6 means "rotate 90 degrees clockwise to view": store the pixels rotated the other way.
    stored = np.rot90(messi_u8, 1)
    path = _save(Image.fromarray(stored), tmp_path / "rot.jpg", quality=95, exif=_exif_bytes(6, 28))
    photo = load_photo(path)
    assert photo.rgb.shape == messi_u8.shape
    assert np.abs(photo.rgb - messi_u8 / 255.0).mean() < 0.02
    assert photo.focal_35mm == 28.0
    assert load_photo(_save(Image.fromarray(messi_u8), tmp_path / "plain.jpg")).focal_35mm is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_numpy_orientation_matches_pillow(orientation):
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(buffer)))
    assert np.array_equal(apply_exif_orientation(pixels, orientation), expected)


def _png_with_exif(png: bytes, exif: bytes) -> bytes:
    """Insert an eXIf chunk right after IHDR (OpenCV cannot write one; Pillow cannot write 16-bit RGB)."""
    chunk = b"eXIf" + exif
    exif_chunk = struct.pack(">I", len(exif)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return png[:ihdr_end] + exif_chunk + png[ihdr_end:]


def test_16bit_png_with_exif_orientation(tmp_path):
    upright = np.random.default_rng(3).integers(0, 65536, (64, 100, 3), dtype=np.uint16)
    stored = np.rot90(upright, 1)  # orientation 6: viewer rotates clockwise
    ok, png = cv2.imencode(".png", np.ascontiguousarray(stored[..., ::-1]))
    path = tmp_path / "rot16.png"
    path.write_bytes(_png_with_exif(png.tobytes(), _exif_bytes(6)))
    np.testing.assert_allclose(load_photo(path).rgb, upright / 65535.0, atol=1e-6)


def test_downscale_to_max_side(messi_u8, tmp_path):
    path = _save(Image.fromarray(messi_u8), tmp_path / "big.png")
    photo = load_photo(path, max_side=274)
    assert photo.rgb.shape == (171, 274, 3) and photo.scale == pytest.approx(0.5)
    assert photo.orig_size == (548, 342)
    expected = cv2.resize(messi_u8, (274, 171), interpolation=cv2.INTER_AREA) / 255.0
    assert np.abs(photo.rgb - expected).max() < 2.5 / 255  # area filter, not nearest/bilinear
    assert load_photo(path, max_side=4096).scale == 1.0


def test_bad_files_give_one_line_user_errors(messi_u8, tmp_path, monkeypatch):
    with pytest.raises(UserError) as excinfo:
        load_photo(tmp_path / "missing.jpg")
    _assert_one_line_user_error(excinfo, tmp_path / "missing.jpg", "not found")

    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(UserError) as excinfo:
        load_photo(empty)
    _assert_one_line_user_error(excinfo, empty, "empty")

    text = tmp_path / "notes.png"
    text.write_text("this is not\na picture\n")
    with pytest.raises(UserError) as excinfo:
        load_photo(text)
    _assert_one_line_user_error(excinfo, text, "not an image")

    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # someone else's global must not hide truncation
    for suffix in (".jpg", ".png"):
        whole = _save(Image.fromarray(messi_u8), tmp_path / f"whole{suffix}")
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        with pytest.raises(UserError) as excinfo:
            load_photo(cut)
        _assert_one_line_user_error(excinfo, cut, "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored

    for size, word in (((40, 300), "too small"), ((500, 100), "elongated"), ((100, 401), "elongated")):
        path = _save(Image.new("RGB", size, (90, 120, 200)), tmp_path / f"s{size[0]}x{size[1]}.png")
        with pytest.raises(UserError) as excinfo:
            load_photo(path)
        _assert_one_line_user_error(excinfo, path, word)
    load_photo(_save(Image.new("RGB", (400, 100)), tmp_path / "four_to_one.png"))  # exactly 4:1 is fine


# --- perception on real photos ---------------------------------------------------------------------


def _image_size(perception: Perception) -> tuple[int, int]:
    return perception.mask.shape[1], perception.mask.shape[0]


@pytest.mark.parametrize("name, coverage", [("messi", (0.08, 0.25)), ("basketball", (0.05, 0.18))])
def test_person_found_with_plausible_mask_and_keypoints(name, coverage, request):
    perception: Perception = request.getfixturevalue(name)
    width, height = _image_size(perception)
    assert perception.body.shape == (33, 3) and perception.face.shape == (478, 3)
    assert perception.left_hand.shape == perception.right_hand.shape == (21, 3)
    assert (perception.face[:, 2] > 0).all(), "face mesh (478 points incl. irises) not found"
    assert np.median(perception.body[:, 2]) > 0.8
    mask = perception.mask
    assert mask.dtype == np.float32 and 0.0 <= mask.min() and mask.max() <= 1.0
    assert coverage[0] < (mask > 0.5).mean() < coverage[1]
    x0, y0, x1, y1 = perception.bbox
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    inside = mask[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))].sum()
    assert inside / mask.sum() > 0.98
    assert (y1 - y0) / height > 0.6  # both are tall, full-body figures
    seen = perception.body[perception.body[:, 2] > 0.8]
    assert ((seen[:, 0] >= 0) & (seen[:, 0] <= width) & (seen[:, 1] >= 0) & (seen[:, 1] <= height)).all()
    # The mask and the skeleton must describe the same person: confident joints lie on (or next to) the mask.
    near_mask = cv2.dilate((mask > 0.5).astype(np.uint8), np.ones((15, 15), np.uint8))
    on_mask = near_mask[seen[:, 1].astype(int).clip(0, height - 1), seen[:, 0].astype(int).clip(0, width - 1)]
    assert on_mask.mean() > 0.9
    face_centre = perception.face[:, :2].mean(axis=0)
    assert np.linalg.norm(face_centre - perception.body[0, :2]) < 0.1 * (y1 - y0)  # face mesh around the nose


def test_messi_sides_are_the_persons_own(messi):
    body = messi.body
    # He faces the camera, so his right side appears on the image's left.
    assert body[12, 0] < body[11, 0] and body[16, 0] < body[15, 0]  # right shoulder/wrist left of left ones
    assert messi.hand_sources == {"left": "holistic", "right": "holistic"}
    assert np.linalg.norm(messi.left_hand[0, :2] - body[15, :2]) < 15
    assert np.linalg.norm(messi.right_hand[0, :2] - body[16, :2]) < 15
    right_eye_corner, left_eye_corner = messi.face[33, 0], messi.face[263, 0]  # mesh eyes follow the same rule
    assert right_eye_corner < left_eye_corner
    assert messi.people == 1 and messi.warnings == []


def test_basketball_two_people_and_cut_off(basketball):
    # Two men: the full-body one on the left (tracked) and a cut-off one in the foreground on the right.
    assert basketball.people == 2
    assert any("person-like regions" in w for w in basketball.warnings)
    assert basketball.bbox[2] < 320  # the tracked person is the one on the left
    assert "person is cut off at the bottom" in basketball.warnings  # his shoes touch the bottom edge
    assert basketball.hand_sources["right"] == "holistic"


def test_choose_person_in_a_two_person_composite(messi_u8):
    small = cv2.resize(messi_u8, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    height, width = messi_u8.shape[:2]
    canvas = np.empty((height, width + small.shape[1], 3), np.uint8)
    canvas[:] = messi_u8.reshape(-1, 3).mean(axis=0)
    canvas[:, small.shape[1] :] = messi_u8  # big copy on the right
    canvas[height - small.shape[0] :, : small.shape[1]] = small
    split = small.shape[1]
    largest = perceive(canvas, refine=None, person=1)
    second = perceive(canvas, refine=None, person=2)
    assert largest.people == second.people == 2
    assert largest.bbox[0] >= split - 5 and second.bbox[2] <= split + 5
    assert (second.bbox[3] - second.bbox[1]) < 0.85 * (largest.bbox[3] - largest.bbox[1])
    with pytest.raises(UserError, match=r"person 3 asked for \(--person\), but 2 person-like"):
        perceive(canvas, refine=None, person=3)


@pytest.mark.parametrize(
    "side, rows, cols",
    [("top", slice(90, None), slice(None)), ("bottom", slice(None, 300), slice(None)),
     ("left", slice(None), slice(100, None)), ("right", slice(None), slice(None, 400))],
)  # fmt: skip
def test_cut_off_person_is_reported(messi_u8, side, rows, cols):
    # Cutting messi5 through his head / shin / outstretched arm / foot.
    result = perceive(np.ascontiguousarray(messi_u8[rows, cols]), refine=None)
    assert [w for w in result.warnings if "cut off" in w] == [f"person is cut off at the {side}"]


def test_small_person_is_reported(messi_u8):
    small = cv2.resize(messi_u8, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    result = perceive(small, refine=None)
    assert any(w.startswith("person is only") for w in result.warnings), result.warnings


@pytest.mark.parametrize("kind", ["noise", "flat"])
def test_no_person_is_a_user_error(kind, tmp_path):
    rng = np.random.default_rng(4)
    if kind == "noise":
        image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    else:
        image = np.full((240, 320, 3), 128, np.uint8)
    path = _save(Image.fromarray(image), tmp_path / f"{kind}.png")
    with pytest.raises(UserError) as excinfo:
        perceive_photo(load_photo(path))
    _assert_one_line_user_error(excinfo, path, "no person found")


def test_alpha_channel_replaces_segmentation(messi, messi_u8):
    alpha = np.zeros(messi_u8.shape[:2], np.float32)
    x0, y0, x1, y1 = (int(v) for v in messi.bbox)
    alpha[y0:y1, x0:x1] = 1.0  # a user mask that is clearly not mediapipe's
    result = perceive(messi_u8, alpha=alpha)
    assert np.array_equal(result.mask, alpha)
    assert np.allclose(result.body[:, :2], messi.body[:, :2], atol=1.0)


def test_hands_fallback_recovers_holistic_hands(messi, messi_u8):
    found = fallback_hands(messi_u8, messi.body, known={})  # pretend Holistic missed both hands
    assert set(found) == {"left", "right"}
    for side, holistic_hand in (("left", messi.left_hand), ("right", messi.right_hand)):
        error = np.linalg.norm(found[side][:, :2] - holistic_hand[:, :2], axis=1).mean()
        assert error < 6.0, f"{side} hand differs from Holistic's by {error:.1f} px"
        assert (found[side][:, 2] == FALLBACK_HAND_CONFIDENCE).all()
    # A hand already known is never searched for or duplicated.
    only_left = fallback_hands(messi_u8, messi.body, known={"right": messi.right_hand})
    assert set(only_left) == {"left"}


def test_grabcut_sharpens_a_sloppy_mask():
    rng = np.random.default_rng(5)
    height, width = 200, 160
    yy, xx = np.mgrid[0:height, 0:width]
    truth = (((xx - 80) / 45.0) ** 2 + ((yy - 100) / 80.0) ** 2 < 1) | ((np.abs(xx - 80) < 70) & (np.abs(yy - 60) < 8))
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (40, 140, 60)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    image[truth] = np.clip(np.array([200, 60, 50]) + rng.normal(0, 12, (truth.sum(), 3)), 0, 255)
    grown = cv2.dilate(truth.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(np.float32)
    sloppy = cv2.GaussianBlur(grown, (0, 0), 2)  # 4 px too wide everywhere, and soft

    def iou(mask):
        return ((mask > 0.5) & truth).sum() / ((mask > 0.5) | truth).sum()

    refined, warning = refine_mask_grabcut(image, sloppy)
    assert warning == ""
    assert iou(sloppy) < 0.85 and iou(refined) > 0.93  # measured 0.83 -> 0.96
    grey = np.repeat(image.mean(axis=-1, keepdims=True), 3, axis=-1).astype(np.uint8)
    kept, warning = refine_mask_grabcut(grey, sloppy)
    assert "grey photo" in warning and np.array_equal(kept, sloppy)


# --- keypoints for the fitter ----------------------------------------------------------------------


def test_mapping_table_uses_smplx_names():
    from smplx.joint_names import JOINT_NAMES

    assert len(set(FITTING_NAMES)) == len(FITTING_NAMES)
    assert set(FITTING_NAMES) <= set(JOINT_NAMES)
    for side in ("left", "right"):
        for finger in ("thumb", "index", "middle", "ring", "pinky"):
            assert {f"{side}_{finger}{k}" for k in (1, 2, 3)} | {f"{side}_{finger}"} <= set(FITTING_NAMES)
    assert KEYPOINT_TABLE["left_hip"][0].weight < 1.0  # BlazePose hips are not SMPL-X hip joints


def test_keypoints_for_fitting(messi, basketball):
    names, xy, conf = keypoints_for_fitting(messi)
    assert names == list(FITTING_NAMES) and xy.shape == (len(names), 2) and conf.shape == (len(names),)
    index = {name: k for k, name in enumerate(names)}
    np.testing.assert_allclose(xy[index["left_wrist"]], messi.left_hand[0, :2])  # hand model wins when present
    np.testing.assert_allclose(xy[index["right_index3"]], messi.right_hand[7, :2])
    np.testing.assert_allclose(xy[index["left_knee"]], messi.body[25, :2])
    assert conf[index["left_hip"]] == pytest.approx(0.5 * messi.body[23, 2])
    np.testing.assert_allclose(xy[index["nose4"]], messi.face[1, :2])
    # Basketball: the left hand is missing, so the body's wrist and knuckles stand in for it.
    names, xy, conf = keypoints_for_fitting(basketball)
    if basketball.hand_sources["left"] == "":
        np.testing.assert_allclose(xy[index["left_wrist"]], basketball.body[15, :2])
        assert conf[index["left_index1"]] == pytest.approx(0.3 * basketball.body[19, 2])
        assert conf[index["left_middle2"]] == 0.0
    # Points outside the image get zero confidence.
    moved = Perception(**{**messi.__dict__, "body": messi.body.copy()})
    moved.body[27, :2] = (-20.0, 50.0)
    assert keypoints_for_fitting(moved)[2][index["left_ankle"]] == 0.0


def test_bone_directions_from_the_metric_points(messi):
    """BlazePose's 3D points give unit bone directions in the camera's axes (x right, y down, z away); on
    messi5.jpg he faces the camera, upright, kicking with his left leg towards the ball on the image's right."""
    bones = bone_directions(messi)
    assert bones.pairs == BONE_PAIRS
    seen = bones.conf > 0
    assert seen.sum() >= 8
    np.testing.assert_allclose(np.linalg.norm(bones.directions[seen], axis=1), 1.0, atol=1e-5)
    direction = dict(zip(BONE_PAIRS, bones.directions))
    assert direction[("left_hip", "left_shoulder")][1] < -0.9  # the torso points up
    assert direction[("right_shoulder", "left_shoulder")][0] > 0.9  # facing the camera: his left on the right
    assert direction[("left_knee", "left_ankle")][0] > 0.8  # the kicking shin reaches for the ball
    none = bone_directions(Perception(**{**messi.__dict__, "body_world": np.zeros_like(messi.body_world)}))
    assert not none.conf.any()


def test_perception_file_round_trip(messi, tmp_path):
    path = tmp_path / "perception.npz"
    save_perception(path, messi)
    loaded = load_perception(path)
    for key in ("mask", "body", "body_world", "left_hand", "right_hand", "face"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(messi, key))
    assert loaded.bbox == pytest.approx(messi.bbox) and loaded.warnings == messi.warnings
    assert loaded.hand_sources == messi.hand_sources and loaded.people == messi.people
    # A file from before the 3D points existed reads as "no 3D points".
    older = tmp_path / "older.npz"
    with np.load(path) as data:
        np.savez(older, **{key: data[key] for key in data.files if key != "body_world"})
    assert not load_perception(older).body_world.any()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError):
        load_perception(bad)


def test_core_prep_imports_without_mediapipe():
    code = "import sys, core.prep.perception, core.prep.landmarks; print('mediapipe' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_finding_the_person_leaves_no_native_log_lines_on_the_terminal(messi_path):
    """mediapipe's graph writes a dozen absl / TensorFlow Lite lines to descriptor 2 as it starts; prep holds them
    back (core.io.native_log), so a run's terminal shows our progress only."""
    code = ("import sys, numpy as np; from PIL import Image; from core.prep.perception import _run_holistic; "
            f"found = _run_holistic(np.asarray(Image.open({str(messi_path)!r}).convert('RGB'))); "
            "print(found is not None and found['body'][:, 2].max() > 0.5)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"  # the person is still found
    assert "inference_feedback_manager" not in out.stderr and "XNNPACK" not in out.stderr, out.stderr


# --- crops and intrinsics --------------------------------------------------------------------------


def _project(K: np.ndarray, points: np.ndarray) -> np.ndarray:
    uvw = points @ K.T
    return uvw[:, :2] / uvw[:, 2:]


@pytest.mark.parametrize(
    "crop",
    [
        Crop(x0=120, y0=40, width=300, height=300, out_width=512, out_height=512),  # enlarge
        Crop(x0=-50, y0=-30, width=700, height=700, out_width=256, out_height=256),  # padded, shrink
        Crop(x0=10, y0=20, width=200, height=400, out_width=150, out_height=200),  # anisotropic
    ],
)
def test_crop_intrinsics_agree_with_cropping_projections(crop):
    K = default_intrinsics(640, 480)
    points = np.random.default_rng(6).uniform([-1, -1, 2], [1, 1, 6], (50, 3))
    projected_then_cropped = crop_points(_project(K, points), crop)
    np.testing.assert_allclose(projected_then_cropped, _project(crop_intrinsics(K, crop), points), atol=1e-9)
    np.testing.assert_allclose(uncrop_points(projected_then_cropped, crop), _project(K, points), atol=1e-9)


def test_crop_image_matches_crop_points():
    image = np.zeros((480, 640), np.float32)
    image[300:304, 200:204] = 1.0  # a 4x4 dot centred at (202, 302) in corner-origin pixels
    for crop in (Crop(150, 250, 160, 160, 480, 480), Crop(-40, 100, 720, 720, 180, 180)):
        out = crop_image(image, crop)
        assert out.shape == (crop.out_height, crop.out_width)
        ys, xs = np.mgrid[0 : out.shape[0], 0 : out.shape[1]]
        centroid = np.array([(xs * out).sum(), (ys * out).sum()]) / out.sum() + 0.5
        np.testing.assert_allclose(centroid, crop_points(np.array([[202.0, 302.0]]), crop)[0], atol=0.05)


def test_person_crop_boxes():
    inside = person_crop((640, 480), (100, 50, 200, 450), margin=0.1, out_size=512)
    assert inside.width == inside.height == 480 and (inside.x0, inside.y0) == (0, 0)  # shifted in, no padding
    assert inside.out_width == inside.out_height == 512
    centred = person_crop((1000, 1000), (400, 300, 500, 700), margin=0.1)
    assert (centred.x0, centred.y0, centred.width) == (210, 260, 480)
    too_big = person_crop((640, 480), (10, 5, 630, 475), margin=0.1, square=False, out_size=200)
    assert too_big.x0 < 0 and too_big.y0 < 0 and max(too_big.out_width, too_big.out_height) == 200
    rgb = crop_image(np.ones((480, 640, 3), np.float32), too_big, fill=0.0)
    assert rgb[0, 0].max() == 0.0 and rgb[rgb.shape[0] // 2, rgb.shape[1] // 2].min() == 1.0  # padded border


def test_default_intrinsics():
    K = default_intrinsics(600, 400)
    assert K[0, 0] == K[1, 1] == pytest.approx(np.hypot(600, 400))  # no EXIF: focal = image diagonal
    assert (K[0, 2], K[1, 2]) == (300.0, 200.0)
    # For a 3:2 frame, 35 mm-equivalent focal f means f/36 of the width: 50 mm on 6000 px -> 8333 px.
    assert default_intrinsics(6000, 4000, focal_35mm=50)[0, 0] == pytest.approx(50 / 36 * 6000)


# --- albedo ----------------------------------------------------------------------------------------


def _shaded_scene(seed: int = 7):
    """Linear albedo blocks x a smooth light fall-off, an elliptical "person" mask, and the sRGB photo."""
    rng = np.random.default_rng(seed)
    height, width = 240, 160
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    albedo = rng.uniform(0.1, 0.9, (6, 4, 3)).astype(np.float32)[(yy // 40).astype(int), (xx // 40).astype(int)]
    albedo[(xx % 20 < 6) & (yy > 120)] *= 0.5  # stripes: fine albedo detail must survive
    shading = 0.15 + 0.85 * np.exp(-((xx - 30) ** 2 + (yy - 50) ** 2) / (2 * 80.0**2))
    photo = linear_to_srgb(albedo * shading[..., None])
    mask = ((((xx - 80) / 75) ** 2 + ((yy - 120) / 115) ** 2) < 1).astype(np.float32)
    return albedo, photo, mask


def _luminance(linear: np.ndarray) -> np.ndarray:
    return linear @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def test_albedo_removes_smooth_shading():
    true_albedo, photo, mask = _shaded_scene()
    estimate = estimate_albedo(photo, mask)
    inside = mask > 0.5
    truth = _luminance(true_albedo)[inside]
    before = np.corrcoef(_luminance(srgb_to_linear(photo))[inside], truth)[0, 1]
    after = np.corrcoef(_luminance(srgb_to_linear(estimate))[inside], truth)[0, 1]
    assert before < 0.9 and after > 0.98 and after - before > 0.1, (before, after)
    # Chroma is kept, brightness is anchored to the input's median, the background is untouched.
    chroma = lambda rgb: srgb_to_linear(rgb)[inside] / (srgb_to_linear(rgb)[inside].sum(-1, keepdims=True) + 1e-6)
    assert np.abs(chroma(estimate) - chroma(photo)).max() < 0.02
    lum_in, lum_out = (np.median(_luminance(srgb_to_linear(x))[inside]) for x in (photo, estimate))
    assert lum_out == pytest.approx(lum_in, rel=0.02)
    np.testing.assert_array_equal(estimate[mask == 0], photo[mask == 0])


def test_albedo_keeps_an_unshaded_image():
    true_albedo, _, mask = _shaded_scene()
    flat_lit = linear_to_srgb(true_albedo)
    assert np.abs(estimate_albedo(flat_lit, mask) - flat_lit)[mask > 0.5].mean() < 0.01


def test_albedo_from_file(tmp_path, messi_u8):
    path = _save(Image.fromarray(messi_u8), tmp_path / "albedo.png")
    same = albedo_from_file(path, (548, 342))
    np.testing.assert_allclose(same, messi_u8 / 255.0, atol=1e-6)
    assert albedo_from_file(path, (274, 171)).shape == (171, 274, 3)
    with pytest.raises(UserError) as excinfo:
        albedo_from_file(path, (500, 500))
    _assert_one_line_user_error(excinfo, path, "aspect ratio")


def test_failed_prep_waits_for_the_background_rasterizer_warm_up(tmp_path, monkeypatch):
    # A process that exits while the warm-up thread is inside numba's OpenMP pool aborts (seen in CI
    # with a cold JIT cache), so prep must not return, even with an error, before that thread ends.
    import threading
    import time

    from core.prep import pipeline

    finished = threading.Event()

    def slow_warm_up() -> None:
        time.sleep(0.5)
        finished.set()

    def no_person(photo, **kwargs):
        raise UserError(f"{photo.path}: no person found in the photo")

    monkeypatch.setattr(pipeline, "_warm_rasterizer", slow_warm_up)
    monkeypatch.setattr(pipeline, "perceive_photo", no_person)
    path = _save(Image.fromarray(np.full((240, 320, 3), 128, np.uint8)), tmp_path / "flat.png")
    with pytest.raises(UserError, match="no person"):
        pipeline.prepare_subject(path, tmp_path / "subject")
    assert finished.is_set()
