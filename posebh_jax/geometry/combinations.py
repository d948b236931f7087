"""Keypoints as affine combinations of landmarks: a keypoint is a weighted sum of named landmark positions
(weights summing to 1), so a whole skeleton format is a (K, L) matrix applied to (L, D) landmarks.

A combination is a dict {landmark name: weight}; the helpers build them, `combination_matrix` compiles K of
them against an ordered landmark list and `apply` maps landmarks to keypoints.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

Combination = Mapping[str, float]


def at(name: str) -> dict[str, float]:
  """The landmark `name` itself: {name: 1}."""
  return {name: 1.0}


def add(*combinations: Combination) -> dict[str, float]:
  """Sum of combinations, weights of the same landmark added in argument order."""
  out = {}
  for combination in combinations:
    for name, weight in combination.items():
      out[name] = out.get(name, 0.0) + weight
  return out


def scale(combination: Combination, factor: float) -> dict[str, float]:
  """Every weight multiplied by `factor`."""
  return {name: weight * factor for name, weight in combination.items()}


def lerp(a: str, b: str, t: float) -> dict[str, float]:
  """The point a fraction `t` of the way from landmark `a` to landmark `b`: (1 - t) a + t b."""
  return add(scale(at(a), 1.0 - t), scale(at(b), t))


def vector(a: str, b: str) -> dict[str, float]:
  """The vector b - a (weights sum to 0); empty when a == b."""
  return {b: 1.0, a: -1.0} if a != b else {}


def combination_matrix(combinations: Sequence[Combination], landmark_names: Sequence[str]) -> np.ndarray:
  """K combinations over `landmark_names` (L,) -> float64 (K, L) weights; raises ValueError for an unknown
  landmark or a row whose weights do not sum to 1."""
  row = {name: i for i, name in enumerate(landmark_names)}
  weights = np.zeros((len(combinations), len(landmark_names)))
  for k, combination in enumerate(combinations):
    for name, weight in combination.items():
      if name not in row:
        raise ValueError(f'combination {k} uses landmark {name!r}, which is not in the landmark list')
      weights[k, row[name]] += weight
  if not np.allclose(weights.sum(axis=1), 1.0):
    raise ValueError('combination weights must sum to 1 in every row (an affine combination)')
  return weights


def exact_landmarks(weights: np.ndarray, tolerance: float = 1e-12) -> np.ndarray:
  """(K, L) weights -> int64 (K,): the landmark column when a row is exactly that landmark (one weight 1),
  else -1."""
  out = np.full(len(weights), -1, dtype=np.int64)
  for k, row in enumerate(np.asarray(weights)):
    nonzero = np.flatnonzero(np.abs(row) > tolerance)
    if len(nonzero) == 1 and abs(row[nonzero[0]] - 1.0) < tolerance:
      out[k] = nonzero[0]
  return out


def apply(weights: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
  """(K, L) weights and (L, D) landmarks -> (K, D) keypoints, same frame and units."""
  return weights @ landmarks
