"""Multi-teacher distillation losses onto the unified 21-keypoint skeleton (docs/METHOD.md §4).

A student predicting the 'unified21' heatmaps learns from ground truth (masked where a dataset lacks a joint) and
from two frozen teachers, one in COCO's 17-keypoint format and one in MPII's 16: each teacher channel is compared
with the student channel that `format_mapping(teacher, 'unified21')` pairs it with, as a KL divergence between the
two channels' spatial softmax distributions.

    L = w1 L_gt + w2 L_KD^COCO + w3 (1 - epoch / max_epochs) L_KD^MPII

All functions are pure and jit-traceable (the channel pairings are static NumPy index arrays).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from posebh_jax.losses.heatmap import joints_mse
from posebh_jax.skeletons import format_mapping, get_format

STUDENT_FORMAT = 'unified21'
COCO_TEACHER_FORMAT = 'coco'
MPII_TEACHER_FORMAT = 'mpii'
# docs/METHOD.md §4 gives (0.3, 0.35, 0.35) and (0.3, 0.25, 0.45) for (w1, w2, w3).
DEFAULT_LOSS_WEIGHTS = (0.3, 0.35, 0.35)


def _spatial_log_softmax(heatmaps: jax.Array, temperature) -> jax.Array:
  n, h, w, k = heatmaps.shape
  dtype = jnp.promote_types(heatmaps.dtype, jnp.float32)
  logits = heatmaps.astype(dtype).reshape(n, h * w, k) / temperature
  return jax.nn.log_softmax(logits, axis=1).reshape(n, h, w, k)


def spatial_distribution(heatmaps: jax.Array, temperature) -> jax.Array:
  """Per-channel softmax over the h·w cells of `heatmaps / temperature`.

  Args: heatmaps float (n, h, w, K); temperature > 0 (a Python float or a scalar array; < 1 sharpens).
  Returns float32 (float64 for float64 input) (n, h, w, K); each channel of each sample sums to 1.
  """
  return jnp.exp(_spatial_log_softmax(heatmaps, temperature))


def kd_loss(
  student_heatmaps: jax.Array,
  teacher_heatmaps: jax.Array,
  temperature,
  channel_weights: jax.Array | None = None,
  *,
  scale_by_temperature_squared: bool = False,
) -> jax.Array:
  """Distillation loss: KL(teacher ‖ student) between per-channel spatial distributions, averaged.

  Per sample n and channel k: KL_nk = Σ_cells p_t log(p_t / p_s), with p = `spatial_distribution(·, temperature)`
  of the teacher and the student. The loss is mean_{n,k} (c_k KL_nk): channel weights multiply, and a weight-0
  channel still counts in the mean (the convention of `joints_mse`); without weights it is the plain mean.
  The teacher is a fixed target (gradients stop at it).

  Not scaled by temperature² by default: docs/METHOD.md asks for a plain KL, and Hinton's T² factor (keeping gradient
  sizes constant for T > 1 on logits) would shrink the loss 100× at the sharpening temperatures (T < 1) that heatmaps
  in [0, 1] need; `scale_by_temperature_squared=True` multiplies by T² as Hinton et al. (2015) do.

  Args:
    student_heatmaps, teacher_heatmaps: float (n, h, w, K), channel k of one meaning channel k of the other.
    temperature: > 0, a Python float or a scalar array.
    channel_weights: optional (K,) or (n, K) non-negative weights.
  Returns: a float32 scalar (float64 for float64 input), in nats.
  """
  if student_heatmaps.shape != teacher_heatmaps.shape:
    raise ValueError(f'kd_loss: student {student_heatmaps.shape} and teacher {teacher_heatmaps.shape} shapes differ')
  n, _, _, k = student_heatmaps.shape
  log_p_student = _spatial_log_softmax(student_heatmaps, temperature)
  log_p_teacher = jax.lax.stop_gradient(_spatial_log_softmax(teacher_heatmaps, temperature))
  kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=(1, 2))  # (n, K)
  if channel_weights is not None:
    kl = kl * jnp.broadcast_to(jnp.asarray(channel_weights, kl.dtype), (n, k))
  loss = jnp.mean(kl)
  if scale_by_temperature_squared:
    loss = loss * jnp.square(jnp.asarray(temperature, loss.dtype))
  return loss


def masked_gt_loss(pred: jax.Array, target: jax.Array, weights: jax.Array) -> jax.Array:
  """Ground-truth loss of the student: `losses.heatmap.joints_mse`, the target-weighted joints MSE.

  (1/K) Σ_k mean_{n,cells} (w_nk Ĥ_nk − w_nk H_nk)²: a joint the image's dataset lacks (COCO: unified 17–20; MPII:
  the face points 0–4) or that is unlabelled has weight 0 and contributes nothing (it still counts in the mean).

  Args: pred, target float (n, h, w, K); weights (n, K). Returns a float32 scalar (float64 for float64 `pred`).
  """
  return joints_mse(pred, target, weights)


def mpii_weight_schedule(epoch, max_epochs) -> jax.Array:
  """Scale of the MPII distillation term: 1 − epoch / max_epochs, clipped at 0.

  Args: epoch (int, float or scalar array; fractional epochs allowed); max_epochs > 0.
  Returns a float32 scalar: 1 at epoch 0, linear, 0 from max_epochs on.
  """
  if isinstance(max_epochs, (int, float)) and max_epochs <= 0:
    raise ValueError(f'mpii_weight_schedule: max_epochs must be > 0, got {max_epochs}')
  progress = jnp.asarray(epoch, jnp.float32) / jnp.asarray(max_epochs, jnp.float32)
  return jnp.maximum(1.0 - progress, 0.0)


@functools.lru_cache(maxsize=None)
def teacher_channel_indices(teacher_format: str, student_format: str = STUDENT_FORMAT) -> tuple[np.ndarray, np.ndarray]:
  """Channel pairing of a teacher and the student, from `skeletons.format_mapping(teacher, student)`.

  Returns (teacher_ids, student_ids): two read-only int32 (M,) arrays; teacher channel teacher_ids[m] and student
  channel student_ids[m] are the same landmark (COCO → unified21: 0..16 → 0..16; MPII → unified21: METHOD.md's 16).
  """
  pairs = np.asarray(format_mapping(teacher_format, student_format), dtype=np.int32).reshape(-1, 2)
  teacher_ids, student_ids = pairs[:, 0].copy(), pairs[:, 1].copy()
  teacher_ids.setflags(write=False)
  student_ids.setflags(write=False)
  return teacher_ids, student_ids


def _teacher_kd(student_heatmaps, teacher_heatmaps, teacher_format, temperature, scale_by_temperature_squared):
  teacher_ids, student_ids = teacher_channel_indices(teacher_format)
  if teacher_heatmaps.shape[-1] != len(teacher_ids) or teacher_heatmaps.shape[:3] != student_heatmaps.shape[:3]:
    raise ValueError(
      f'distill_objective: {teacher_format} teacher heatmaps {teacher_heatmaps.shape} must be (n, h, w, '
      f'{len(teacher_ids)}) with the student\'s (n, h, w) = {student_heatmaps.shape[:3]}'
    )
  return kd_loss(
    student_heatmaps[..., student_ids],
    teacher_heatmaps[..., teacher_ids],
    temperature,
    scale_by_temperature_squared=scale_by_temperature_squared,
  )


def distill_objective(
  student_heatmaps: jax.Array,
  gt_heatmaps: jax.Array,
  gt_weights: jax.Array,
  coco_teacher_heatmaps: jax.Array,
  mpii_teacher_heatmaps: jax.Array,
  *,
  epoch,
  max_epochs,
  temperature,
  loss_weights: tuple[float, float, float] = DEFAULT_LOSS_WEIGHTS,
  scale_by_temperature_squared: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The multi-teacher objective w1 L_gt + w2 L_KD^COCO + w3 (1 − epoch/max_epochs)₊ L_KD^MPII (METHOD.md §4).

  Args:
    student_heatmaps: float (n, h, w, 21), the student's 'unified21' heatmaps.
    gt_heatmaps: float (n, h, w, 21) targets; gt_weights (n, 21), 0 for the joints an image lacks.
    coco_teacher_heatmaps: float (n, h, w, 17), the COCO teacher's output on the same images.
    mpii_teacher_heatmaps: float (n, h, w, 16), the MPII teacher's output on the same images.
    epoch, max_epochs: for `mpii_weight_schedule` (scalars; may be traced).
    temperature: > 0, of the spatial softmax of both KD terms (`kd_loss`).
    loss_weights: (w1, w2, w3).
    scale_by_temperature_squared: passed to `kd_loss`.
  Returns (total, terms): float32 scalars; terms = {'gt', 'kd_coco', 'kd_mpii' (unscaled), 'mpii_scale'}.
  """
  num_student = get_format(STUDENT_FORMAT).num_keypoints
  if student_heatmaps.ndim != 4 or student_heatmaps.shape[-1] != num_student:
    raise ValueError(
      f'distill_objective: student heatmaps must be (n, h, w, {num_student}), got {student_heatmaps.shape}'
    )
  w_gt, w_coco, w_mpii = loss_weights
  gt = masked_gt_loss(student_heatmaps, gt_heatmaps, gt_weights)
  kd_coco = _teacher_kd(
    student_heatmaps, coco_teacher_heatmaps, COCO_TEACHER_FORMAT, temperature, scale_by_temperature_squared
  )
  kd_mpii = _teacher_kd(
    student_heatmaps, mpii_teacher_heatmaps, MPII_TEACHER_FORMAT, temperature, scale_by_temperature_squared
  )
  mpii_scale = mpii_weight_schedule(epoch, max_epochs)
  total = w_gt * gt + w_coco * kd_coco + w_mpii * mpii_scale * kd_mpii
  return total, {'gt': gt, 'kd_coco': kd_coco, 'kd_mpii': kd_mpii, 'mpii_scale': mpii_scale}
