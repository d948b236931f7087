"""Input-pipeline throughput on real images: the train transform against a straightforward reference, and
the grain pipeline's scaling over `mp_prefetch` worker processes.

  python -m benchmarks.input_pipeline [--iterations=N] [--workers=1,2] [--steps=N] [--data_dir=DIR]

Without `--data_dir`, the COCO, AIC, MPII and AP-10K samples of $POSEBH_REALDATA (default ../shared/realdata) are
prepared with the real tfds builders into a temporary directory (one record per instance, the original JPEG
bytes), so both transforms see exactly what training sees; with `--data_dir`, the datasets prepared there are used.

Printed, per worker process (one OpenCV thread, so img/s per core):
  (a) reference: full-size `cv2.imdecode`, `cv2.warpAffine`, Gaussian targets in a per-joint Python loop;
  (b) ours: `TopDownTrainTransform` (reduced-size JPEG decoding, vectorised targets);
  ratio b/a. Both draw the same augmentation for each (record, iteration), in interleaved passes, timed by
  process CPU time (what a worker core spends; robust to other load on the machine) and by wall time.
  (c) `make_train_dataset` batches through `mp_prefetch` with 1, 2, ... workers (default: up to
  os.cpu_count()): img/s, per worker, scaling efficiency against 1 worker, CPU ms per image (this process
  and its workers) and the cores they kept busy on average (CPU seconds / wall seconds): on a shared
  machine a flat CPU ms/img with few cores busy means the scaling is capped by the cores others leave free.
  (d) with `--records3d=N` (default 200; 0 skips it): the 3D train transform (`Pose3DTrainTransform`: perspective
  crop, scale / rotation / flip, synthetic occlusion, colour) beside the 2D one on the same N synthetic 3D images
  (`posebh_synthetic3d`'s records in format syn_h36m, rendered in-process; the 2D transform reads the projected
  joints as 17 'coco' keypoints, so both crop the same people at the same output size), per worker process as in
  (a)/(b), plus the 3D transform without occlusion and colour (what those two cost).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import types

import cv2
import numpy as np

from configs import common
from data_pipeline import pipeline, prepare, transforms3d
from data_pipeline.transforms import TopDownTrainTransform, crop_matrix, decode_jpeg, decode_reduction, warp_keypoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ('coco', 'aic', 'mpii', 'ap10k')
# prepare name and `prepare_real` options per dataset for the ../shared/realdata samples (the samples serve
# as the train split; their annotation files are named differently from the official layouts).
SAMPLES = {
  'coco': ('coco_keypoints', 'coco', 'test_coco.json'),
  'aic': ('aic', 'aic', 'test_aic.json'),
  'mpii': ('mpii', 'mpii', 'test_mpii.json'),
  'ap10k': ('ap10k', 'ap10k', 'test_ap10k.json'),
}


def default_realdata() -> str:
  """$POSEBH_REALDATA, default ../shared/realdata next to the repository (the tests' setting too)."""
  return os.path.abspath(os.environ.get('POSEBH_REALDATA') or os.path.join(REPO, '..', 'shared', 'realdata'))


def prepare_samples(data_dir: str, realdata: str, datasets=DATASETS) -> None:
  """Builds the train splits of `datasets` from the realdata samples into `data_dir` with the real builders."""
  for name in datasets:
    prepare_name, folder, annotations = SAMPLES[name]
    prepare.prepare_real(
      prepare_name,
      manual_dir=os.path.join(realdata, folder),
      data_dir=data_dir,
      annotation_files={'train': annotations},
      log=lambda line: None,
    )


# ----------------------------------------------------------------------------------------------- reference


def gaussian_targets_loop(keypoints_xy, visible, codec):
  """Per-joint Python loop version of the codec's Gaussian targets (mmpose 0.x style): (K, h, w), (K,).

  `codec` has `heatmap_size_wh`, `input_size_wh`, `sigma` and `use_udp` (see `ReferenceTrainTransform`).

  Same conventions as `posebh_jax.codecs.heatmap`: UDP centres at x * (w - 1) / (W - 1), MSRA at the rounded
  x / stride; a window of radius 3 sigma around the rounded centre; weight 0 when not labelled or when the
  window misses the heatmap.
  """
  width, height = codec.heatmap_size_wh
  in_w, in_h = codec.input_size_wh
  sigma = codec.sigma
  radius = 3.0 * sigma
  num = len(keypoints_xy)
  heatmaps = np.zeros((num, height, width), np.float32)
  weights = np.zeros(num, np.float32)
  for k in range(num):
    x, y = float(keypoints_xy[k][0]), float(keypoints_xy[k][1])
    if not visible[k] or not (np.isfinite(x) and np.isfinite(y)):
      continue
    if codec.use_udp:
      cx, cy = x * (width - 1.0) / (in_w - 1.0), y * (height - 1.0) / (in_h - 1.0)
    else:
      cx, cy = np.floor(x / (in_w / width) + 0.5), np.floor(y / (in_h / height) + 0.5)
    mx, my = np.floor(cx + 0.5), np.floor(cy + 0.5)
    if mx + radius < 0 or mx - radius > width - 1 or my + radius < 0 or my - radius > height - 1:
      continue
    weights[k] = 1.0
    x0, x1 = int(max(0, np.ceil(mx - radius))), int(min(width - 1, np.floor(mx + radius)))
    y0, y1 = int(max(0, np.ceil(my - radius))), int(min(height - 1, np.floor(my + radius)))
    xs = np.arange(x0, x1 + 1, dtype=np.float64)
    ys = np.arange(y0, y1 + 1, dtype=np.float64)[:, None]
    heatmaps[k, y0 : y1 + 1, x0 : x1 + 1] = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2.0 * sigma**2))
  return heatmaps, weights


class ReferenceTrainTransform:
  """The straightforward train transform: same augmentation draws as `transform`, full-size decode, one
  `cv2.warpAffine`, per-joint target loop. Output as `TopDownTrainTransform.random_map`.

  Everything else is done as ours does it (flip folded into the warp, colour converted on the crop), so
  b/a measures the decode size and the target loop only.
  """

  def __init__(self, transform: TopDownTrainTransform):
    self.transform = transform
    self.targets = types.SimpleNamespace(
      heatmap_size_wh=transform.heatmap_size_wh,
      input_size_wh=transform.output_size_wh,
      sigma=transform.sigma,
      use_udp=transform.use_udp,
    )

  def random_map(self, element, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Record -> train example, the straightforward way."""
    t = self.transform
    image = cv2.imdecode(np.frombuffer(element['image'], np.uint8), cv2.IMREAD_COLOR)
    keypoints = np.asarray(element[t.keypoints_key], np.float32)
    center, scale, rotation, flip = t.sample_crop(keypoints, element['bbox'], rng)
    matrix = crop_matrix(center, scale, rotation, flip, image.shape[1], t.output_size_wh, t.use_udp)
    crop = cv2.warpAffine(
      image, matrix, t.output_size_wh, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )
    warped = warp_keypoints(keypoints, matrix, t.output_size_wh, t.flip_index if flip else None)
    heatmaps, weights = gaussian_targets_loop(warped[:, :2], warped[:, 2] > 0, self.targets)
    return {
      'image': cv2.cvtColor(crop, cv2.COLOR_BGR2RGB),
      'heatmaps': np.ascontiguousarray(np.transpose(heatmaps, (1, 2, 0))),
      'target_weights': weights,
    }


# ----------------------------------------------------------------------------------------------- timing


def time_transforms(transforms: dict, records: list, iterations: int, seed: int = 0):
  """Interleaved passes over `records` ((dataset, record) pairs) with each of `transforms` ({label: {dataset: t}}).

  Returns {label: array (iterations, len(records), 2)} of (CPU seconds, wall seconds) per call; in every
  pass each label sees the same rng (so the same augmentation) per record.
  """
  times = {label: np.zeros((iterations, len(records), 2)) for label in transforms}
  for iteration in range(iterations):
    for label, transforms_by_name in transforms.items():
      for index, (name, record) in enumerate(records):
        rng = np.random.default_rng([seed, iteration, index])
        cpu, wall = time.process_time(), time.perf_counter()
        transforms_by_name[name].random_map(record, rng)
        times[label][iteration, index] = time.process_time() - cpu, time.perf_counter() - wall
  return times


def decode_reductions(transforms: dict, records: list, iterations: int, seed: int = 0) -> np.ndarray:
  """(iterations, len(records)) decode size reduction (1, 2, 4, 8) that ours used in `time_transforms`."""
  out = np.ones((iterations, len(records)), np.int64)
  for iteration in range(iterations):
    for index, (name, record) in enumerate(records):
      t = transforms[name]
      rng = np.random.default_rng([seed, iteration, index])
      center, scale, rotation, flip = t.sample_crop(
        np.asarray(record[t.keypoints_key], np.float32), record['bbox'], rng
      )
      out[iteration, index] = decode_reduction(
        crop_matrix(center, scale, rotation, flip, 0, t.output_size_wh, t.use_udp)
      )
  return out


def time_decodes(records: list, reductions: np.ndarray, fast: bool) -> dict[str, np.ndarray]:
  """CPU seconds per call, (iterations, len(records)), of our JPEG decode alone: at the size ours used in each
  pass ('used'), at full size ('full') and at 1/8 size ('eighth'). What stays at 1/8 is the entropy (Huffman)
  decoding of the whole file, which no output size avoids."""
  out = {key: np.zeros(reductions.shape) for key in ('used', 'full', 'eighth')}
  for iteration in range(reductions.shape[0]):
    for index, (_, record) in enumerate(records):
      for key, reduction in (('used', reductions[iteration, index]), ('full', 1), ('eighth', 8)):
        cpu = time.process_time()
        decode_jpeg(record['image'], int(reduction), fast)
        out[key][iteration, index] = time.process_time() - cpu
  return out


def summarize(times: dict, mask: np.ndarray) -> dict[str, float]:
  """img/s (by CPU and by wall time) of 'reference' and 'ours' over the records in `mask`, and b/a: the
  median over passes of the pass's reference time / ours time (paired passes share their augmentations,
  and the median discounts passes disturbed by other load)."""
  out = {}
  for label in ('reference', 'ours'):
    selected = times[label][:, mask]
    images = selected.shape[0] * selected.shape[1]
    out[label] = (images / selected[..., 0].sum(), images / selected[..., 1].sum())
  per_pass = {label: times[label][:, mask].sum(axis=1) for label in ('reference', 'ours')}
  ratios = per_pass['reference'] / np.maximum(per_pass['ours'], 1e-12)
  out['ratio'] = (float(np.median(ratios[:, 0])), float(np.median(ratios[:, 1])))
  return out


class Tiled:
  """Random-access view of `source` repeated `copies` times (record i is source[i % len(source)])."""

  def __init__(self, source, copies: int):
    self.source, self.copies = source, int(copies)

  def __len__(self) -> int:
    return len(self.source) * self.copies

  def __getitem__(self, index: int):
    return self.source[int(index) % len(self.source)]


@contextlib.contextmanager
def tiled_sources(min_length: int):
  """Makes `pipeline.open_source` return sources tiled to at least `min_length` records.

  grain's index shuffle costs far more per element on a dataset of a few records than on a real one
  (docs/MEASUREMENTS.md), which would swamp the transform on the tiny samples; tiled, they shuffle at the cost
  of a real dataset.
  """
  from benchmarks import input_pipeline  # worker processes unpickle `Tiled` by this name, not __main__

  original = pipeline.open_source

  def open_tiled(*args, **kwargs):
    source = original(*args, **kwargs)
    return input_pipeline.Tiled(source, max(1, -(-min_length // max(len(source), 1))))

  pipeline.open_source = open_tiled
  try:
    yield
  finally:
    pipeline.open_source = original


def time_pipeline(cfg, workers: int, batch_size: int, steps: int, warmup: int) -> dict[str, float]:
  """Wall img/s of `make_train_dataset` with `workers` mp_prefetch workers, and CPU seconds per image of
  this process and its worker processes together."""
  import psutil

  cfg = cfg.copy_and_resolve_references()
  cfg.num_workers = workers
  iterator = iter(pipeline.make_train_dataset(cfg, batch_size, num_groups=1, seed=0))
  try:
    for _ in range(warmup):  # worker start-up and their first batches
      next(iterator)
    processes = [psutil.Process()] + psutil.Process().children(recursive=True)

    def cpu_seconds():
      total = 0.0
      for process in processes:
        try:
          times = process.cpu_times()
          total += times.user + times.system
        except psutil.Error:
          pass
      return total

    cpu, wall = cpu_seconds(), time.perf_counter()
    for _ in range(steps):
      next(iterator)
    wall = time.perf_counter() - wall
    cpu = cpu_seconds() - cpu
  finally:
    close = getattr(iterator, 'close', None)
    if close is not None:
      close()
  images = steps * batch_size
  return {'img_s': images / wall, 'cpu_s_per_img': cpu / images, 'cores_busy': cpu / wall}


# ----------------------------------------------------------------------------------------------- 3D


def synthetic3d_records(count: int, format_name: str = 'syn_h36m') -> list[dict]:
  """`count` records of `posebh_synthetic3d`'s train split of `format_name` (256 x 256 JPEGs, the builder's own
  rendering), each with 'keypoints' (J, 3): the joints projected with the record's intrinsics, visibility 2 where
  they land inside the image (so the 2D transform can crop the same records)."""
  from data_pipeline.builders import synthetic3d  # pylint: disable=g-import-not-at-top
  from posebh_jax.geometry import project_in_image  # pylint: disable=g-import-not-at-top

  params = synthetic3d.Synthetic3DParams().to_metadata()
  records = []
  for index in range(count):
    _, rendered = synthetic3d.render_example((index, index, 'train', params))
    record = synthetic3d.format_record(rendered, format_name)
    uv, inside = project_in_image(
      record['joints3d'].astype(np.float64), record['intrinsics'], int(record['height']), int(record['width'])
    )
    visible = inside & record['valid']
    record['keypoints'] = np.concatenate([uv, 2.0 * visible[:, None]], axis=1).astype(np.float32)
    records.append(record)
  return records


def time_3d(cfg, count: int, iterations: int) -> None:
  """Prints (d): img/s per worker process of the 2D and the 3D train transforms on the same synthetic 3D records
  (see the module docstring)."""
  start = time.perf_counter()
  records = [('syn_h36m', record) for record in synthetic3d_records(count)]
  rendered_s = time.perf_counter() - start
  size = tuple(cfg.image_size)
  transforms = {
    '2D TopDownTrainTransform': TopDownTrainTransform(
      format_name='coco',
      codec_name='udp',
      image_size_hw=size,
      heatmap_size_hw=tuple(cfg.heatmap_size),
      sigma=cfg.sigma,
      bbox_padding=cfg.bbox_padding,
      aug=cfg.aug,
      half_body=True,
      fast_decode=cfg.fast_jpeg_decode,
    ),
    '3D Pose3DTrainTransform': transforms3d.Pose3DTrainTransform(
      'syn_h36m', size, cfg.bbox_padding, transforms3d.DEFAULT_AUG, fast_decode=cfg.fast_jpeg_decode
    ),
    '3D, no occlusion/colour': transforms3d.Pose3DTrainTransform(
      'syn_h36m',
      size,
      cfg.bbox_padding,
      dict(transforms3d.DEFAULT_AUG, occlusion_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0),
      fast_decode=cfg.fast_jpeg_decode,
    ),
  }
  times = time_transforms({label: {'syn_h36m': t} for label, t in transforms.items()}, records, iterations)
  print(
    f'\n(d) 2D and 3D train transforms on the same {count} synthetic 3D images (256x256 JPEG q90, rendered in '
    f'{rendered_s:.1f} s), output {size[0]}x{size[1]}, 2D: config.data.aug, 3D: transforms3d.DEFAULT_AUG; '
    f'{iterations} passes; per worker process (1 OpenCV thread):'
  )
  print(f'{"transform":<26} {"img/s by CPU":>13} {"[by wall]":>10} {"CPU ms/img":>11}')
  for label, values in times.items():
    images = values.shape[0] * values.shape[1]
    cpu, wall = values[..., 0].sum(), values[..., 1].sum()
    print(f'{label:<26} {images / cpu:>13.1f} [{images / wall:>8.1f}] {1e3 * cpu / images:>11.2f}')


# ----------------------------------------------------------------------------------------------- main


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--iterations', type=int, default=20, help='passes over the records per transform')
  parser.add_argument(
    '--workers',
    default='',
    help='comma-separated mp_prefetch worker counts; default 1..os.cpu_count(); 0 skips the pipeline part',
  )
  parser.add_argument('--batch_size', type=int, default=32, help='global batch (split over the datasets)')
  parser.add_argument('--steps', type=int, default=30, help='timed pipeline batches per worker count')
  parser.add_argument('--warmup', type=int, default=3, help='untimed pipeline batches per worker count')
  parser.add_argument(
    '--prefetch_buffer_size',
    type=int,
    default=1,
    help='data.prefetch_buffer_size (also the reader threads per worker; 1: one thread)',
  )
  parser.add_argument('--datasets', default=','.join(DATASETS))
  parser.add_argument('--max_records', type=int, default=200, help='records per dataset for (a) and (b)')
  parser.add_argument('--data_dir', default='', help='prepared tfds data_dir; default: prepare the samples')
  parser.add_argument('--realdata', default=default_realdata())
  parser.add_argument(
    '--records3d', type=int, default=200, help='synthetic 3D records for (d), 2D and 3D transforms; 0 skips it'
  )
  args = parser.parse_args()
  cv2.setNumThreads(1)
  os.environ['OPENCV_FOR_THREADS_NUM'] = '1'  # the same in the (spawned) worker processes
  names = tuple(n for n in args.datasets.split(',') if n)

  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir
    if not data_dir:
      if not os.path.isdir(args.realdata):
        parser.error(
          f'real-data samples not found at {args.realdata}; set POSEBH_REALDATA (or pass --realdata or --data_dir)'
        )
      data_dir = tmp
      prepare_samples(data_dir, args.realdata, names)
    cfg = common.data_config('real', names)
    cfg.data_dir = data_dir
    cfg.prefetch_buffer_size = args.prefetch_buffer_size
    ours = {n: pipeline.train_transform(cfg, n) for n in names}
    reference = {n: ReferenceTrainTransform(t) for n, t in ours.items()}
    records = []
    for name in names:
      source = pipeline.open_source(cfg.datasets[name].tfds_name, cfg.datasets[name].train_split, data_dir)
      records.extend((name, source[i]) for i in range(min(len(source), args.max_records)))
    cores = os.cpu_count() or 1
    try:
      load = ' / '.join(f'{v:.1f}' for v in os.getloadavg())
    except OSError:
      load = '?'
    print(f'device: CPU, {cores} cores (load average 1/5/15 min: {load}; other processes share the cores)')
    per_dataset = ', '.join(f'{n} {sum(r[0] == n for r in records)}' for n in names)
    print(
      f'records: {len(records)} instances ({per_dataset}), output 256x192, heatmaps 64x48, '
      f'config.data.aug defaults; {args.iterations} passes each'
    )

    times = time_transforms({'reference': reference, 'ours': ours}, records, args.iterations)
    print('\nper worker process (1 OpenCV thread), img/s by CPU time [by wall time]; b/a: median over passes:')
    print(f'{"dataset":<10} {"(a) reference":>22} {"(b) ours":>22} {"b/a":>12}')
    labels = np.array([name for name, _ in records])
    for name in names + ('all',):
      row = summarize(times, labels == name if name != 'all' else np.ones(len(records), bool))
      (ref_cpu, ref_wall), (our_cpu, our_wall) = row['reference'], row['ours']
      print(
        f'{name:<10} {ref_cpu:>10.1f} [{ref_wall:>8.1f}] {our_cpu:>10.1f} [{our_wall:>8.1f}] '
        f'{row["ratio"][0]:>5.2f} [{row["ratio"][1]:.2f}]'
      )
    print(f'ratio b/a (ours / reference, per core): {row["ratio"][0]:.2f} (by wall time {row["ratio"][1]:.2f})')
    reductions = decode_reductions(ours, records, args.iterations)
    print('\nby the decode size ours used (calls; img/s by CPU time; b/a: reference time / ours time):')
    for reduction in (1, 2, 4, 8):
      mask = reductions == reduction
      if mask.any():
        ref_s, our_s = times['reference'][mask][:, 0].sum(), times['ours'][mask][:, 0].sum()
        print(
          f'  1/{reduction}: {int(mask.sum()):>5} calls  reference {mask.sum() / ref_s:>7.1f}  '
          f'ours {mask.sum() / our_s:>7.1f}  b/a {ref_s / our_s:.2f}'
        )
    decodes = time_decodes(records, reductions, bool(cfg.fast_jpeg_decode))
    print(
      '\nthe JPEG decode alone (ours, CPU ms/img): at the size used, at full size, at 1/8 size; ceiling on b/a '
      'if everything but that decode were free (reference time / decode time):'
    )
    for name in names + ('all',):
      mask = labels == name if name != 'all' else np.ones(len(records), bool)
      used, full, eighth = (1e3 * decodes[key][:, mask].mean() for key in ('used', 'full', 'eighth'))
      ceiling = times['reference'][:, mask, 0].sum() / decodes['used'][:, mask].sum()
      print(
        f'  {name:<8} used {used:6.2f}  full {full:6.2f}  1/8 {eighth:6.2f} ({eighth / full:.0%} of full)  '
        f'ceiling {ceiling:.2f}'
      )

    counts = [int(w) for w in args.workers.split(',') if w] if args.workers else list(range(1, cores + 1))
    counts = [w for w in counts if w > 0]
    if counts:
      print(
        f'\n(c) make_train_dataset -> mp_prefetch, batch {args.batch_size} over {len(names)} datasets, '
        f'{args.steps} timed batches after {args.warmup}; prefetch_buffer_size {args.prefetch_buffer_size}; '
        f'sources tiled to 100k records (see tiled_sources); CPU ms/img: main + workers:'
      )
      print(
        f'{"workers":>7} {"img/s":>9} {"per worker":>11} {"scaling":>8} {"efficiency":>11} '
        f'{"CPU ms/img":>11} {"cores busy":>11}'
      )
      base = None
      with tiled_sources(100_000):
        for workers in counts:
          result = time_pipeline(cfg, workers, args.batch_size, args.steps, args.warmup)
          base = base or result['img_s'] / workers
          scaling = result['img_s'] / base
          print(
            f'{workers:>7} {result["img_s"]:>9.1f} {result["img_s"] / workers:>11.1f} '
            f'{scaling:>7.2f}x {scaling / workers:>10.0%} {1e3 * result["cpu_s_per_img"]:>11.2f} '
            f'{result["cores_busy"]:>11.2f}'
          )

    if args.records3d > 0:
      time_3d(cfg, args.records3d, args.iterations)


if __name__ == '__main__':
  main()
