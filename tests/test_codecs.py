"""Codecs: crop geometry (closed forms, OpenCV), heatmap encode/decode round trips, DARK vs a direct
re-computation with OpenCV, flip test symmetry."""

import cv2
import numpy as np
import pytest

from posebh_jax.codecs import (
  HeatmapCodec,
  MSRAHeatmap,
  UDPHeatmap,
  decode,
  decode_argmax,
  decode_argmax_jax,
  encode_msra,
  encode_udp,
  flip_heatmaps,
  get_codec,
  heatmap_to_image,
  refine_dark_udp,
  refine_quarter_shift,
)
from posebh_jax.geometry import box_to_center_scale, get_warp_matrix, transform_points

INPUT_WH = (192, 256)
HEATMAP_WH = (48, 64)
UDP_PER_PX = np.array([(48 - 1) / (192 - 1), (64 - 1) / (256 - 1)])  # heatmap px per input px (UDP)


# --- affine ------------------------------------------------------------------------------------------


def test_box_to_center_scale_closed_form():
  center, scale = box_to_center_scale([10, 20, 30, 80], aspect_ratio_wh=0.75)  # tall: width grows to 60
  np.testing.assert_allclose(center, [25, 60])
  np.testing.assert_allclose(scale, [75, 100])
  center, scale = box_to_center_scale(np.array([[0, 0, 120, 40]]), aspect_ratio_wh=0.75, padding=1.0)
  np.testing.assert_allclose(center, [[60, 20]])
  np.testing.assert_allclose(scale, [[120, 160]])  # wide: height grows to 120 / 0.75


@pytest.mark.parametrize("use_udp", [False, True])
def test_warp_maps_box_center_to_crop_center(use_udp):
  rng = np.random.default_rng(0)
  for _ in range(10):
    center = rng.uniform(50, 500, 2)
    scale = np.array([1.0, 4 / 3]) * rng.uniform(40, 300)
    matrix = get_warp_matrix(center, scale, rng.uniform(-40, 40), INPUT_WH, use_udp)
    expected = (np.array(INPUT_WH) - 1) / 2 if use_udp else np.array(INPUT_WH) / 2
    np.testing.assert_allclose(transform_points(center, matrix), expected, atol=1e-9)


@pytest.mark.parametrize("use_udp", [False, True])
def test_warp_corners_closed_form(use_udp):
  center, scale = np.array([300.0, 200.0]), np.array([150.0, 200.0])
  matrix = get_warp_matrix(center, scale, 0.0, INPUT_WH, use_udp)
  corners = np.array([center - scale / 2, center + scale / 2])
  # UDP: the box edges land on the first / last pixel centres; classic: on 0 and the crop size.
  far = np.array(INPUT_WH) - 1 if use_udp else np.array(INPUT_WH)
  np.testing.assert_allclose(transform_points(corners, matrix), [[0, 0], far], atol=1e-9)


def test_warp_rotation_90_turns_up_into_left():
  center, scale = np.array([100.0, 100.0]), np.array([96.0, 128.0])
  matrix = get_warp_matrix(center, scale, 90.0, INPUT_WH, use_udp=False)
  above = transform_points(center + [0, -10], matrix)  # 10 px above the centre (y points down)
  right = transform_points(center + [10, 0], matrix)
  # counter-clockwise by 90 degrees: up -> left, right -> up; scale 192 / 96 = 2
  np.testing.assert_allclose(above, [96 - 20, 128], atol=1e-9)
  np.testing.assert_allclose(right, [96, 128 - 20], atol=1e-9)


def test_warp_matches_opencv_rotation_matrix():
  rng = np.random.default_rng(1)
  for _ in range(5):
    center = rng.uniform(50, 400, 2)
    scale = np.array([0.75, 1.0]) * rng.uniform(50, 300)
    angle = rng.uniform(-180, 180)
    ours = get_warp_matrix(center, scale, angle, INPUT_WH, use_udp=False)
    # OpenCV: positive angle = counter-clockwise about `center`, then move the centre to the crop centre.
    reference = cv2.getRotationMatrix2D(tuple(center), angle, INPUT_WH[0] / scale[0])
    reference[:, 2] += np.array(INPUT_WH) / 2 - center
    np.testing.assert_allclose(ours, reference, atol=1e-9)


@pytest.mark.parametrize("use_udp", [False, True])
def test_warp_inverse_consistency(use_udp):
  rng = np.random.default_rng(2)
  center, scale = np.array([250.0, 180.0]), np.array([120.0, 160.0])
  matrix = get_warp_matrix(center, scale, 25.0, INPUT_WH, use_udp)
  inverse = cv2.invertAffineTransform(matrix)
  image_points = rng.uniform(0, 500, (20, 2))
  np.testing.assert_allclose(transform_points(transform_points(image_points, matrix), inverse), image_points, atol=1e-6)
  np.testing.assert_allclose(inverse, cv2.invertAffineTransform(matrix.astype(np.float32)), atol=1e-3)


# --- encoding ----------------------------------------------------------------------------------------


def test_encode_udp_pixel_values_closed_form():
  keypoint = np.array([[101.3, 77.8]])
  heatmaps, weights = encode_udp(keypoint, [2], INPUT_WH, HEATMAP_WH, sigma=2.0)
  assert heatmaps.shape == (1, 64, 48) and heatmaps.dtype == np.float32 and weights.tolist() == [1.0]
  cx, cy = keypoint[0] * UDP_PER_PX
  ys, xs = np.mgrid[0:64, 0:48]
  gaussian = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 8.0)
  window = (np.abs(xs - np.floor(cx + 0.5)) <= 6) & (np.abs(ys - np.floor(cy + 0.5)) <= 6)
  np.testing.assert_allclose(heatmaps[0], np.where(window, gaussian, 0), atol=1e-6)


def test_encode_msra_peak_at_rounded_location():
  keypoints = np.array([[101.3, 77.8], [5.9, 250.0]])
  heatmaps, weights = encode_msra(keypoints, [1, 2], INPUT_WH, HEATMAP_WH)
  for k, (x, y) in enumerate(keypoints):
    peak = np.unravel_index(np.argmax(heatmaps[k]), heatmaps[k].shape)
    assert peak == (int(np.floor(y / 4 + 0.5)), int(np.floor(x / 4 + 0.5)))
    assert heatmaps[k].max() == pytest.approx(1.0)
  np.testing.assert_array_equal(weights, [1, 1])


@pytest.mark.parametrize("encode", [encode_udp, encode_msra])
def test_encode_weights_invisible_and_outside(encode):
  keypoints = np.array([[50.0, 50.0], [50.0, 50.0], [-200.0, 50.0], [195.0, 100.0], [np.nan, 3.0]])
  heatmaps, weights = encode(keypoints, [2, 0, 2, 2, 2], INPUT_WH, HEATMAP_WH)
  # visible; not labelled; far outside; just outside the crop but its window overlaps; NaN
  np.testing.assert_array_equal(weights, [1, 0, 0, 1, 0])
  assert heatmaps[1].max() == 0 and heatmaps[2].max() == 0 and heatmaps[4].max() == 0
  assert heatmaps[3].max() > 0


# --- decoding ----------------------------------------------------------------------------------------


def test_udp_encode_decode_recovers_subpixel_location():
  rng = np.random.default_rng(3)
  # Interior: at least 12 heatmap px (Gaussian window + blur kernel) from every border.
  interior = rng.uniform([12, 12], [35, 51], (200, 2))
  heatmaps = np.stack([encode_udp(p[None] / UDP_PER_PX, [1], INPUT_WH, HEATMAP_WH)[0] for p in interior])
  coords, scores = decode(heatmaps[:, None, 0], "udp")
  assert np.abs(coords[:, 0] - interior).max() < 0.02
  np.testing.assert_array_less(0.8, scores)
  # Near the borders the blur's zero padding pulls DARK inwards (up to ~0.8 px, as in the reference);
  # away from the outermost pixels it stays within a pixel.
  near_border = rng.uniform([0.6, 0.6], [46.4, 62.4], (300, 2))
  heatmaps = np.stack([encode_udp(p[None] / UDP_PER_PX, [1], INPUT_WH, HEATMAP_WH)[0] for p in near_border])
  coords, _ = decode(heatmaps, "udp")
  assert np.abs(coords[:, 0] - near_border).max() < 1.0


def test_msra_decode_error_bounds():
  rng = np.random.default_rng(4)
  locations = rng.uniform([3, 3], [44, 60], (100, 2))
  # MSRA targets are centred on the rounded location: the decode returns exactly that location.
  heatmaps = np.stack([encode_msra(p[None] * 4, [1], INPUT_WH, HEATMAP_WH)[0] for p in locations])
  coords, _ = decode(heatmaps, "msra")
  np.testing.assert_array_equal(coords[:, 0], np.floor(locations + 0.5))
  # A Gaussian at the exact sub-pixel location: argmax + 0.25 px shift is within 0.25 px per axis.
  exact = np.stack([encode_udp(p[None] / UDP_PER_PX, [1], INPUT_WH, HEATMAP_WH)[0] for p in locations])
  coords, _ = decode(exact, "msra")
  assert np.abs(coords[:, 0] - locations).max() <= 0.25 + 1e-4


@pytest.mark.parametrize("codec_name", ["udp", "msra"])
def test_full_chain_image_to_image(codec_name):
  codec = get_codec(codec_name)
  rng = np.random.default_rng(5)
  bbox = np.array([140.0, 60.0, 110.0, 210.0])
  center, scale = box_to_center_scale(bbox, INPUT_WH[0] / INPUT_WH[1])
  matrix = get_warp_matrix(center, scale, 0.0, INPUT_WH, codec.use_udp)
  image_points = rng.uniform(bbox[:2] + 0.15 * bbox[2:], bbox[:2] + 0.85 * bbox[2:], (17, 2))
  heatmaps, weights = codec.encode(transform_points(image_points, matrix), np.full(17, 2), INPUT_WH, HEATMAP_WH, 2.0)
  assert weights.min() == 1
  coords, _ = codec.decode(heatmaps[None])
  recovered = codec.to_image(coords, center[None], scale[None], HEATMAP_WH)[0]
  np.testing.assert_allclose(
    recovered, heatmap_to_image(coords, center[None], scale[None], HEATMAP_WH, codec.use_udp)[0]
  )
  image_px_per_cell = scale / (np.array(HEATMAP_WH) - 1) if codec.use_udp else scale / np.array(HEATMAP_WH)
  error_cells = np.abs(recovered - image_points) / image_px_per_cell
  if codec.use_udp:
    assert error_cells.max() < 0.05  # UDP: within 0.05 heatmap px (about 0.3 image px here)
  else:
    assert error_cells.max() <= 0.5 + 1e-9  # MSRA: rounding to the heatmap grid (stride / 2)


def test_decode_argmax_and_jax_version():
  rng = np.random.default_rng(6)
  heatmaps = rng.normal(size=(3, 5, 8, 6)).astype(np.float32)
  heatmaps[1, 2] = -1.0  # max <= 0 -> coordinates -1
  coords, scores = decode_argmax(heatmaps)
  for n in range(3):
    for k in range(5):
      y, x = np.unravel_index(np.argmax(heatmaps[n, k]), (8, 6))
      expected = [-1, -1] if heatmaps[n, k].max() <= 0 else [x, y]
      np.testing.assert_array_equal(coords[n, k], expected)
      assert scores[n, k] == heatmaps[n, k].max()
  jax_coords, jax_scores = decode_argmax_jax(heatmaps)
  np.testing.assert_array_equal(np.asarray(jax_coords), coords)
  np.testing.assert_array_equal(np.asarray(jax_scores), scores)


def _dark_reference(heatmap, x, y, kernel=11):
  """Direct DARK-UDP for one heatmap and one integer location, with OpenCV's blur."""
  border = (kernel - 1) // 2
  padded = np.zeros((heatmap.shape[0] + 2 * border, heatmap.shape[1] + 2 * border), np.float64)
  padded[border:-border, border:-border] = heatmap
  blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
  blurred *= heatmap.max() / blurred.max()
  log = np.log(np.clip(blurred, 0.001, 50))
  log = np.pad(log, 1, mode="edge")
  v = lambda dx, dy: log[y + 1 + dy, x + 1 + dx]  # noqa: E731
  gradient = np.array([(v(1, 0) - v(-1, 0)) / 2, (v(0, 1) - v(0, -1)) / 2])
  dxy = (v(1, 1) - v(1, 0) - v(0, 1) + 2 * v(0, 0) - v(-1, 0) - v(0, -1) + v(-1, -1)) / 2
  hessian = np.array([[v(1, 0) - 2 * v(0, 0) + v(-1, 0), dxy], [dxy, v(0, 1) - 2 * v(0, 0) + v(0, -1)]])
  return np.array([x, y]) - np.linalg.solve(hessian + np.finfo(np.float32).eps * np.eye(2), gradient)


def test_dark_udp_matches_direct_opencv_computation():
  rng = np.random.default_rng(7)
  # Smooth random bumps, so the Hessian is well conditioned at the maximum and near the edges too.
  heatmaps = np.stack(
    [
      cv2.GaussianBlur(rng.uniform(0, 1, (20, 16)), (7, 7), 0)
      + 0.5 * encode_udp(rng.uniform(0, [15, 19], (1, 2)), [1], (16, 20), (16, 20))[0][0]
      for _ in range(12)
    ]
  ).reshape(3, 4, 20, 16)
  coords, _ = decode_argmax(heatmaps)
  refined = refine_dark_udp(heatmaps, coords)
  for n in range(3):
    for k in range(4):
      x, y = coords[n, k].astype(int)
      np.testing.assert_allclose(refined[n, k], _dark_reference(heatmaps[n, k], x, y), atol=2e-3)


def test_quarter_shift_direction():
  heatmaps = np.zeros((1, 3, 7, 7), np.float32)
  heatmaps[0, 0, 3, 3], heatmaps[0, 0, 3, 4], heatmaps[0, 0, 2, 3] = 1.0, 0.5, 0.2  # right and up
  heatmaps[0, 1, 3, 0], heatmaps[0, 1, 3, 1] = 1.0, 0.9  # on the left edge: no x shift
  heatmaps[0, 2] = 0.0  # empty channel: argmax gives -1, left unchanged
  coords, _ = decode_argmax(heatmaps)
  refined = refine_quarter_shift(heatmaps, coords)
  np.testing.assert_allclose(refined[0], [[3.25, 2.75], [0.0, 3.0], [-1.0, -1.0]])


# --- flip test ---------------------------------------------------------------------------------------


def test_flip_twice_is_identity_and_swaps_channels():
  rng = np.random.default_rng(8)
  heatmaps = rng.uniform(size=(2, 4, 6, 5))
  flip_index = np.array([1, 0, 2, 3])
  np.testing.assert_array_equal(flip_heatmaps(flip_heatmaps(heatmaps, flip_index, False), flip_index, False), heatmaps)
  flipped = flip_heatmaps(heatmaps, flip_index, False)
  np.testing.assert_array_equal(flipped[:, 0], heatmaps[:, 1, :, ::-1])
  shifted = flip_heatmaps(heatmaps, flip_index, True)
  np.testing.assert_array_equal(shifted[..., 1:], flipped[..., :-1])
  np.testing.assert_array_equal(shifted[..., 0], flipped[..., 0])


def test_flip_decodes_to_mirror():
  rng = np.random.default_rng(9)
  w = HEATMAP_WH[0]
  locations = rng.uniform([12, 12], [35, 51], (20, 2))
  heatmaps = np.stack([encode_udp(p[None] / UDP_PER_PX, [1], INPUT_WH, HEATMAP_WH)[0] for p in locations])
  coords, _ = decode(flip_heatmaps(heatmaps, np.array([0]), shift=False), "udp")
  np.testing.assert_allclose(coords[:, 0, 0], w - 1 - locations[:, 0], atol=0.02)
  np.testing.assert_allclose(coords[:, 0, 1], locations[:, 1], atol=0.02)
  # Classic pipeline: the one-pixel shift moves the mirrored peak to w - x.
  msra = np.stack([encode_msra(p[None] * 4, [1], INPUT_WH, HEATMAP_WH)[0] for p in locations])
  coords, _ = decode(flip_heatmaps(msra, np.array([0]), shift=True), "msra")
  np.testing.assert_allclose(coords[:, 0, 0], w - np.floor(locations[:, 0] + 0.5))


# --- codec objects -----------------------------------------------------------------------------------


def test_codec_objects_and_registry():
  udp, msra = get_codec("udp"), get_codec("msra")
  assert isinstance(udp, UDPHeatmap) and isinstance(udp, HeatmapCodec) and isinstance(msra, MSRAHeatmap)
  assert (udp.name, udp.use_udp, udp.flip_shift) == ("udp", True, False)
  assert (msra.name, msra.use_udp, msra.flip_shift) == ("msra", False, True)
  assert get_codec("udp") is udp  # one instance per codec
  with pytest.raises(ValueError, match=r"unknown heatmap codec 'dark'; use one of: udp, msra"):
    get_codec("dark")
  with pytest.raises(ValueError, match="unknown decode method"):
    decode(np.zeros((1, 1, 4, 4)), "dark")
  with pytest.raises(ValueError, match=r"\(N, K, h, w\)"):
    decode(np.zeros((1, 4, 4)), "udp")


@pytest.mark.parametrize("codec_name", ["udp", "msra"])
def test_codec_object_methods_equal_free_functions(codec_name):
  codec = get_codec(codec_name)
  encode = encode_udp if codec_name == "udp" else encode_msra
  rng = np.random.default_rng(11)
  keypoints = rng.uniform(-10, [200, 270], (17, 2))
  visible = rng.integers(0, 3, 17)
  for channels_last in (False, True):
    got = codec.encode(keypoints, visible, INPUT_WH, HEATMAP_WH, 2.5, channels_last=channels_last)
    want = encode(keypoints, visible, INPUT_WH, HEATMAP_WH, 2.5, channels_last)
    for g, w in zip(got, want):
      assert g.dtype == w.dtype and np.array_equal(g, w)
  heatmaps = rng.uniform(0, 1, (3, 17, 64, 48)).astype(np.float32)
  for g, w in zip(codec.decode(heatmaps), decode(heatmaps, codec_name)):
    assert g.dtype == w.dtype and np.array_equal(g, w)
  coords = rng.uniform(0, 47, (3, 17, 2)).astype(np.float32)
  center, scale = rng.uniform(50, 300, (3, 2)), rng.uniform(60, 200, (3, 2))
  assert np.array_equal(
    codec.to_image(coords, center, scale, HEATMAP_WH),
    heatmap_to_image(coords, center, scale, HEATMAP_WH, codec_name == "udp"),
  )
  # The model-input px per heatmap px that posebh_jax.viz.formats used to compute inline.
  heat, size = np.asarray(HEATMAP_WH, np.float64), np.asarray(INPUT_WH, np.float64)
  inline = (size - 1.0) / (heat - 1.0) if codec_name == "udp" else size / heat
  assert np.array_equal(codec.heatmap_to_input_scale(HEATMAP_WH, INPUT_WH), inline)


@pytest.mark.parametrize("codec_name", ["udp", "msra"])
def test_codec_round_trip_input_px(codec_name):
  """encode -> decode -> input px recovers interior keypoints: UDP (DARK) to 1e-3 heatmap px, MSRA to the
  rounding of x / stride, i.e. half a heatmap px (the quarter shift is 0 on its symmetric targets)."""
  codec = get_codec(codec_name)
  rng = np.random.default_rng(12)
  keypoints = rng.uniform([30, 30], [INPUT_WH[0] - 30, INPUT_WH[1] - 30], (40, 2))
  heatmaps, weights = codec.encode(keypoints, np.ones(40), INPUT_WH, HEATMAP_WH, 2.0)
  assert weights.min() == 1
  coords, scores = codec.decode(heatmaps[None])
  assert scores.min() > 0.9
  per_cell = codec.heatmap_to_input_scale(HEATMAP_WH, INPUT_WH)  # input px per heatmap px
  error_cells = np.abs(coords[0] * per_cell - keypoints) / per_cell
  assert error_cells.max() <= (1e-3 if codec.use_udp else 0.5 + 1e-9)
