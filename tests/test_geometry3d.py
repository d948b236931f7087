"""Camera geometry of the 3D path: distortion against cv2.projectPoints and the Human3.6M sample's labels,
perspective-correct crops (points, pixels and image content agree), and the absolute-pose least squares (NumPy
and JAX, exact on noise-free input)."""

import json
import os
import pickle

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from realdata_samples import require_realdata

from posebh_jax.geometry import (
  Camera,
  absolute_pose,
  absolute_pose_numpy,
  normalize_points,
  perspective_crop,
  reproject_image,
  root_translation,
  root_translation_numpy,
  source_pixel_map,
  view_weights,
)

# Human3.6M-like numbers: 1000 x 1002 images, f ~ 1145 px, its radial and tangential coefficients.
K = np.array([[1145.0, 0.0, 512.5], [0.0, 1143.8, 515.5], [0.0, 0.0, 1.0]])
IMAGE_HW = (1002, 1000)
H36M_LIKE = np.array([-0.207, 0.248, -0.00142, -0.00098, -0.00308])
STRONG = np.array([0.12, -0.08, 0.004, -0.006, 0.02])
# The H36M 17-joint order's left/right swap (pelvis, l hip/knee/foot, r hip/knee/foot, spine, thorax, neck, head,
# l shoulder/elbow/wrist, r shoulder/elbow/wrist).
FLIP_INDEX = np.array([0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13])


def _skeleton(rng, centre_mm):
  """17 joints (17, 3) mm: a ~1.7 m tall random person around `centre_mm`, camera frame."""
  joints = rng.normal(0.0, 1.0, (17, 3)) * (180.0, 450.0, 150.0)
  return joints + np.asarray(centre_mm, np.float64)


def _extrinsics(rng):
  rvec = rng.normal(0.0, 0.4, 3)
  return cv2.Rodrigues(rvec)[0], rng.normal(0.0, 300.0, 3) + (0.0, 0.0, 200.0)


# --- (a) the Human3.6M sample -----------------------------------------------------------------------------------


def _h36m():
  root = os.path.join(require_realdata(), 'h36m')
  with open(os.path.join(root, 'cameras.pkl'), 'rb') as f:
    cameras = pickle.load(f)
  data = np.load(os.path.join(root, 'test_h36m_body3d.npz'))
  with open(os.path.join(root, 'h36m_coco.json')) as f:
    coco = json.load(f)
  return root, cameras, data, coco


def _h36m_camera(params, model='h36m', distortion=True) -> Camera:
  """cameras.pkl entry -> Camera. The pickle's R is camera -> world (X_cam = R^T (X_world - T), T the optical
  centre in metres), its k = (k1, k2, k3) and p = (p1, p2)."""
  f, c = params['f'].reshape(2), params['c'].reshape(2)
  k, p = params['k'].reshape(3), params['p'].reshape(2)
  rotation = params['R'].T
  return Camera(
    np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]]),
    [k[0], k[1], p[0], p[1], k[2]] if distortion else None,
    rotation=rotation,
    translation=-rotation @ params['T'].reshape(3) * 1000.0,
    image_size=(int(params['h']), int(params['w'])),
    distortion_model=model,
  )


def _h36m_key(imgname):
  subject, folder = imgname.split('/')[:2]
  return subject, folder.split('.')[1]


def test_h36m_projection_reproduces_the_2d_labels():
  _, cameras, data, _ = _h36m()
  residuals = {'h36m model': [], 'opencv model': [], 'no distortion': []}
  for imgname, joints, labels in zip(data['imgname'], data['S'], data['part']):
    params = cameras[_h36m_key(imgname)]
    points = joints[:, :3] * 1000.0  # camera frame, metres -> mm
    for name, camera in (
      ('h36m model', _h36m_camera(params, 'h36m')),
      ('opencv model', _h36m_camera(params, 'opencv')),
      ('no distortion', _h36m_camera(params, distortion=False)),
    ):
      residuals[name].append(np.linalg.norm(camera.camera_to_image(points) - labels[:, :2], axis=-1))
  stats = {name: (np.mean(r), np.max(r)) for name, r in residuals.items()}
  print('\nH36M sample, |projection - 2D label| px (mean, max) over 4 x 17 joints:')
  for name, (mean, top) in stats.items():
    print(f'  {name:14s} mean {mean:.2e}  max {top:.2e}')
  assert stats['h36m model'][1] < 1e-3
  assert stats['opencv model'][1] < 0.5
  assert stats['no distortion'][0] > 10 * stats['opencv model'][0] and stats['no distortion'][1] > 1.0


def test_h36m_world_frame_and_crop_consistency():
  root, cameras, data, coco = _h36m()
  images = {im['id']: im['file_name'] for im in coco['images']}
  names = [str(n) for n in data['imgname']]
  checked = 0
  for annotation in coco['annotations']:
    index = next(i for i, n in enumerate(names) if n.endswith(images[annotation['image_id']]))
    camera = _h36m_camera(cameras[_h36m_key(names[index])])
    world = np.array(annotation['keypoints_3d']).reshape(-1, 4)[:, :3] * 1000.0
    labels = data['part'][index, :, :2]
    np.testing.assert_allclose(camera.world_to_camera(world), data['S'][index, :, :3] * 1000.0, atol=1e-3)
    np.testing.assert_allclose(camera.world_to_image(world), labels, atol=1e-3)
    # The crop of the labelled box: 2D labels mapped into the crop = the 3D joints seen by the crop camera.
    crop = perspective_crop(camera, annotation['bbox'], (256, 256), scale=1.1, rotation_deg=-12.0, flip=True)
    from_labels = crop.pixels_to_crop(labels, FLIP_INDEX)
    from_world = crop.camera.world_to_image(world)[FLIP_INDEX]
    from_camera = crop.camera.camera_to_image(crop.points_to_crop(data['S'][index, :, :3] * 1000.0, FLIP_INDEX))
    np.testing.assert_allclose(from_labels, from_world, atol=1e-3)
    np.testing.assert_allclose(from_labels, from_camera, atol=1e-3)
    image = cv2.imread(os.path.join(root, names[index]))
    # (Not always camera.image_size: the sample's S7 55011271 frame is 1002 x 1000, its camera says 1000 x 1000.)
    assert image is not None
    warped = crop.warp(image)
    assert warped.shape == (256, 256, 3) and warped.dtype == np.uint8 and warped.std() > 5
    checked += 1
  assert checked == len(coco['annotations']) > 0


# --- (b) Camera against OpenCV ----------------------------------------------------------------------------------


@pytest.mark.parametrize('distortion', [np.zeros(5), H36M_LIKE, STRONG])
def test_projection_equals_cv2_project_points(distortion):
  rng = np.random.default_rng(1)
  rotation, translation = _extrinsics(rng)
  camera = Camera(K, distortion, rotation=rotation, translation=translation)
  world = camera.camera_to_world(rng.uniform((-1800, -1800, 1500), (1800, 1800, 7000), (300, 3)))
  expected = cv2.projectPoints(world, cv2.Rodrigues(rotation)[0], translation, K, distortion)[0][:, 0]
  np.testing.assert_allclose(camera.world_to_image(world), expected, atol=1e-9)
  np.testing.assert_allclose(camera.camera_to_world(camera.world_to_camera(world)), world, atol=1e-9)
  np.testing.assert_allclose(camera.center, -rotation.T @ translation)
  # Batched shapes pass through.
  assert camera.world_to_image(world.reshape(3, 100, 3)).shape == (3, 100, 2)


@pytest.mark.parametrize('model', ['opencv', 'h36m'])
@pytest.mark.parametrize('distortion', [H36M_LIKE, STRONG])
def test_undistort_round_trip(model, distortion):
  camera = Camera(K, distortion, distortion_model=model)
  grid = np.stack(np.meshgrid(np.linspace(0, 999, 41), np.linspace(0, 1001, 43)), -1).reshape(-1, 2)
  undistorted = camera.undistort_points(grid)
  ideal = Camera(K)
  rays = camera.image_to_camera_rays(grid)
  np.testing.assert_allclose(np.linalg.norm(rays, axis=-1), 1.0)
  np.testing.assert_allclose(ideal.camera_to_image(rays), undistorted, atol=1e-9)
  np.testing.assert_allclose(camera.camera_to_image(rays), grid, atol=1e-8)
  if model == 'opencv':
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)
    reference = cv2.undistortPoints(grid[:, None], K, distortion, R=None, P=K, criteria=criteria)[:, 0]
    np.testing.assert_allclose(undistorted, reference, atol=1e-4)


def test_camera_validation_and_resize():
  with pytest.raises(ValueError, match='last row'):
    Camera(np.eye(3) * 2)
  with pytest.raises(ValueError, match='distortion'):
    Camera(K, [0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match='distortion_model'):
    Camera(K, distortion_model='fisheye')
  assert Camera(K, [0.1, 0.0, 0.0, 0.0]).distortion.tolist() == [0.1, 0.0, 0.0, 0.0, 0.0]
  assert not Camera(K).has_distortion and Camera(K, H36M_LIKE).has_distortion
  camera = Camera(K, H36M_LIKE, image_size=IMAGE_HW)
  half = camera.resized((501, 500))
  points = np.array([[100.0, -200.0, 3000.0], [-400.0, 300.0, 5000.0]])
  np.testing.assert_allclose(half.camera_to_image(points), (camera.camera_to_image(points) + 0.5) / 2.0 - 0.5)
  assert half.image_size == (501, 500)


# --- (c) perspective crops --------------------------------------------------------------------------------------


def _scene(distortion, model='opencv', centre=(1100.0, 350.0, 4800.0), seed=2):
  rng = np.random.default_rng(seed)
  rotation, translation = _extrinsics(rng)
  camera = Camera(
    K, distortion, rotation=rotation, translation=translation, image_size=IMAGE_HW, distortion_model=model
  )
  joints = _skeleton(rng, centre)
  pixels = camera.camera_to_image(joints)
  low, high = pixels.min(0), pixels.max(0)
  box = np.concatenate([low - 15, high - low + 30])
  return camera, joints, pixels, box


CROP_CASES = [
  (distortion, model, rotation, flip)
  for distortion, model in ((np.zeros(5), 'opencv'), (H36M_LIKE, 'opencv'), (STRONG, 'opencv'), (H36M_LIKE, 'h36m'))
  for rotation in (0.0, 17.0)
  for flip in (False, True)
]


@pytest.mark.parametrize('distortion,model,rotation,flip', CROP_CASES)
def test_perspective_crop_keeps_projections_consistent(distortion, model, rotation, flip):
  camera, joints, pixels, box = _scene(distortion, model)
  crop = perspective_crop(camera, box, (256, 192), scale=1.25, rotation_deg=rotation, flip=flip)
  index = FLIP_INDEX if flip else None
  via_pixels = crop.pixels_to_crop(pixels, index)
  new_joints = crop.points_to_crop(joints, index)
  via_points = crop.camera.camera_to_image(new_joints)
  np.testing.assert_allclose(via_pixels, via_points, atol=1e-6)
  # The world frame through the crop camera's extrinsics gives the same (unpermuted) pixels.
  world = camera.camera_to_world(joints)
  unpermuted = via_points[np.argsort(FLIP_INDEX)] if flip else via_points
  np.testing.assert_allclose(crop.camera.world_to_image(world), unpermuted, atol=1e-6)
  # The scene does not move: same distances from the optical centre, rigid (mirrored when flipped).
  source_order = joints[FLIP_INDEX] if flip else joints
  np.testing.assert_allclose(np.linalg.norm(new_joints, axis=-1), np.linalg.norm(source_order, axis=-1))
  assert np.isclose(np.linalg.det(crop.matrix), -1.0 if flip else 1.0)
  np.testing.assert_allclose(crop.matrix.T @ crop.matrix, np.eye(3), atol=1e-12)
  # Inverse map (the one the image is resampled with) back to the joints' source pixels.
  np.testing.assert_allclose(crop.crop_to_source_pixels(unpermuted), pixels, atol=1e-6)
  # The float32 remap grid equals the pointwise map at integer pixels.
  map_x, map_y = source_pixel_map(camera, crop.camera, (256, 192))
  grid = np.stack(np.meshgrid(np.arange(192.0), np.arange(256.0)), -1)
  expected = crop.crop_to_source_pixels(grid)
  np.testing.assert_allclose(np.stack([map_x, map_y], -1), expected, atol=1e-3)
  # The box centre lands on the principal point; the joints lie inside the crop.
  centre = box[:2] + box[2:] / 2
  np.testing.assert_allclose(crop.pixels_to_crop(centre[None], [0]), [[95.5, 127.5]], atol=1e-9)
  assert np.all((via_points > 0) & (via_points < (191, 255)))
  assert crop.camera.image_size == (256, 192) and not crop.camera.has_distortion


def test_perspective_crop_box_fit_and_rotation_sense():
  camera, _, _, box = _scene(H36M_LIKE)
  x, y, w, h = box
  mids = np.array([[x, y + h / 2], [x + w, y + h / 2], [x + w / 2, y], [x + w / 2, y + h]])
  crop = perspective_crop(camera, box, (256, 192))
  out = crop.pixels_to_crop(mids, np.arange(4))
  # Scale 1: the tighter side of the box spans the output exactly (pixel edges at -0.5 and size - 0.5).
  spans = np.array([(out[1, 0] - out[0, 0]) / 192, (out[3, 1] - out[2, 1]) / 256])
  assert np.isclose(spans.max(), 1.0) and spans.min() < 1.0
  zoomed_out = perspective_crop(camera, box, (256, 192), scale=1.25).pixels_to_crop(mids, np.arange(4))
  np.testing.assert_allclose(zoomed_out[1, 0] - zoomed_out[0, 0], (out[1, 0] - out[0, 0]) / 1.25)
  # +90 degrees turns the content counter-clockwise: the point right of the centre goes up.
  turned = perspective_crop(camera, box, (256, 192), rotation_deg=90.0).pixels_to_crop(mids, np.arange(4))
  assert turned[1, 1] < 127.5 - 50 and abs(turned[1, 0] - 95.5) < 5
  # A flip mirrors the columns about the centre: u -> W - 1 - u.
  flipped = perspective_crop(camera, box, (256, 192), flip=True).pixels_to_crop(mids, np.arange(4))
  np.testing.assert_allclose(flipped[:, 0], 191 - out[:, 0], atol=1e-9)
  np.testing.assert_allclose(flipped[:, 1], out[:, 1], atol=1e-9)
  with pytest.raises(ValueError, match='flip_index'):
    perspective_crop(camera, box, (256, 192), flip=True).points_to_crop(np.zeros((4, 3)))


def _pattern(points):
  """A smooth pattern of pixel positions (..., 2) -> (...)."""
  return 100.0 * np.sin(points[..., 0] / 37.0) * np.cos(points[..., 1] / 53.0)


def _coordinate_image(height, width):
  """float32 (H, W, 3): channels u, v and `_pattern` (an image whose content names its pixel)."""
  v, u = np.mgrid[0:height, 0:width].astype(np.float32)
  return np.stack([u, v, _pattern(np.stack([u, v], -1))], -1).astype(np.float32)


def _bilinear(image, points):
  """Samples `image` (H, W, C) at points (N, 2) x, y (inside) bilinearly."""
  x0, y0 = np.floor(points[:, 0]).astype(int), np.floor(points[:, 1]).astype(int)
  fx, fy = (points[:, 0] - x0)[:, None], (points[:, 1] - y0)[:, None]
  top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
  bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
  return top * (1 - fy) + bottom * fy


@pytest.mark.parametrize('distortion,flip', [(np.zeros(5), False), (H36M_LIKE, True), (STRONG, False)])
def test_reprojected_image_content_follows_the_joints(distortion, flip):
  camera, joints, pixels, box = _scene(distortion)
  crop = perspective_crop(camera, box, (384, 288), scale=1.2, rotation_deg=-14.0, flip=flip)
  image = _coordinate_image(*IMAGE_HW)
  warped = crop.warp(image, antialias=False)
  index = FLIP_INDEX if flip else np.arange(17)
  at_joints = _bilinear(warped, crop.camera.camera_to_image(crop.points_to_crop(joints, index)))
  # The content at a joint's crop pixel is the original image's at the joint's source pixel (remap quantises its
  # coordinates to 1/32 px).
  np.testing.assert_allclose(at_joints[:, :2], pixels[index], atol=0.05)
  np.testing.assert_allclose(at_joints[:, 2], _pattern(pixels[index]), atol=0.1)
  # uint8 colour images go through too, and pixels that see outside the source get the border value.
  far = perspective_crop(camera, [900.0, 900.0, 400.0, 400.0], (64, 64), scale=3.0)
  out = reproject_image(np.full((*IMAGE_HW, 3), 200, np.uint8), camera, far.camera, border_value=7)
  assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
  assert (out == 200).all(axis=-1).any() and (out == 7).all(axis=-1).any()


def test_antialiased_zoom_out_keeps_the_geometry():
  camera, joints, pixels, box = _scene(H36M_LIKE)
  crop = perspective_crop(camera, box, (96, 72), scale=1.25)  # ~5 source px per output px
  image = _coordinate_image(*IMAGE_HW)
  plain, smooth = crop.warp(image, antialias=False), crop.warp(image, antialias=True)
  at_joints = _bilinear(smooth, crop.camera.camera_to_image(crop.points_to_crop(joints)))
  # Area averaging keeps a linear image linear: the coordinate channels still name the source pixel.
  np.testing.assert_allclose(at_joints[:, :2], pixels, atol=0.1)
  np.testing.assert_allclose(smooth[8:-8, 8:-8, :2], plain[8:-8, 8:-8, :2], atol=0.1)
  # A checkerboard of single pixels averages to grey instead of aliasing.
  checker = (np.indices(IMAGE_HW).sum(0) % 2 * 255).astype(np.uint8)
  assert crop.warp(checker, antialias=True)[8:-8, 8:-8].std() < 10
  assert crop.warp(checker, antialias=False)[8:-8, 8:-8].std() > 25


def test_reprojection_needs_a_shared_optical_centre():
  camera = Camera(K)
  moved = Camera(K, translation=(10.0, 0.0, 0.0))
  with pytest.raises(ValueError, match='optical centre'):
    reproject_image(np.zeros((10, 10), np.uint8), camera, moved, (8, 8))


# --- (d) absolute pose ------------------------------------------------------------------------------------------


def _absolute_batch(batch=8, seed=3):
  rng = np.random.default_rng(seed)
  relative = np.stack([_skeleton(rng, (0.0, 0.0, 0.0)) for _ in range(batch)])
  relative -= relative[:, :1]  # root-relative
  translation = np.stack(
    [rng.uniform(-1500, 1500, batch), rng.uniform(-800, 800, batch), rng.uniform(2500, 9000, batch)], -1
  )
  intrinsics = np.stack(
    [np.array([[f, 0.0, 127.5], [0.0, f, 127.5], [0.0, 0.0, 1.0]]) for f in rng.uniform(300, 900, batch)]
  )
  absolute = relative + translation[:, None]
  projected = np.einsum('bij,bkj->bki', intrinsics, absolute)
  return relative, translation, intrinsics, projected[..., :2] / projected[..., 2:]


def test_absolute_pose_recovers_a_known_translation():
  relative, translation, intrinsics, pixels = _absolute_batch()
  weights = np.ones(relative.shape[:2])
  for b in range(len(relative)):
    exact = absolute_pose_numpy(pixels[b], relative[b], intrinsics[b], weights[b], l2_regularizer=0.0)
    np.testing.assert_allclose(exact, relative[b] + translation[b], rtol=0, atol=1e-9 * np.abs(translation[b]).max())
    default = absolute_pose_numpy(pixels[b], relative[b], intrinsics[b], weights[b])
    assert np.abs(default - relative[b] - translation[b]).max() < 1e-6 * np.linalg.norm(translation[b])
  # JAX, float32, batched directly, under jit + vmap, and against the NumPy reference.
  args = [a.astype(np.float32) for a in (pixels, relative, intrinsics, weights)]
  direct = np.asarray(absolute_pose(*args))
  mapped = np.asarray(jax.jit(jax.vmap(absolute_pose))(*args))
  assert direct.shape == mapped.shape == relative.shape
  np.testing.assert_allclose(mapped, direct, atol=1e-2)
  reference = np.stack(
    [absolute_pose_numpy(*(a[b] for a in (pixels, relative, intrinsics, weights))) for b in range(len(relative))]
  )
  scale = np.linalg.norm(translation, axis=-1)[:, None, None]
  assert np.all(np.abs(mapped - reference) < 1e-5 * scale)
  # Normalised coordinates and the translation alone.
  uv = normalize_points(args[0], args[2])
  t = np.asarray(jax.jit(root_translation)(uv, args[1], args[3]))
  assert np.all(np.abs(t - translation) < 1e-5 * scale[:, 0])
  np.testing.assert_allclose(
    root_translation_numpy(np.asarray(uv, np.float64)[0], relative[0], weights[0]), translation[0], rtol=1e-6
  )


def test_out_of_view_joints_barely_move_the_translation():
  rng = np.random.default_rng(4)
  relative = _skeleton(rng, (0.0, 0.0, 0.0))
  relative -= relative[0]
  translation = np.array([200.0, -100.0, 5000.0])
  intrinsics = np.array([[400.0, 0.0, 127.5], [0.0, 400.0, 127.5], [0.0, 0.0, 1.0]])
  pixels = Camera(intrinsics).camera_to_image(relative + translation)
  assert np.all(np.asarray(view_weights(pixels, (256, 256))) == 1.0)
  wrong = pixels.copy()
  wrong[13] = (900.0, -400.0)  # a grossly wrong wrist, far outside the 256 x 256 crop
  weights = np.asarray(view_weights(wrong, (256, 256)))
  assert weights[13] == np.float32(1e-4) and np.sum(weights == 1.0) == 16
  moved = absolute_pose_numpy(wrong, relative, intrinsics, weights)[0] - translation
  squared = absolute_pose_numpy(wrong, relative, intrinsics, np.where(weights < 1, 1e-2, 1.0))[0] - translation
  trusted = absolute_pose_numpy(wrong, relative, intrinsics, np.ones(17))[0] - translation
  print(
    f'\na wrong out-of-view joint moves T by {np.linalg.norm(moved):.4f} mm (residual weight 1e-4), '
    f'{np.linalg.norm(squared):.1f} mm (squared-error weight 1e-4), {np.linalg.norm(trusted):.0f} mm (weight 1)'
  )
  assert np.linalg.norm(moved) < 0.05 and np.linalg.norm(squared) > 1.0 and np.linalg.norm(trusted) > 100.0
  # Only relative weights matter: every joint out of view gives the in-view answer.
  np.testing.assert_allclose(
    absolute_pose_numpy(pixels, relative, intrinsics, np.full(17, 1e-4)),
    absolute_pose_numpy(pixels, relative, intrinsics, np.ones(17)),
    rtol=1e-12,
  )
  jax_moved = np.asarray(absolute_pose(wrong, relative, intrinsics, weights))[0] - translation
  assert np.linalg.norm(jax_moved - moved) < 0.05


def test_view_weights_and_degenerate_inputs():
  points = np.array([[0.0, 0.0], [255.0, 191.0], [-0.01, 5.0], [5.0, 191.01], [np.nan, 3.0]])
  np.testing.assert_array_equal(np.asarray(view_weights(points, (192, 256))), np.float32([1, 1, 1e-4, 1e-4, 1e-4]))
  # No usable joint (padding): finite, T = 0 (the regulariser keeps the system solvable).
  t = np.asarray(root_translation(np.zeros((17, 2)), np.zeros((17, 3)), np.zeros(17)))
  np.testing.assert_array_equal(t, 0.0)
  # A single in-view joint: finite.
  rel, _, intr, pix = _absolute_batch(batch=1, seed=5)
  weights = np.zeros(17)
  weights[0] = 1.0
  assert np.all(np.isfinite(np.asarray(absolute_pose(pix[0], rel[0], intr[0], weights))))
  # Gradients (the absolute loss trains through the reconstruction) are finite, padding examples included.
  batch_weights = np.stack([np.ones(17), np.zeros(17)])
  loss = lambda p, r: jnp.sum(absolute_pose(p, r, np.stack([intr[0]] * 2), batch_weights) ** 2)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(
    np.stack([pix[0]] * 2, dtype=np.float32), np.stack([rel[0]] * 2, dtype=np.float32)
  )
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_absolute_pose_in_a_perspective_crop():
  """End to end: joints seen through a perspective crop's virtual camera, reconstructed from the crop's 2D
  joints and the root-relative 3D joints, come back in the crop camera frame."""
  camera, joints, _, box = _scene(H36M_LIKE)
  crop = perspective_crop(camera, box, (256, 256), scale=1.25, rotation_deg=11.0, flip=True)
  in_crop = crop.points_to_crop(joints, FLIP_INDEX)
  pixels = crop.camera.camera_to_image(in_crop)
  weights = np.asarray(view_weights(pixels, (256, 256)))
  relative = in_crop - in_crop[0]
  np.testing.assert_allclose(
    absolute_pose_numpy(pixels, relative, crop.camera.intrinsics, weights),
    in_crop,
    atol=1e-5 * np.linalg.norm(in_crop[0]),
  )
  out = absolute_pose(jnp.asarray(pixels, jnp.float32), relative, crop.camera.intrinsics, weights)
  np.testing.assert_allclose(np.asarray(out), in_crop, atol=2e-5 * np.linalg.norm(in_crop[0]))
