"""Cross-format consistency of a multi-head pose model (pure NumPy).

A multi-dataset model has one head per keypoint format; several formats name the same body landmark (COCO's,
AIC's, MPII's and COCO-WholeBody's `left_knee`). On the same image, those heads should agree with each other
the way the formats' ground truths agree: formats define some landmarks differently on purpose (AIC's hips sit
higher and wider than COCO's), so the distance between two heads' predictions is compared with the distance
between the two formats' ground truths, never with zero.

Shared landmarks come from the skeleton registry: two keypoints are the same landmark when
`skeletons.format_mapping(a, b)` pairs them; groups are the connected components of those pairs over the given
formats (so AIC and MPII knees meet through COCO even though no aic<->mpii mapping is defined). Only groups with
keypoints of at least two formats count.

Definitions, for a group, a pair of its formats (a, b) and a validation image i where both formats' ground
truth of the landmark is labelled (v > 0); p = predicted xy, g = ground-truth xy (px), s_i = the normaliser
(e.g. the person box diagonal, px):
  pred_dist      |p_a - p_b| / s_i                      how far apart the two heads put the landmark
  gt_dist        |g_a - g_b| / s_i                      how far apart the two formats define it
  inconsistency  |(p_a - p_b) - (g_a - g_b)| / s_i      error of the predicted inter-format offset (0 when the
                                                        heads reproduce the formats' relation exactly, whatever
                                                        error they share); <= error_a + error_b
  abs_gap        | pred_dist - gt_dist |                the scalar version (ignores direction); <= inconsistency
  error          (|p_a - g_a| + |p_b - g_b|) / (2 s_i)   the two heads' mean error against their own format
Every aggregate is the mean over its (image, pair) instances (micro average), so a group of F formats weighs
F(F-1)/2 pairs per image. Distances are fractions of s_i.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Mapping, Sequence

import numpy as np

from posebh_jax import skeletons

METRICS = ('pred_dist', 'gt_dist', 'inconsistency', 'abs_gap', 'error')


@dataclasses.dataclass(frozen=True)
class LandmarkGroup:
  """One landmark that several formats share.

  Attributes:
    name: the keypoint's name in the first member format ('format/name' if two groups would share it).
    members: (format name, keypoint index) per member format, in the order of the formats given.
  """

  name: str
  members: tuple[tuple[str, int], ...]

  @property
  def formats(self) -> tuple[str, ...]:
    return tuple(f for f, _ in self.members)


def shared_landmark_groups(formats: Sequence[str]) -> list[LandmarkGroup]:
  """Landmarks shared by at least two of `formats`, from the registry's `format_mapping` (see module doc).

  Returns groups sorted by (first member format's position, its keypoint index). Raises ValueError when the
  mappings chain two different keypoints of one format into one group.
  """
  formats = tuple(formats)
  if len(set(formats)) != len(formats):
    raise ValueError(f'formats must be distinct, got {formats}')
  parent: dict[tuple[str, int], tuple[str, int]] = {}

  def find(node):
    parent.setdefault(node, node)
    while parent[node] != node:
      parent[node] = parent[parent[node]]
      node = parent[node]
    return node

  for a, b in itertools.combinations(formats, 2):
    try:
      pairs = skeletons.format_mapping(a, b)
    except ValueError:  # no mapping defined between the two formats (e.g. a human and an animal one)
      continue
    for i, j in pairs:
      root_a, root_b = find((a, i)), find((b, j))
      if root_a != root_b:
        parent[root_b] = root_a
  components: dict[tuple[str, int], list[tuple[str, int]]] = {}
  for node in list(parent):
    components.setdefault(find(node), []).append(node)
  position = {f: n for n, f in enumerate(formats)}
  groups = []
  for nodes in components.values():
    nodes.sort(key=lambda node: (position[node[0]], node[1]))
    member_formats = [f for f, _ in nodes]
    if len(set(member_formats)) != len(member_formats):
      names = [f'{f}/{skeletons.get_format(f).keypoint_names[k]}' for f, k in nodes]
      raise ValueError(f'the format mappings join several keypoints of one format into one landmark: {names}')
    if len(nodes) >= 2:
      first_format, first_index = nodes[0]
      groups.append(LandmarkGroup(skeletons.get_format(first_format).keypoint_names[first_index], tuple(nodes)))
  groups.sort(key=lambda g: (position[g.members[0][0]], g.members[0][1]))
  names = [g.name for g in groups]
  # Names are unique within a format; groups led by different formats could still share one: qualify those.
  return [dataclasses.replace(g, name=f'{g.members[0][0]}/{g.name}') if names.count(g.name) > 1 else g for g in groups]


class _Accumulator:
  """Sums of the per-instance metrics of one aggregate."""

  def __init__(self):
    self.count = 0
    self.sums = dict.fromkeys(METRICS, 0.0)

  def add(self, values: Mapping[str, np.ndarray]):
    self.count += int(len(values['pred_dist']))
    for key in METRICS:
      self.sums[key] += float(np.sum(values[key]))

  def result(self) -> dict:
    out = {key: (self.sums[key] / self.count if self.count else float('nan')) for key in METRICS}
    out['count'] = self.count
    return out


def cross_format_consistency(
  pred: Mapping[str, np.ndarray],
  gt: Mapping[str, np.ndarray],
  norm: np.ndarray,
  groups: Sequence[LandmarkGroup] | None = None,
) -> dict:
  """Cross-format consistency of per-format predictions on the same N images (definitions in the module doc).

  Args:
    pred: format name -> predicted keypoints (N, K_f, 2) in px (extra trailing columns, e.g. scores, ignored).
    gt: format name -> ground truth (N, K_f, 3) in px: x, y, visibility (> 0: labelled), same images and order.
    norm: (N,) per-image normaliser in px (e.g. the person box diagonal); images with norm <= 0 are skipped.
    groups: the shared landmarks; default `shared_landmark_groups(list(pred))`. Groups naming formats that
      `pred` lacks are reduced to the formats present (and dropped below two).
  Returns:
    {'overall': m, 'groups': {name: m | {'formats': [...]}}, 'format_pairs': {'a~b': m},
     'formats': {f: m over the pairs that include f}}, where m = {'pred_dist', 'gt_dist', 'inconsistency',
    'abs_gap', 'error' (floats, fractions of norm; NaN when count is 0), 'count' (image-pair instances)}.
  """
  formats = list(pred)
  if set(gt) != set(formats):
    raise ValueError(f'pred and gt must hold the same formats, got {sorted(pred)} and {sorted(gt)}')
  norm = np.asarray(norm, np.float64)
  if norm.ndim != 1:
    raise ValueError(f'norm must have shape (N,), got {norm.shape}')
  n = norm.shape[0]
  pred_xy, gt_arr = {}, {}
  for f in formats:
    p, g = np.asarray(pred[f], np.float64), np.asarray(gt[f], np.float64)
    if p.ndim != 3 or p.shape[0] != n or p.shape[2] < 2:
      raise ValueError(f'pred[{f!r}] must have shape ({n}, K, 2), got {p.shape}')
    if g.shape != (n, p.shape[1], 3):
      raise ValueError(f'gt[{f!r}] must have shape ({n}, {p.shape[1]}, 3) like its predictions, got {g.shape}')
    pred_xy[f], gt_arr[f] = p[..., :2], g
  if groups is None:
    groups = shared_landmark_groups(formats)
  overall = _Accumulator()
  by_group: dict[str, _Accumulator] = {}
  group_formats: dict[str, list[str]] = {}
  by_pair: dict[str, _Accumulator] = {}
  by_format = {f: _Accumulator() for f in formats}
  positive = norm > 0
  safe_norm = np.where(positive, norm, 1.0)
  for group in groups:
    members = [(f, k) for f, k in group.members if f in pred_xy]
    if len(members) < 2:
      continue
    accumulator = by_group.setdefault(group.name, _Accumulator())
    group_formats[group.name] = [f for f, _ in members]
    for (fa, ka), (fb, kb) in itertools.combinations(members, 2):
      valid = positive & (gt_arr[fa][:, ka, 2] > 0) & (gt_arr[fb][:, kb, 2] > 0)
      s = safe_norm[valid]
      pa, pb = pred_xy[fa][valid, ka], pred_xy[fb][valid, kb]
      ga, gb = gt_arr[fa][valid, ka, :2], gt_arr[fb][valid, kb, :2]
      pred_dist = np.linalg.norm(pa - pb, axis=-1) / s
      gt_dist = np.linalg.norm(ga - gb, axis=-1) / s
      values = {
        'pred_dist': pred_dist,
        'gt_dist': gt_dist,
        'inconsistency': np.linalg.norm((pa - pb) - (ga - gb), axis=-1) / s,
        'abs_gap': np.abs(pred_dist - gt_dist),
        'error': 0.5 * (np.linalg.norm(pa - ga, axis=-1) + np.linalg.norm(pb - gb, axis=-1)) / s,
      }
      for acc in (overall, accumulator, by_pair.setdefault(f'{fa}~{fb}', _Accumulator()), by_format[fa], by_format[fb]):
        acc.add(values)
  return {
    'overall': overall.result(),
    'groups': {name: dict(acc.result(), formats=group_formats[name]) for name, acc in by_group.items()},
    'format_pairs': {key: acc.result() for key, acc in by_pair.items()},
    'formats': {f: acc.result() for f, acc in by_format.items()},
  }
