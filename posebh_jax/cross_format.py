"""Every head on the same validation images: per-format predictions and the all-format ground truth of the
synthetic validation split (whose examples carry every format of their category), and the cross-format
consistency of a trained model (`posebh_jax.evaluation.consistency`).

  task = train.Task(config, mesh, 1, counts); share_predict_fns(task)
  variables, step = load_variables(task, workdir)
  truth = ground_truth_by_category(config.data)
  results = consistency_by_category(task, variables, truth)    # {category: consistency dict}

The predictions are the evaluator's: the dataset's eval transform (GT box crop), `Task.predict_fn` (flip test
per `config.eval_flip`), the dataset codec's decoding, mapped back to image px.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from data_pipeline import pipeline
from posebh_jax import checkpoint as checkpoint_lib
from posebh_jax import evaluator as evaluator_lib
from posebh_jax import skeletons
from posebh_jax import sharding as sharding_lib
from posebh_jax.evaluation import consistency


def share_predict_fns(task):
  """Memoises `task.predict_fn` per (dataset, flip) on this Task instance, so that every model evaluated with
  the same Task (and every `Evaluator` built on it) reuses one compiled prediction per head. Returns `task`."""
  if not getattr(task, '_predict_fns_shared', False):
    task.predict_fn = functools.lru_cache(maxsize=None)(task.predict_fn)
    task._predict_fns_shared = True
  return task


def load_variables(task, path: str) -> tuple[dict, int]:
  """The latest checkpoint of the run in `path` (workdir or checkpoint dir) as `{'params', 'batch_stats'}` for
  `task`'s model, replicated over its mesh: entries `task`'s model lacks (e.g. PoseBH's embedding module, unused
  at inference) are dropped. Returns (variables, checkpoint step)."""
  state, step = checkpoint_lib.read_state(path)
  keep = set(task.abstract_params)
  params = {k: v for k, v in state['params'].items() if k in keep}
  missing = keep - set(params)
  if missing:
    raise ValueError(f'checkpoint {path} lacks {sorted(missing)} of the model being evaluated')
  batch_stats = {k: v for k, v in (state.get('batch_stats') or {}).items() if k in keep}
  variables = jax.device_put({'params': params, 'batch_stats': batch_stats}, sharding_lib.replicated(task.mesh))
  return variables, int(step)


def predict_split(task, variables, name: str, flip: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Head `name` on its dataset's eval split (every example annotated in its format).

  Returns (image_ids int64 (N,), keypoints float64 (N, K, 3): x, y in image px and the heatmap-peak score), in
  `pipeline.make_eval_iterator` order.
  """
  config = task.config
  flip = config.eval_flip if flip is None else flip
  predict = evaluator_lib.on_host(task.predict_fn(name, flip), variables, task.batch_sharding)
  ids, keypoints = [], []
  for batch, predicted in task.tasks[name].keypoint_batches(
    predict, evaluator_lib.eval_batch_size(config, task.groups)
  ):
    valid = np.asarray(batch['valid'], bool)
    ids.append(np.asarray(batch['image_id'], np.int64)[valid])
    keypoints.append(predicted[valid])
  k = task.num_keypoints[name]
  return (
    np.concatenate(ids) if ids else np.zeros(0, np.int64),
    np.concatenate(keypoints) if keypoints else np.zeros((0, k, 3)),
  )


def ground_truth_by_category(data_config, names=None) -> dict[str, dict]:
  """The all-format ground truth of the eval split (one person per image, as in the synthetic validation split),
  per category of the datasets' formats.

  Args:
    data_config: `config.data`.
    names: datasets to include (default `data_config.order`); their formats must be distinct.
  Returns:
    {category ('human' | 'animal'): {'datasets': names in order, 'image_ids': int64 (N,) images annotated in
    every one of those formats, 'keypoints': {dataset: float64 (N, K, 3) x, y px, visibility},
    'norm': float64 (N,) the person box diagonal in px}}; categories with a single dataset are left out.
  """
  names = tuple(data_config.order if names is None else names)
  formats = [data_config.datasets[n].format for n in names]
  if len(set(formats)) != len(formats):
    raise ValueError(f'datasets {names} share formats {formats}; cross-format consistency needs one head per format')
  by_category: dict[str, list[str]] = {}
  for name, fmt in zip(names, formats):
    by_category.setdefault(skeletons.get_format(fmt).category, []).append(name)
  out = {}
  for category, members in by_category.items():
    if len(members) < 2:
      continue
    truths = {n: pipeline.eval_ground_truth(data_config, n) for n in members}
    for n, t in truths.items():
      if len(set(int(i) for i in t['image_ids'])) != len(t['image_ids']):
        raise ValueError(
          f'{n}: several persons per eval image; cross-format consistency pairs the heads\' '
          'predictions by image id, which needs one person per image (the synthetic split)'
        )
    common = [int(i) for i in truths[members[0]]['image_ids']]
    for n in members[1:]:
      present = set(int(i) for i in truths[n]['image_ids'])
      common = [i for i in common if i in present]
    keypoints = {}
    for n in members:
      position = {int(i): p for p, i in enumerate(truths[n]['image_ids'])}
      rows = [position[i] for i in common]
      keypoints[n] = np.asarray(truths[n]['keypoints'], np.float64)[rows]
    first = truths[members[0]]
    position = {int(i): p for p, i in enumerate(first['image_ids'])}
    boxes = np.asarray([first['annotations'][position[i]]['bbox'] for i in common], np.float64).reshape(-1, 4)
    out[category] = {
      'datasets': list(members),
      'image_ids': np.asarray(common, np.int64),
      'keypoints': keypoints,
      'norm': np.hypot(boxes[:, 2], boxes[:, 3]),
    }
  return out


def consistency_by_category(task, variables, truth: dict[str, dict]) -> dict[str, dict]:
  """`consistency.cross_format_consistency` of the model `variables` per category of `truth`
  (`ground_truth_by_category`), predicting with every head of the category on the same images. Keys of the
  per-format results are format names."""
  out = {}
  for category, gt in truth.items():
    pred, gt_by_format = {}, {}
    for name in gt['datasets']:
      ids, keypoints = predict_split(task, variables, name)
      position = {int(i): p for p, i in enumerate(ids)}
      missing = [int(i) for i in gt['image_ids'] if int(i) not in position]
      if missing:
        raise ValueError(f'head {name} has no prediction for validation images {missing[:5]}')
      fmt = task.formats[name].name
      pred[fmt] = keypoints[[position[int(i)] for i in gt['image_ids']]]
      gt_by_format[fmt] = gt['keypoints'][name]
    out[category] = consistency.cross_format_consistency(pred, gt_by_format, gt['norm'])
  return out
