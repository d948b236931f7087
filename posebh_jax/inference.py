"""Inference for library users: a trained run, a checkpoint directory or the converter's output as a Python object.

  predictor = Predictor.load('workdirs/b16')            # or .../checkpoints, .../checkpoints/<step>, a converted dir
  heatmaps = predictor.heatmaps(images, 'coco')         # uint8 (N, H, W, 3) at the input size → (N, h, w, K)
  people = predictor.predict(image, boxes)              # top-down: crops, flip test, decode, back to the image
  people['coco']['keypoints']                           # float32 (n, 17, 2) image px; ['scores'] (n, 17)

The model is rebuilt from the run's `config.json` and its variables are restored onto one device; nothing of the
trainer (optimizer, data pipeline, mesh) is built. `write_weights` writes the weights-only checkpoint that the
converter and the exporter produce and that `Predictor.load`, `--mode=eval` and `config.init_from` read.

The top-down path is the evaluation's (`HeatmapTask.keypoint_batches` on `TopDownEvalTransform` crops): each box is
padded (`config.data.bbox_padding`) and widened to the input aspect ratio (`geometry.box_to_center_scale`), warped
with the dataset codec's affine (UDP or classic, `geometry.get_warp_matrix`), run through the dataset's head with
flip test when `config.eval_flip`, decoded by the codec (DARK-UDP or quarter-pixel shift) and mapped back to image px.
Crops go through the model in batches of a fixed size (the last one padded), so each head compiles once.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import os
from typing import Any, Hashable, Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipeline import transforms
from posebh_jax import checkpoint as checkpoint_lib
from posebh_jax import skeletons
from posebh_jax import tasks as tasks_lib
from posebh_jax import workdir as workdir_lib
from posebh_jax.errors import UserError
from posebh_jax.geometry import affine
from posebh_jax.models import pose_model

# Crops per model call in `predict` / `predict_many` when the caller does not say.
DEFAULT_BATCH_SIZE = 16


def run_directory(path: str) -> str:
  """The run directory (the one holding `config.json`) of `path`: a workdir, its `checkpoints/` directory or one
  step's directory. Raises UserError when none of them holds a config.json."""
  return workdir_lib.find_run_directory(path)


def load_run_config(path: str) -> ml_collections.ConfigDict:
  """The config a run (or the converter) wrote to `config.json` in `path`'s run directory (`workdir.load_run_config`:
  one-line errors for none, not JSON, not a run config)."""
  return workdir_lib.load_run_config(path)


def write_weights(workdir: str, config, variables: Mapping[str, Any], step: int = 0) -> str:
  """Writes a weights-only checkpoint: `workdir/config.json` (the config that builds the model) and
  `workdir/checkpoints/<step>/state` holding `step` and `variables` ({params, batch_stats, extra}, NumPy or jax
  arrays; a missing entry is saved empty). Returns the checkpoints directory."""
  workdir = os.path.abspath(workdir)
  workdir_lib.write_config(config, workdir)
  state = {'step': np.asarray(step, np.int32)}
  state.update({key: variables.get(key, {}) for key in checkpoint_lib.MODEL_ITEMS})
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=1)
  try:
    checkpointer.save(step, jax.tree.map(jnp.asarray, state))
  finally:
    checkpointer.close()
  return checkpointer.directory


def check_image(image) -> np.ndarray:
  """`image` as a uint8 (H, W, 3) RGB array; raises UserError for anything else."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8 or 0 in image.shape:
    raise UserError(f'image must be uint8 (H, W, 3) RGB of any size; got {image.dtype} {image.shape}')
  return image


def check_boxes(boxes) -> np.ndarray:
  """Person boxes as float64 (n, 5): x, y, w, h in image px (COCO xywh) and a score (1 where the input has only
  four columns). Raises UserError for another shape, non-finite values or a negative width or height."""
  try:
    boxes = np.asarray(boxes, np.float64)
  except (TypeError, ValueError):
    raise UserError('boxes must be an (n, 4) or (n, 5) array of numbers: x, y, w, h[, score] per person') from None
  if boxes.size == 0:
    return np.zeros((0, 5))
  if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
    raise UserError(
      f'boxes must be (n, 4) COCO x, y, w, h in image px, optionally with a score column; got {boxes.shape}'
    )
  if not np.all(np.isfinite(boxes)) or np.any(boxes[:, 2:4] < 0):
    raise UserError('boxes must be finite x, y, w, h with w, h >= 0 (COCO xywh, not x1, y1, x2, y2)')
  if boxes.shape[1] == 4:
    boxes = np.concatenate([boxes, np.ones((len(boxes), 1))], axis=1)
  return boxes


def crop_geometry(boxes, image_size_hw, bbox_padding: float) -> tuple[np.ndarray, np.ndarray]:
  """The evaluation crops of `boxes` ((n, 4+) xywh image px): (center float32 (n, 2), scale float32 (n, 2)) in
  image px, as `TopDownEvalTransform` makes them (aspect ratio of `image_size_hw` (H, W), `bbox_padding`, scale at
  least 1 px)."""
  image_h, image_w = image_size_hw
  boxes = np.asarray(boxes, np.float64).reshape(-1, np.shape(boxes)[-1])[:, :4]
  center, scale = affine.box_to_center_scale(boxes, image_w / image_h, bbox_padding)
  return center.astype(np.float32), np.maximum(scale, 1.0).astype(np.float32)


def crop_people(image: np.ndarray, boxes, image_size_hw, bbox_padding: float, use_udp: bool):
  """The model inputs of `boxes` ((n, 4+) xywh px) in `image` (uint8 (H, W, 3)): crops uint8 (n, h, w, 3) at
  `image_size_hw` (`transforms.eval_crop`, the evaluation's crop) and their (center, scale) float32 (n, 2) image px
  (the warp uses the float64 geometry, the mapping back of the keypoints its float32 copy, as in evaluation)."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, np.shape(boxes)[-1])
  crops = np.zeros((len(boxes),) + tuple(image_size_hw) + (3,), np.uint8)
  centers, scales = np.zeros((len(boxes), 2), np.float32), np.zeros((len(boxes), 2), np.float32)
  for i, box in enumerate(boxes):
    crops[i], centers[i], scales[i] = transforms.eval_crop(image, box[:4], image_size_hw, bbox_padding, use_udp)
  return crops, centers, scales


@dataclasses.dataclass
class _Pending:
  """One image of `predict_many` whose crops are not all through the model yet."""

  key: Hashable
  result: dict
  remaining: int


class _CropQueue:
  """Crops of one warp kind waiting for a full batch, each with its owner (a `_Pending`) and its row there."""

  def __init__(self):
    self.crops, self.centers, self.scales, self.owners = [], [], [], []

  def __len__(self) -> int:
    return len(self.owners)

  def add(self, crops, centers, scales, owner: _Pending) -> None:
    self.crops.extend(crops)
    self.centers.extend(centers)
    self.scales.extend(scales)
    self.owners.extend((owner, row) for row in range(len(crops)))

  def take(self, count: int):
    """The first `count` crops: (crops (count, h, w, 3), centers, scales, owners)."""
    out = (np.stack(self.crops[:count]), np.stack(self.centers[:count]), np.stack(self.scales[:count]))
    owners = self.owners[:count]
    del self.crops[:count], self.centers[:count], self.scales[:count], self.owners[:count]
    return out + (owners,)


class Predictor:
  """A trained multi-dataset model ready to predict.

  Attributes:
    config: the run's config (ConfigDict).
    model: the `pose_model.PoseModel` (one group, no experts' stacking across datasets needed).
    variables: {'params', 'batch_stats'} on the first local device.
    extra: the run's non-gradient state (PoseBH prototypes), as saved.
    tasks: {dataset: its Task}, in the model's dataset order.
    step: the train step of the loaded checkpoint.
  """

  def __init__(self, config, variables: Mapping[str, Any], extra: Mapping[str, Any] | None = None, step: int = 0):
    """Builds the model of `config` around `variables` ({'params', 'batch_stats'})."""
    self.config = config
    self.tasks = tasks_lib.build_tasks(config)
    self.dataset_names = tuple(config.data.order)
    self.model = pose_model.build_model(
      config.model,
      self.dataset_names,
      num_groups=1,
      posebh_config=config.posebh,
      head_specs=[self.tasks[n].head_spec() for n in self.dataset_names],
      experts=pose_model.dataset_experts(config),
    ).clone(stack_equal_datasets=False)
    device = jax.local_devices()[0]
    self.variables = jax.device_put(
      {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}, device
    )
    self.extra = dict(extra or {})
    self.step = step
    self._compiled: dict[tuple, Any] = {}

  @classmethod
  def load(cls, path: str, dtype: str | None = None) -> 'Predictor':
    """Loads `path`: a workdir of `posebh_jax.main`, its `checkpoints/` (latest step) or `checkpoints/<step>`
    directory, or the converter's or exporter's output. `dtype` ('float32', 'bfloat16') overrides the compute
    dtype the run was configured with."""
    config = load_run_config(path)
    try:
      source = checkpoint_lib.checkpoint_source(path, run_directory(path))
    except FileNotFoundError as e:
      raise UserError(str(e)) from None
    if dtype is not None:
      if dtype not in ('float32', 'bfloat16'):
        raise UserError(f"dtype '{dtype}' is not a compute dtype of the model; use float32 or bfloat16")
      config.model.dtype = dtype
    if 'float64' in (config.model.dtype, config.model.param_dtype) and not jax.config.jax_enable_x64:
      raise UserError(
        f'{run_directory(path)} holds a float64 model; set JAX_ENABLE_X64=1 or pass dtype="float32" (compute only)'
      )
    state, step = checkpoint_lib.read_state(source, items=checkpoint_lib.MODEL_ITEMS)
    return cls(config, {k: state.get(k, {}) for k in ('params', 'batch_stats')}, state.get('extra'), step)

  def _check_dataset(self, dataset: str) -> None:
    if dataset not in self.dataset_names:
      raise UserError(f"unknown dataset '{dataset}'; this model has heads for {', '.join(self.dataset_names)}")

  def predict_function(self, dataset: str, flip: bool):
    """jit'd `(variables, images uint8 (n, H, W, 3)) → the task's test-time output for `dataset`` (heatmap
    tasks: float32 heatmaps (n, h, w, K); flip test when `flip`). Compiled once per input shape."""
    self._check_dataset(dataset)
    key = (dataset, flip)
    if key not in self._compiled:
      self._compiled[key] = jax.jit(self._test_time_output(dataset, flip))
    return self._compiled[key]

  def _test_time_output(self, dataset: str, flip: bool):
    task = self.tasks[dataset]
    apply = lambda variables, images: self.model.apply(variables, {dataset: images}, train=False)[dataset]
    return lambda variables, images: task.predict(apply, variables, images, flip)

  def heatmaps(self, images: np.ndarray, dataset: str) -> np.ndarray:
    """Raw eval-mode heatmaps, no flip test.

    Args:
      images: uint8 (N, H, W, 3) RGB at the model's input size (`config.data.image_size`).
      dataset: a dataset name of the model (its expert and head are used).
    Returns: float32 (N, h, w, K) heatmaps of `dataset`'s K keypoints.
    """
    images = self._check_images(images)
    out = self.predict_function(dataset, False)(self.variables, images)
    return np.asarray(jax.device_get(out), np.float32)

  def _check_images(self, images) -> np.ndarray:
    images = np.asarray(images)
    image_h, image_w = self.config.data.image_size
    if images.ndim != 4 or images.shape[1:] != (image_h, image_w, 3) or images.dtype != np.uint8:
      raise UserError(
        f'images must be uint8 (N, {image_h}, {image_w}, 3) RGB at the model input size; got {images.dtype} '
        f'{images.shape} (Predictor.predict crops and resizes whole images)'
      )
    return images

  def formats(self) -> dict[str, str]:
    """{dataset: its skeleton format name}."""
    return {name: task.format.name for name, task in self.tasks.items()}

  # ------------------------------------------------------------------------------------------------ top-down
  def resolve_formats(self, formats: Sequence[str] | str | None = None) -> dict[str, str]:
    """{format: the dataset whose head predicts it} for skeleton format names `formats` (a sequence or a comma-
    separated string; None: the format of every dataset with a heatmap head). A format served by several datasets
    gets the first in `config.data.order`; a head that predicts another skeleton than its dataset's (the distillation
    student's 'unified21') serves that one by default and its datasets' formats on request. Raises UserError for a format no head predicts or a task without keypoint
    heatmaps."""
    by_format: dict[str, str] = {}
    for name, task in self.tasks.items():
      for fmt in task.output_formats():
        by_format.setdefault(fmt, name)
    if formats is None:
      # Each heatmap head's own format once (a unified-skeleton student: its 21 keypoints, not their mappings).
      own = [task.output_formats()[0] for task in self.tasks.values() if hasattr(task, 'codec')]
      wanted = list(dict.fromkeys(own))
    else:
      wanted = [f.strip() for f in formats.split(',')] if isinstance(formats, str) else [str(f) for f in formats]
      wanted = list(dict.fromkeys(f for f in wanted if f))
    if not wanted:
      raise UserError(f"no formats requested; this model predicts {', '.join(by_format)}")
    unknown = [f for f in wanted if f not in by_format]
    if unknown:
      raise UserError(f"unknown format(s) {', '.join(unknown)}; this model predicts {', '.join(by_format)}")
    out = {fmt: by_format[fmt] for fmt in wanted}
    for fmt, name in out.items():
      if not hasattr(self.tasks[name], 'codec'):
        raise UserError(f"dataset '{name}' ({fmt}) is a {self.tasks[name].kind} task; predict serves heatmap heads")
    return out

  def crop_geometry(self, boxes) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) float32 (n, 2) image px of the evaluation crops of `boxes` ((n, 4+) COCO xywh px)."""
    return crop_geometry(check_boxes(boxes), tuple(self.config.data.image_size), self.config.data.bbox_padding)

  def predict(
    self,
    image,
    boxes,
    formats: Sequence[str] | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    flip: bool | None = None,
  ) -> dict[str, dict[str, np.ndarray]]:
    """Top-down keypoints of the people in `boxes`.

    Args:
      image: uint8 (H, W, 3) RGB, any size.
      boxes: (n, 4) COCO x, y, w, h in image px, or (n, 5) with a detection score (unused here).
      formats: skeleton format names (sequence or comma-separated); default every dataset's format. A format
        served by several datasets uses the first in `config.data.order`.
      batch_size: crops per model call (the last call is padded to it, so each head compiles once).
      flip: flip test; default `config.eval_flip`.
    Returns: {format: {'keypoints': float32 (n, K, 2) image px (pixel centres at integer coordinates), 'scores':
      float32 (n, K) heatmap maxima}}, the people in `boxes` order.
    """
    return next(self.predict_many([(0, image, boxes)], formats, batch_size, flip))[1]

  def predict_many(
    self,
    items: Iterable[tuple[Hashable, Any, Any]],
    formats: Sequence[str] | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    flip: bool | None = None,
  ) -> Iterator[tuple[Hashable, dict[str, dict[str, np.ndarray]]]]:
    """`predict` over a stream of images, batching the crops of consecutive images together.

    Args: `items` yields (key, image uint8 (H, W, 3), boxes (n, 4|5)); the rest as `predict`.
    Yields: (key, `predict`'s result for that image), in `items` order, as soon as all its crops are through.
    """
    if batch_size < 1:
      raise UserError(f'batch_size must be at least 1 (got {batch_size})')
    targets = self.resolve_formats(formats)
    flip = bool(self.config.eval_flip if flip is None else flip)
    image_size = tuple(self.config.data.image_size)
    by_warp: dict[bool, list[tuple[str, str]]] = {}
    for fmt, name in targets.items():
      by_warp.setdefault(self.tasks[name].codec.use_udp, []).append((fmt, name))
    queues = {use_udp: _CropQueue() for use_udp in by_warp}
    pending: collections.deque[_Pending] = collections.deque()
    for key, image, boxes in items:
      image, boxes = check_image(image), check_boxes(boxes)
      n = len(boxes)
      result = {}
      for fmt in targets:
        k = skeletons.get_format(fmt).num_keypoints
        result[fmt] = {'keypoints': np.zeros((n, k, 2), np.float32), 'scores': np.zeros((n, k), np.float32)}
      entry = _Pending(key, result, n * len(queues))
      pending.append(entry)
      for use_udp, queue in queues.items():
        if n:
          queue.add(*crop_people(image, boxes, image_size, self.config.data.bbox_padding, use_udp), entry)
        while len(queue) >= batch_size:
          self._run_batch(queue.take(batch_size), by_warp[use_udp], flip, batch_size)
      while pending and pending[0].remaining == 0:
        done = pending.popleft()
        yield done.key, done.result
    for use_udp, queue in queues.items():
      while len(queue):
        self._run_batch(queue.take(min(batch_size, len(queue))), by_warp[use_udp], flip, batch_size)
    while pending:
      done = pending.popleft()
      yield done.key, done.result

  def _run_batch(self, batch, targets: Sequence[tuple[str, str]], flip: bool, batch_size: int) -> None:
    """Runs the heads of `targets` ((format, dataset) pairs sharing one warp) on one batch of crops (padded to
    `batch_size`), decodes and maps back to the image, and writes the rows into their owners' results."""
    crops, centers, scales, owners = batch
    count = len(crops)
    if count < batch_size:
      crops = np.concatenate([crops, np.zeros((batch_size - count,) + crops.shape[1:], np.uint8)])
    crops = jax.device_put(crops, jax.local_devices()[0])
    # Dispatch every head first (asynchronous), then decode on the host while the next head computes.
    outputs = [(fmt, name, self.predict_function(name, flip)(self.variables, crops)) for fmt, name in targets]
    for fmt, name, output in outputs:
      task = self.tasks[name]
      keypoints = task.decode_to_image(np.asarray(jax.device_get(output))[:count], centers, scales)
      image_xy, scores = task.to_format(keypoints[..., :2], keypoints[..., 2], fmt)
      for (owner, row), xy, score in zip(owners, image_xy, scores):
        owner.result[fmt]['keypoints'][row] = xy
        owner.result[fmt]['scores'][row] = score
    for owner, _ in owners:
      owner.remaining -= 1

  # ------------------------------------------------------------------------------------------------ export
  def single_dataset(self, dataset: str) -> 'Predictor':
    """This model's plain single-dataset model for `dataset` (`pose_model.split_dataset_variables`: the dataset's
    expert columns assembled into fc2, its head only), as a Predictor whose config (one dataset,
    `model.use_experts=False`, unscanned blocks, no PoseBH embedding) `write_weights` can save and `load` read."""
    self._check_dataset(dataset)
    _, variables = pose_model.split_dataset_variables(self.model, self.variables, dataset)
    config = copy.deepcopy(self.config)
    entry = config.data.datasets[dataset].to_dict()
    config.data.order = (dataset,)
    config.data.datasets = ml_collections.ConfigDict({dataset: entry})
    config.model.update(dict(use_experts=False, scan=False, remat=False, drop_path=0.0))
    config.posebh.enabled = False
    config.eval_datasets = ()
    if 'transfer' in config:
      config.transfer.update(dict(enabled=False, new_datasets=(), init_like=()))
    return Predictor(config, variables, step=self.step)

  def export_function(self, dataset: str, flip: bool = False, platforms: Sequence[str] | None = None):
    """`jax.export` of `(images uint8 (b, H, W, 3), b symbolic) → float32 heatmaps (b, h, w, K)` of `dataset`'s
    head (flip test baked in with `flip`), the variables inside as constants, lowered for `platforms` (e.g.
    ('cpu', 'cuda'); default this backend). Returns the `jax.export.Exported`; `.serialize()` gives its bytes."""
    self._check_dataset(dataset)
    image_h, image_w = self.config.data.image_size
    output = self._test_time_output(dataset, flip)
    variables = self.variables

    def heatmaps(images):
      # One example at a time under vmap: the model's static batch layout needs a concrete batch size, vmap
      # gives the exported function a symbolic one (and batches every operation again).
      return jax.vmap(lambda image: output(variables, image[None])[0])(images).astype(jnp.float32)

    (batch,) = jax.export.symbolic_shape('batch')
    spec = jax.ShapeDtypeStruct((batch, image_h, image_w, 3), jnp.uint8)
    return jax.export.export(jax.jit(heatmaps), platforms=tuple(platforms) if platforms else None)(spec)
