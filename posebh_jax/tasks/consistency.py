"""The consistency variant of a run's shared MeTRAbs head (`config.consistency`, docs/METHOD.md §3):

- 'none': the separate-joints head `head_metrabs` (J joints, every format's own channels);
- 'regularize' (a): the same head, plus weight · mean |P − decoderᵀ encoderᵀ P| / 1000 on its 3D output (× weight_2d
  on 2D examples);
- 'latent' (b): a head `head_metrabs_latent` predicting the ACAE's L latent points (2D and 3D), and the frozen
  decoder giving every joint; training and inference through it;
- 'hybrid' (c): both heads; the full head trains as usual, the latent head's decoded output is distilled from it
  (stop-gradient teacher), and inference uses the latent head.

The ACAE comes from `python -m posebh_jax.acae --workdir=<a trained 3D run>`, which writes
`<workdir>/acae/weights.npz` (`encoder` (J, L), `decoder` (L, J) column-normalised, `joint_names` (J,)); the run names
it in `config.consistency.acae` (that workdir, its acae directory or the file) and its joints must be the head's.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from posebh_jax.errors import UserError
from posebh_jax.losses import consistency as consistency_losses
from posebh_jax.models.metrabs_head import MetrabsHeadSpec
from posebh_jax.models.multi_head import MultiHeadSpec

VARIANTS = ('none', 'regularize', 'latent', 'hybrid')
FULL_HEAD = 'metrabs'
LATENT_HEAD = 'metrabs_latent'
ACAE_FILE = 'weights.npz'


def acae_file(path: str) -> str:
  """The ACAE weights file of `path`: a run's workdir (its acae/weights.npz), an acae directory, or the file."""
  for candidate in (os.path.join(path, 'acae', ACAE_FILE), os.path.join(path, ACAE_FILE), path):
    if os.path.isfile(candidate):
      return candidate
  raise UserError(
    f"config.consistency.acae: no fitted ACAE at '{path}' (looked for acae/{ACAE_FILE}); fit one with "
    'python -m posebh_jax.acae --workdir=<the trained 3D run>'
  )


def write_acae(directory: str, encoder, decoder, joint_names) -> str:
  """Writes `directory`/weights.npz: `encoder` (J, L) and `decoder` (L, J) (column-normalised) and the J suffixed
  `joint_names`, the file `read_acae` and `config.consistency.acae` read. Returns its path."""
  encoder, decoder = np.asarray(encoder, np.float32), np.asarray(decoder, np.float32)
  if encoder.shape[::-1] != decoder.shape or encoder.shape[0] != len(joint_names):
    raise ValueError(f'encoder {encoder.shape}, decoder {decoder.shape} and {len(joint_names)} joints disagree')
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, ACAE_FILE)
  np.savez(path, encoder=encoder, decoder=decoder, joint_names=np.asarray(list(joint_names)))
  return path


@functools.lru_cache(maxsize=8)
def read_acae(path: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """(encoder float32 (J, L), decoder float32 (L, J), joint names) of the ACAE at `path` (`acae_file`)."""
  with np.load(acae_file(path)) as data:
    return (
      np.asarray(data['encoder'], np.float32),
      np.asarray(data['decoder'], np.float32),
      tuple(str(n) for n in data['joint_names']),
    )


class Consistency:
  """The config's consistency variant over the shared head's joints `joint_names` (module docstring)."""

  def __init__(self, config, joint_names, full_spec: MetrabsHeadSpec):
    """Args: the run's config, the shared head's suffixed joint names (J) and the full head's spec."""
    settings = config.get('consistency', None)
    self.variant = settings.variant if settings is not None else 'none'
    if self.variant not in VARIANTS:
      raise UserError(f"config.consistency.variant is '{self.variant}'; use one of {', '.join(VARIANTS)}")
    self.full_spec = full_spec
    self.encoder = self.decoder = None
    if self.variant == 'none':
      return
    if not settings.acae:
      raise UserError(
        f"config.consistency.variant '{self.variant}' needs a fitted ACAE: set config.consistency.acae to the run "
        'where python -m posebh_jax.acae wrote it'
      )
    self.encoder, self.decoder, names = read_acae(os.path.abspath(settings.acae))
    if tuple(names) != tuple(joint_names):
      raise UserError(
        f'config.consistency.acae: the ACAE was fitted on {len(names)} joints ({", ".join(names[:3])}, ...) but '
        f'this run\'s 3D head has {len(joint_names)} ({", ".join(tuple(joint_names)[:3])}, ...); fit it on a run '
        'with the same 3D datasets'
      )
    self.weight = float(settings.weight)
    self.weight_2d = float(settings.weight_2d)
    self.distill_weight = float(settings.distill_weight)

  @property
  def num_latents(self) -> int:
    return 0 if self.decoder is None else int(self.decoder.shape[0])

  def head_parts(self) -> tuple[tuple[str, MetrabsHeadSpec], ...]:
    """The 3D heads a dataset that supervises 3D runs: ((output key, spec), ...), keys `FULL_HEAD` / `LATENT_HEAD`."""
    latent = lambda: (
      LATENT_HEAD,
      dataclasses.replace(self.full_spec, num_keypoints=self.num_latents, head_name=LATENT_HEAD),
    )
    if self.variant == 'latent':
      return (latent(),)
    if self.variant == 'hybrid':
      return ((FULL_HEAD, self.full_spec), latent())
    return ((FULL_HEAD, self.full_spec),)

  def joints(self, heads: dict) -> dict:
    """The joints the losses supervise, {'coords2d' (n, J, 2), 'coords3d_rel' (n, J, 3)}, from {output key: head
    output}: the full head's, or (variant 'latent') the decoded latent head's."""
    if self.variant == 'latent':
      return consistency_losses.decode_head_output(heads[LATENT_HEAD], self.decoder)
    return {key: heads[FULL_HEAD][key] for key in ('coords2d', 'coords3d_rel')}

  def inference_joints(self, heads: dict) -> dict:
    """The joints evaluation and prediction use: the decoded latent head's ('latent', 'hybrid'), else the full
    head's."""
    if self.variant in ('latent', 'hybrid'):
      return consistency_losses.decode_head_output(heads[LATENT_HEAD], self.decoder)
    return self.joints(heads)

  def split(self, output) -> dict:
    """{output key: head output} of a dataset's 3D output: a single head's dict itself (one part), else the
    `MultiHeadSpec` output's entries of the 3D parts."""
    parts = self.head_parts()
    if len(parts) == 1 and 'coords2d' in output:
      return {parts[0][0]: output}
    return {key: output[key] for key, _ in parts}

  def spec(self):
    """The head spec of a 3D dataset: the single 3D head's, or a `MultiHeadSpec` of both (variant 'hybrid')."""
    parts = self.head_parts()
    return parts[0][1] if len(parts) == 1 else MultiHeadSpec(parts)

  def terms(self, heads: dict, crop_size_hw, box_size_mm: float, is_2d: bool) -> tuple[float, dict]:
    """(weighted sum, {name: unweighted term}) of the variant's own terms on one dataset's examples: 'consistency'
    (a; weight, × weight_2d on 2D examples) or 'distill' (c; distill_weight)."""
    if self.variant == 'regularize':
      term = consistency_losses.regularization(heads[FULL_HEAD]['coords3d_rel'], self.encoder, self.decoder)
      return self.weight * (self.weight_2d if is_2d else 1.0) * term, {'consistency': term}
    if self.variant == 'hybrid':
      student = consistency_losses.decode_head_output(heads[LATENT_HEAD], self.decoder)
      term = consistency_losses.distillation(student, heads[FULL_HEAD], crop_size_hw, box_size_mm)
      return self.distill_weight * term, {'distill': term}
    return 0.0, {}
