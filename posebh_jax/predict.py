"""Top-down keypoints of the people in a set of images, written as COCO-format results and pictures.

  python -m posebh_jax.predict --workdir=<run, checkpoint or converted dir> --images=<files, folders or globs>
      --out=<dir> [--boxes=<COCO detections json>] [--formats=coco,coco_wholebody,...] [--batch_size=16]
      [--score_threshold=0.3] [--box_score_threshold=0] [--flip | --no-flip] [--dtype=float32|bfloat16]

Writes, for each requested skeleton format (default: every dataset's format; a format several datasets predict is
served by the first in the run's data.order):
  <out>/<format>_results.json   COCO keypoint results [{image_id, category_id, keypoints (K*3: x, y, score),
                                score}], after the evaluation's rescoring (box score x mean keypoint score > 0.2) and
                                per-image NMS (`config.eval_nms`; none for PCKh / PCK formats), so that
                                `python -m posebh_jax.evaluate --dataset=<format> --gt=... --results=...` scores them;
  <out>/<image stem>.png        the image with each format's skeletons in its own colour and a legend (people whose
                                result score and keypoints whose score reach --score_threshold);
  <out>/summary.json            images, people, unreadable files, the image ids used, formats, timing.

Boxes: `--boxes` is a COCO detection results file ([{image_id, bbox xywh, score, category_id}], boxes of every
category are used) or a COCO annotation file (its annotations' boxes, score 1); an image with no entry there has
no people. Without `--boxes` the whole image is the box. Image ids: the numeric file stem (COCO's
`000000000785.jpg` → 785); otherwise the id of the boxes file's `images` entry with that file name; otherwise the
1-based position of the file in the sorted list of images. Files that cannot be read or decoded are counted and
listed (summary line and summary.json), and the run goes on.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import cv2
import numpy as np

from data_pipeline.transforms import decode_jpeg
from posebh_jax import evaluation
from posebh_jax import inference
from posebh_jax import skeletons
from posebh_jax.errors import UserError
from posebh_jax.evaluation.registry import dataset_nms
from posebh_jax.viz import common as viz_common

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def list_images(spec: str) -> list[str]:
  """Image paths of `spec`: comma-separated files, folders (their image files, not recursive) or glob patterns,
  each part sorted, duplicates dropped. Raises UserError for a part that names nothing."""
  paths: list[str] = []
  for part in filter(None, (p.strip() for p in spec.split(','))):
    part = os.path.expanduser(part)
    if os.path.isdir(part):
      found = sorted(
        os.path.join(part, f)
        for f in os.listdir(part)
        if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(part, f))
      )
    elif glob.has_magic(part):
      found = sorted(p for p in glob.glob(part) if os.path.isfile(p))
    elif os.path.isfile(part):
      found = [part]
    else:
      raise UserError(f'--images: {part} is not a file, a folder or a glob pattern that matches files')
    if not found:
      raise UserError(f'--images: {part} holds no image files ({", ".join(IMAGE_EXTENSIONS)})')
    paths.extend(os.path.abspath(p) for p in found)
  if not paths:
    raise UserError('--images names no files; pass image files, folders or glob patterns (comma-separated)')
  return list(dict.fromkeys(paths))


def read_boxes(path: str) -> tuple[dict[int, list[tuple]], dict[str, int]]:
  """The boxes of a COCO detection results file or annotation file: ({image_id: [(x, y, w, h, score,
  category_id)]}, {file name: image_id} from its `images` list, empty for a detections list)."""
  try:
    data = evaluation.load_json(path, '--boxes')
  except (FileNotFoundError, ValueError) as e:
    raise UserError(' '.join(str(e).split())) from None
  entries, names = data, {}
  if isinstance(data, dict):
    entries = data.get('annotations')
    names = {os.path.basename(str(im.get('file_name', ''))): int(im['id']) for im in data.get('images', [])}
  if not isinstance(entries, list):
    raise UserError(f'--boxes={path}: expected a COCO detection list or a COCO annotation file with annotations')
  boxes: dict[int, list[tuple]] = {}
  for i, entry in enumerate(entries):
    try:
      x, y, w, h = (float(v) for v in entry['bbox'])
      item = (x, y, w, h, float(entry.get('score', 1.0)), int(entry.get('category_id', 1)))
      boxes.setdefault(int(entry['image_id']), []).append(item)
    except (KeyError, TypeError, ValueError):
      raise UserError(f'--boxes={path}: entry {i} lacks image_id or a bbox [x, y, w, h]') from None
  return boxes, names


def image_ids(paths: list[str], names: dict[str, int]) -> list[int]:
  """The COCO image id of each path: its numeric file stem; else `names`[file name]; else its 1-based position."""
  out = []
  for position, path in enumerate(paths, 1):
    stem = os.path.splitext(os.path.basename(path))[0]
    out.append(int(stem) if stem.isdigit() else names.get(os.path.basename(path), position))
  return out


def read_image(path: str) -> np.ndarray | None:
  """uint8 (H, W, 3) RGB of the image file at `path` (decoded as the evaluation decodes), or None when it cannot be
  read or decoded."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
    return decode_jpeg(data)
  except (OSError, ValueError):
    return None


def draw(image: np.ndarray, people: dict[str, list[dict]], formats: list[str], threshold: float, boxes) -> np.ndarray:
  """The picture of one image: its boxes ((n, 5) xywh, score) with score >= `threshold` in thin grey, each format's
  kept people (result score >= `threshold`) as skeletons in the format's colour (keypoints with score >=
  `threshold`), and a legend with each format's colour and count. `people`: {format: that image's result dicts}.
  Returns RGB uint8 (H, W, 3)."""
  canvas = np.ascontiguousarray(image).copy()
  size = min(canvas.shape[:2])
  thickness = max(2, int(round(size / 250)))
  radius = thickness + 1
  for x, y, w, h, score in np.asarray(boxes, np.float64).reshape(-1, 5):
    if score < threshold:
      continue
    cv2.rectangle(canvas, (int(x), int(y)), (int(x + w), int(y + h)), (200, 200, 200), 1, cv2.LINE_AA)
  counts = {}
  for index, fmt in enumerate(formats):
    colour = viz_common.colour(index)
    links = skeletons.get_format(fmt).links
    shown_people = [p for p in people.get(fmt, []) if p['score'] >= threshold]
    counts[fmt] = len(shown_people)
    for person in shown_people:
      keypoints = np.asarray(person['keypoints'], np.float64).reshape(-1, 3)
      shown = keypoints[:, 2] >= threshold
      point = lambda k: (int(round(keypoints[k, 0])), int(round(keypoints[k, 1])))
      for a, b in links:
        if shown[a] and shown[b]:
          cv2.line(canvas, point(a), point(b), colour, thickness, cv2.LINE_AA)
      for k in np.flatnonzero(shown):
        cv2.circle(canvas, point(k), radius, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, point(k), radius, (0, 0, 0), 1, cv2.LINE_AA)
  scale = max(0.4, size / 900)
  (_, text_h), _ = cv2.getTextSize('Ag', viz_common.FONT, scale, 1)
  y = 4
  for index, fmt in enumerate(formats):
    viz_common.label(canvas, f'{fmt}: {counts[fmt]}', (4 + text_h + 8, y), scale)
    cv2.rectangle(canvas, (4, y), (4 + text_h + 4, y + text_h + 6), viz_common.colour(index), -1)
    y += text_h + 12
  return canvas


class ProgressLine:
  """A one-line progress bar on stderr, redrawn in place: done/total images, people and img/s."""

  def __init__(self, total: int, width: int = 30):
    self.total, self.width, self.start = total, width, time.perf_counter()
    self.stream = sys.stderr

  def update(self, done: int, people: int) -> None:
    seconds = max(time.perf_counter() - self.start, 1e-9)
    filled = int(self.width * done / max(self.total, 1))
    bar = '#' * filled + '.' * (self.width - filled)
    self.stream.write(f'\r[{bar}] {done}/{self.total} images, {people} people, {done / seconds:.1f} img/s')
    self.stream.flush()

  def close(self) -> None:
    self.stream.write('\n')
    self.stream.flush()


def _png_names(paths: list[str]) -> list[str]:
  """`<stem>.png` per path, `<stem>_<n>.png` for a stem seen before."""
  seen: dict[str, int] = {}
  out = []
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0]
    seen[stem] = seen.get(stem, 0) + 1
    out.append(f'{stem}.png' if seen[stem] == 1 else f'{stem}_{seen[stem]}.png')
  return out


def run(args) -> dict:
  """Predicts every image of `args` (the parsed command line) and writes the outputs; returns the summary."""
  if args.batch_size < 1:
    raise UserError(f'--batch_size must be at least 1 (got {args.batch_size})')
  inference.run_directory(args.workdir)  # a wrong --workdir first, before the images are listed
  paths = list_images(args.images)
  boxes_by_id, names = read_boxes(args.boxes) if args.boxes else ({}, {})
  ids = image_ids(paths, names)
  predictor = inference.Predictor.load(args.workdir, dtype=args.dtype)
  targets = predictor.resolve_formats(args.formats)
  formats = list(targets)
  try:
    os.makedirs(args.out, exist_ok=True)
  except OSError as e:
    raise UserError(f'cannot create --out={args.out}: {e.strerror}; pass a directory you can write to') from None
  pngs = _png_names(paths)
  unreadable: list[str] = []
  results: dict[str, list[dict]] = {fmt: [] for fmt in formats}
  progress = ProgressLine(len(paths))
  people_total = 0
  # Images are decoded one at a time as the prediction stream asks for them; the stream holds back an image's
  # result until all its crops went through the model, and drawing needs the image again.
  held: dict[int, tuple[np.ndarray, np.ndarray, list[int]]] = {}

  def items():
    for index, path in enumerate(paths):
      image = read_image(path)
      if image is None:
        unreadable.append(path)
        continue
      if args.boxes:
        rows = boxes_by_id.get(ids[index], [])
        boxes = np.asarray([r[:5] for r in rows], np.float64).reshape(-1, 5)
        categories = [r[5] for r in rows]
      else:
        boxes, categories = np.asarray([[0.0, 0.0, image.shape[1], image.shape[0], 1.0]]), [1]
      if args.box_score_threshold > 0:
        keep = boxes[:, 4] >= args.box_score_threshold
        boxes, categories = boxes[keep], [c for c, k in zip(categories, keep) if k]
      held[index] = (image, boxes, categories)
      yield index, image, boxes

  done = 0
  progress.update(0, 0)
  for index, predicted in predictor.predict_many(items(), formats, args.batch_size, args.flip):
    image, boxes, categories = held.pop(index)
    _, scales = predictor.crop_geometry(boxes)
    areas = np.prod(scales.astype(np.float64), axis=-1)  # the padded box, as the evaluation's area
    per_image = {}
    for fmt in formats:
      xy, scores = predicted[fmt]['keypoints'], predicted[fmt]['scores']
      instances = [
        {
          'image_id': ids[index],
          'category_id': categories[i],
          'keypoints': [round(float(v), 3) for v in np.concatenate([xy[i], scores[i][:, None]], -1).reshape(-1)],
          'bbox_score': float(boxes[i, 4]),
          'area': float(areas[i]),
        }
        for i in range(len(boxes))
      ]
      nms = dataset_nms(fmt, predictor.config.eval_nms)
      per_image[fmt] = evaluation.topdown_postprocess(instances, fmt, nms=nms)
      results[fmt].extend(per_image[fmt])
    viz_common.write_png(
      os.path.join(args.out, pngs[index]), draw(image, per_image, formats, args.score_threshold, boxes)
    )
    people_total += len(boxes)
    done += 1
    progress.update(done + len(unreadable), people_total)
  progress.update(len(paths), people_total)
  progress.close()
  seconds = time.perf_counter() - progress.start
  written = {}
  for fmt in formats:
    written[fmt] = os.path.join(args.out, f'{fmt}_results.json')
    with open(written[fmt], 'w') as f:
      json.dump(results[fmt], f)
  summary = {
    'images': len(paths),
    'predicted': done,
    'people': people_total,
    'unreadable': unreadable,
    'seconds': round(seconds, 3),
    'images_per_second': round(done / max(seconds, 1e-9), 3),
    'formats': targets,
    'results': written,
    'image_ids': {path: image_id for path, image_id in zip(paths, ids)},
    'flip': bool(predictor.config.eval_flip if args.flip is None else args.flip),
    'step': predictor.step,
  }
  with open(os.path.join(args.out, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  return summary


def main(argv=None) -> int:
  """The command; returns the exit status (2 with a one-line `error: ...` for a user error)."""
  parser = argparse.ArgumentParser(prog='python -m posebh_jax.predict', description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='a run, checkpoints/<step>, or a converted/exported dir')
  parser.add_argument('--images', required=True, help='image files, folders or glob patterns, comma-separated')
  parser.add_argument('--out', required=True, help='output directory (results json, PNGs, summary.json)')
  parser.add_argument('--boxes', default='', help='COCO detection results (or annotation) json; default whole images')
  parser.add_argument('--formats', default=None, help="skeleton formats, comma-separated; default every dataset's")
  parser.add_argument('--batch_size', type=int, default=inference.DEFAULT_BATCH_SIZE, help='crops per model call')
  parser.add_argument(
    '--score_threshold', type=float, default=0.3, help='drawn: people with result score and keypoints with score >= it'
  )
  parser.add_argument('--box_score_threshold', type=float, default=0.0, help='skip boxes whose score is below it')
  parser.add_argument(
    '--flip', default=None, action=argparse.BooleanOptionalAction, help='flip test (default: the run config)'
  )
  parser.add_argument('--dtype', default=None, choices=('float32', 'bfloat16'), help='compute dtype override')
  args = parser.parse_args(argv)
  try:
    summary = run(args)
  except UserError as e:
    print('error: ' + ' '.join(str(e).split()), file=sys.stderr)
    return 2
  unreadable = summary['unreadable']
  print(
    f"predicted {summary['predicted']} of {summary['images']} images ({summary['people']} people, "
    f"{len(unreadable)} unreadable) in {summary['seconds']:.1f} s, {summary['images_per_second']:.2f} img/s; "
    f"results: {', '.join(summary['results'].values())}"
  )
  if unreadable:
    print(f"unreadable ({len(unreadable)}): {', '.join(unreadable)}")
  return 0


if __name__ == '__main__':
  sys.exit(main())
