"""What every importer shares: the `Target` it fills (the chosen config's model, flattened), the `Conversion` it
returns, PyTorch → Flax layout helpers, and the bicubic position-embedding resampling of the reference code.

An importer is a module with `accepts(arrays, meta) -> bool` (are these the source's parameter names of its kind)
and `convert(arrays, meta, target, source_datasets) -> Conversion`; `posebh_jax.convert` picks the first that accepts, checks what it made
against the target (names, shapes; one `error:` line naming the config key that would fix a mismatch) and writes
the checkpoint. Importers work on NumPy arrays only (no torch).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from posebh_jax.errors import UserError

Path = tuple[str, ...]
# The official ViTPose++ / PoseBH dataset order: `keypoint_head` is the first, `associate_keypoint_heads.H` the
# (H+1)-th, and expert E belongs to the E-th (docs/METHOD.md §1); transformers' `dataset_index` counts the same way.
OFFICIAL_DATASET_ORDER = ('coco', 'aic', 'mpii', 'ap10k', 'apt36k', 'coco_wholebody')


@dataclasses.dataclass
class Target:
  """The model the chosen config builds, as the converter fills it.

  Attributes:
    config: the run config (ConfigDict).
    names: the model's dataset names (heads and experts), in order.
    num_keypoints: {dataset: K}.
    flat: {('params' | 'batch_stats' | 'extra', ...): freshly initialised NumPy array}; transformer blocks
      always appear as `block_<i>` entries (the converter stacks them for a scanned model).
    grid: the backbone's token grid (h, w) at the config's input size.
  """

  config: object
  names: tuple[str, ...]
  num_keypoints: Mapping[str, int]
  flat: dict[Path, np.ndarray]
  grid: tuple[int, int]

  @property
  def depth(self) -> int:
    return int(self.config.model.depth)

  def has(self, path: Path) -> bool:
    return path in self.flat


@dataclasses.dataclass
class Conversion:
  """What an importer made of a source checkpoint.

  Attributes:
    arrays: {target path: array in this project's layout}.
    origin: {target path: the source name(s) it came from}, for messages.
    used: source names consumed.
    ignored: {source name: why it is deliberately not used} (e.g. MAE's decoder, BatchNorm's batch counters).
    notes: lines printed after the conversion (what was mapped how, what starts fresh).
    kind: a short description of the source ('official ViTPose++ (mmpose)', ...).
  """

  kind: str
  arrays: dict[Path, np.ndarray] = dataclasses.field(default_factory=dict)
  origin: dict[Path, str] = dataclasses.field(default_factory=dict)
  used: set[str] = dataclasses.field(default_factory=set)
  ignored: dict[str, str] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)

  def put(self, path: Path, value: np.ndarray, *source_names: str) -> None:
    """Records `value` for target `path`, made from `source_names` (marked used)."""
    self.arrays[path] = np.asarray(value)
    self.origin[path] = ' + '.join(source_names)
    self.used.update(source_names)


def require(arrays: Mapping[str, np.ndarray], names, layout: str) -> None:
  """Raises a one-line UserError naming the first missing of `names` in a `layout` checkpoint (e.g. 'the
  transformers checkpoint')."""
  missing = [n for n in names if n not in arrays]
  if missing:
    raise UserError(f'{layout} lacks {", ".join(missing[:4])}: it is incomplete or another layout')


def put_bias(arrays, name: str, path: Path, size: int, conversion: Conversion) -> None:
  """`arrays[name]` into `path`, or zeros of `size` when the source has no such bias (e.g. `qkv_bias=False`)."""
  if name in arrays:
    conversion.put(path, arrays[name], name)
  else:
    conversion.put(path, np.zeros(size, np.float32))
    conversion.origin[path] = f'{name} (absent: zeros)'


def put_dense(arrays, source: str, path: Path, conversion: Conversion, layout: str) -> None:
  """torch Linear `source.{weight,bias}` → Flax Dense `path/{kernel,bias}` (an absent bias as zeros)."""
  require(arrays, [f'{source}.weight'], layout)
  conversion.put(path + ('kernel',), dense_kernel(arrays[f'{source}.weight']), f'{source}.weight')
  put_bias(arrays, f'{source}.bias', path + ('bias',), np.shape(arrays[f'{source}.weight'])[0], conversion)


def put_layer_norm(arrays, source: str, path: Path, conversion: Conversion, layout: str) -> None:
  """torch LayerNorm `source.{weight,bias}` → Flax LayerNorm `path/{scale,bias}`."""
  require(arrays, [f'{source}.weight', f'{source}.bias'], layout)
  conversion.put(path + ('scale',), arrays[f'{source}.weight'], f'{source}.weight')
  conversion.put(path + ('bias',), arrays[f'{source}.bias'], f'{source}.bias')


def show_value(value) -> str:
  """A config or checkpoint value for messages (floats without trailing zeros)."""
  return f'{value:g}' if isinstance(value, float) else str(value)


def dense_kernel(weight: np.ndarray) -> np.ndarray:
  """torch Linear weight (out, in) → Flax Dense kernel (in, out)."""
  return np.ascontiguousarray(np.asarray(weight).T)


def conv_kernel(weight: np.ndarray) -> np.ndarray:
  """torch Conv2d weight (out, in, kh, kw) → Flax conv kernel (kh, kw, in, out) (cross-correlation in both)."""
  return np.ascontiguousarray(np.asarray(weight).transpose(2, 3, 1, 0))


def deconv_kernel(weight: np.ndarray) -> np.ndarray:
  """torch ConvTranspose2d weight (in, out, kh, kw) → `heatmap_head.Deconv4x4Stride2` kernel (kh, kw, in, out),
  which uses PyTorch's transposed-convolution indexing (no kernel flip)."""
  return np.ascontiguousarray(np.asarray(weight).transpose(2, 3, 0, 1))


def cubic_weights(x: np.ndarray, a: float = -0.75) -> np.ndarray:
  """The cubic convolution kernel of PyTorch's bicubic interpolation (a = −0.75) at distances `x`."""
  x = np.abs(x)
  return np.where(
    x <= 1,
    ((a + 2) * x - (a + 3)) * x * x + 1,
    np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0),
  )


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) matrix of `F.interpolate(mode='bicubic', align_corners=False)` along one axis
  (half-pixel centres, borders clamped)."""
  scale = in_size / out_size
  matrix = np.zeros((out_size, in_size), np.float64)
  for o in range(out_size):
    centre = (o + 0.5) * scale - 0.5
    base = int(np.floor(centre))
    for tap in range(base - 1, base + 3):
      matrix[o, min(max(tap, 0), in_size - 1)] += cubic_weights(centre - tap)
  return matrix


def resample_grid(tokens: np.ndarray, source_grid: tuple[int, int], target_grid: tuple[int, int]) -> np.ndarray:
  """Bicubic resampling of a (1, h·w, D) grid of position embeddings from `source_grid` to `target_grid`, as the
  reference code does (F.interpolate bicubic, align_corners=False). Returns (1, H·W, D) in the input dtype."""
  (h, w), (new_h, new_w) = source_grid, target_grid
  grid = np.asarray(tokens, np.float64).reshape(h, w, -1)
  out = np.einsum('oh,hwd->owd', bicubic_matrix(h, new_h), grid)
  out = np.einsum('pw,owd->opd', bicubic_matrix(w, new_w), out)
  return out.reshape(1, new_h * new_w, -1).astype(np.asarray(tokens).dtype)


def guess_grid(num_tokens: int, target_grid: tuple[int, int]) -> tuple[int, int] | None:
  """The (h, w) token grid of `num_tokens` patch tokens: the target's when it fits, else square, else the
  factorisation closest to the target's aspect ratio; None when `num_tokens` < 1."""
  if num_tokens < 1:
    return None
  if num_tokens == target_grid[0] * target_grid[1]:
    return tuple(target_grid)
  side = int(round(num_tokens**0.5))
  if side * side == num_tokens:
    return side, side
  aspect = target_grid[0] / target_grid[1]
  pairs = [(h, num_tokens // h) for h in range(1, num_tokens + 1) if num_tokens % h == 0]
  return min(pairs, key=lambda p: abs(np.log(p[0] / p[1]) - np.log(aspect)))
