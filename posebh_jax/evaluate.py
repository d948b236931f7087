"""Offline evaluation: the command

  python -m posebh_jax.evaluate --dataset=<name> --gt=<gt.json> --results=<results.json> [--topdown]

which prints one JSON object of summary metrics, and the results table that `--mode=eval` prints. The in-training
evaluator is `posebh_jax.evaluator`.

The ground truth's layout picks the kind of evaluation: a COCO-format file goes to the dataset's 2D evaluator
(`evaluation.get_evaluator`); a 3D one (`{"joints", "root", "annotations": [{"image_id", "keypoints_3d", "valid"}]}`,
see `evaluation.pose3d`) to the 3D evaluator of `--dataset` (`evaluation.get_evaluator3d`: the H36M, 3DHP or 3DPW
protocol, or every joint of the file for any other name, such as a 3D format's), which prints {"MPJPE",
"PA-MPJPE", "PCK150", "AUC", "MPJPE-abs"} in mm and %.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from posebh_jax import evaluation
from posebh_jax.errors import UserError
from posebh_jax.evaluation.registry import NMS_CHOICES, dataset_nms
from posebh_jax.tasks.distill import distill_summary


# docs/METHOD.md's results table: (column title, dataset name, metric).
METHOD_TABLE_COLUMNS = (
  ('COCO AP', 'coco', 'AP'),
  ('test-dev', 'coco_test_dev', 'AP'),
  ('OCHuman', 'ochuman', 'AP'),
  ('MPII PCKh', 'mpii', 'PCKh'),
  ('AIC AP', 'aic', 'AP'),
  ('AP-10K', 'ap10k', 'AP'),
  ('APT-36K', 'apt36k', 'AP'),
  ('WholeBody', 'coco_wholebody', 'AP'),
)
_HEADLINE = ('MPJPE', 'PCKh', 'AUC', 'AP')  # the official metric first (MPII, InterHand also report OKS AP)
_DETAILS = (  # (metric that identifies the family, details shown after the headline)
  ('MPJPE', ('PA-MPJPE', 'PCK150', 'AUC', 'MPJPE-abs')),  # 3D: mm and % as they are
  ('PCKh', ('PCKh@0.1', 'AP')),
  ('AUC', ('PCK', 'EPE', 'AP')),
  ('AP (E)', ('AP .5', 'AP .75', 'AR', 'AP (E)', 'AP (M)', 'AP (H)')),
  ('body AP', ('body AP', 'foot AP', 'face AP', 'lefthand AP', 'righthand AP', 'AR')),
  ('AP', ('AP .5', 'AP .75', 'AP (M)', 'AP (L)', 'AR')),
)


def _shown(metric: str, value, as_is: bool = False) -> str:
  """A metric as the results table prints it: percentages with one decimal (PCKh already is one), EPE in px;
  `as_is` (3D rows: mm and values already in %) with one decimal unscaled."""
  if value is None or not np.isfinite(value) or value < 0:
    return '-'
  if metric == 'EPE':
    return f'{value:.2f}'
  return f'{value:.1f}' if as_is or 'PCKh' in metric else f'{100 * value:.1f}'


def format_table(results: dict[str, float], model: str = 'this run', unified: bool = False) -> str:
  """The evaluation results as text: one row per dataset (headline metric -- MPJPE, AP, PCKh or AUC -- then the
  dataset's other summary metrics), followed by one row in the layout of docs/METHOD.md's results table when the
  results include one of its datasets.

  Args:
    results: `{'eval/<dataset>/<metric>': value}` as `Evaluator.run` returns (AP-style values in [0, 1],
      PCKh in %; 3D rows, those with an MPJPE: mm, and PCK150 / AUC in %); other keys are ignored.
    model: the row label of the docs/METHOD.md-style row.
    unified: a unified-skeleton student (distillation, docs/METHOD.md §4): the row is §4's (COCO AP, MPII PCKh,
      their mean "average accuracy", Halpe AP), not the multi-dataset table's.
  Returns: the table as a multi-line string (percentages with one decimal; '-' for a missing value).
  """
  rows: dict[str, dict[str, float]] = {}
  for key, value in results.items():
    parts = key.split('/', 2)
    if len(parts) == 3 and parts[0] == 'eval':
      rows.setdefault(parts[1], {})[parts[2]] = value
  lines = ['dataset'.ljust(16) + 'metric'.ljust(8) + 'value'.rjust(7) + '   others']
  for name, metrics in rows.items():
    headline = next((m for m in _HEADLINE if m in metrics), next(iter(metrics)))
    details = next((d for marker, d in _DETAILS if marker in metrics), ())
    as_is = 'MPJPE' in metrics
    others = '  '.join(f'{m} {_shown(m, metrics[m], as_is)}' for m in details if m in metrics and m != headline)
    shown = _shown(headline, metrics[headline], as_is)
    lines.append(name.ljust(16) + headline.ljust(8) + shown.rjust(7) + '   ' + others)
  if unified:
    summary = distill_summary(results)
    titles = ['COCO AP', 'MPII PCKh', 'average accuracy', 'Halpe AP']
    values = [f'{summary[t]:.1f}' if t in summary else '-' for t in titles]
    return '\n'.join(lines + _markdown_row(titles, values, model))
  if not any(name in rows for _, name, _ in METHOD_TABLE_COLUMNS):
    return '\n'.join(lines)  # no dataset of the 2D results table (e.g. a 3D run): its row would be all '-'
  titles = [title for title, _, _ in METHOD_TABLE_COLUMNS]
  values = [_shown(metric, rows.get(name, {}).get(metric)) for _, name, metric in METHOD_TABLE_COLUMNS]
  return '\n'.join(lines + _markdown_row(titles, values, model))


def _markdown_row(titles, values, model: str) -> list[str]:
  """A blank line, then a one-row Markdown table: header `titles`, the row `model` | `values`."""
  return [
    '',
    '| model | ' + ' | '.join(titles) + ' |',
    '|---' * (len(titles) + 1) + '|',
    f'| {model} | ' + ' | '.join(values) + ' |',
  ]


def main(argv=None) -> int:
  """Offline evaluation of a COCO-format (or 3D) result file with the dataset's official protocol; prints one JSON
  object of the summary metrics. Returns the exit status (2 with a one-line message for a user error)."""
  parser = argparse.ArgumentParser(prog='python -m posebh_jax.evaluate', description=__doc__.split('\n\n')[0])
  parser.add_argument(
    '--dataset',
    required=True,
    help=f'dataset name, one of: {", ".join(evaluation.list_evaluators())}; with a 3D ground truth also any '
    '3D format name (scores every joint of the file)',
  )
  parser.add_argument('--gt', required=True, help='COCO-format or 3D ground truth json')
  parser.add_argument('--results', required=True, help='COCO-format or 3D results json')
  parser.add_argument(
    '--topdown',
    action='store_true',
    help='results are raw top-down instances (keypoints with per-keypoint scores, bbox_score, '
    'area or bbox): apply rescoring and OKS-NMS first',
  )
  parser.add_argument(
    '--nms',
    default=None,
    choices=NMS_CHOICES,
    help='NMS of --topdown: OKS-NMS 0.9, soft-OKS-NMS or none; default as training-time '
    'evaluation with config.eval_nms=oks: oks for OKS-AP datasets, none for PCKh / PCK ones',
  )
  args = parser.parse_args(argv)
  try:
    gt = evaluation.load_json(args.gt, 'ground truth')
    if evaluation.is_3d_ground_truth(gt):
      if args.topdown or args.nms is not None:
        raise UserError(f'{args.gt} is a 3D ground truth; --topdown and --nms apply to 2D results only')
      metrics = evaluation.get_evaluator3d(args.dataset).evaluate(gt, evaluation.load_json(args.results, 'results'))
      print(json.dumps({name: float(value) for name, value in metrics.items()}))
      return 0
    evaluator = evaluation.get_evaluator(args.dataset)
    results = evaluation.load_json(args.results, 'results')
    if args.topdown:
      nms = dataset_nms(args.dataset) if args.nms is None else (None if args.nms == 'none' else args.nms)
      results = evaluation.topdown_postprocess(results, args.dataset, nms=nms)
    metrics = evaluator.evaluate(gt, results)
  except (ValueError, FileNotFoundError) as e:
    print('error: ' + ' '.join(str(e).split()), file=sys.stderr)
    return 2
  except (KeyError, TypeError, IndexError, AttributeError) as e:
    print(
      f'error: {args.gt} / {args.results} are not COCO-format (or 3D) keypoint files for {args.dataset} '
      f'({type(e).__name__}: {e}); check their layout',
      file=sys.stderr,
    )
    return 2
  print(json.dumps({name: float(value) for name, value in metrics.items()}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
