"""The PoseBH training objective on one global batch: prototype terms, CPS, CSS and the prototype update.

All terms are means (over pixels or heatmap entries), combined with the config weights (docs/METHOD.md §2):
  α·PHM + β·PPC + γ·PPD                              (always)
  δ·(α·PHM_c + β·PPC_c + γ·PPD_c)                    (CPS: the same terms on the cluster prototypes)
  ζ·Σ_{d, i≠d} [MSE_ω(Ĥ^d, T) + α·MSE_ω(ĥ^d, T) + β·PPC + γ·PPD on the pixels of T·ω]   (CSS)
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from posebh_jax.posebh import css as css_lib
from posebh_jax.posebh import losses as loss_lib
from posebh_jax.posebh import prototypes as proto_lib


def _prototype_terms(sims, proto_heatmaps, assignments, batch, offsets, num_keypoints):
  """Sum over datasets of PHM, PPC, PPD for one set of prototypes. Returns three float32 scalars."""
  phm = ppc = ppd = jnp.zeros((), jnp.float32)
  for name, assignment in assignments.items():
    offset, k = offsets[name], num_keypoints[name]
    own = loss_lib.dataset_similarity(sims[name], offset, k)
    phm += loss_lib.phm_loss(
      proto_heatmaps[name][..., offset : offset + k], batch[name]['heatmaps'], batch[name]['target_weights']
    )
    ppc += loss_lib.ppc_loss(own, assignment.local_class, assignment.assignment, assignment.weight)
    ppd += loss_lib.ppd_loss(own, assignment.local_class, assignment.assignment, assignment.weight)
  return phm, ppc, ppd


def posebh_objective(
  outputs: Mapping,
  batch: Mapping,
  extra: Mapping,
  phase,
  cfg,
  offsets: Mapping[str, int],
  num_keypoints: Mapping[str, int],
):
  """PoseBH loss terms for one step.

  Args:
    outputs: `PoseModel.posebh_outputs` (heatmaps, embeddings, cross per dataset).
    batch: {name: {heatmaps (n, H, W, K), target_weights (n, K), ...}}.
    extra: {'prototypes', 'cluster_prototypes'} (J, M, F).
    phase: `stages.Phase` (which terms are on, whether prototypes update).
    cfg: config.posebh. offsets / num_keypoints: global index of each dataset's keypoint 0 and its K.
  Returns: (weighted total float32 scalar, {metric name: raw term value}, new extra).
  """
  weights = cfg.weights
  embeddings = outputs['embeddings']
  names = list(embeddings)
  protos = extra['prototypes']
  sims = {n: proto_lib.similarity(embeddings[n], protos) for n in names}
  heatmaps = {n: proto_lib.prototype_heatmaps(s) for n, s in sims.items()}
  gt = {n: batch[n]['heatmaps'] for n in names}
  target_weights = {n: batch[n]['target_weights'] for n in names}
  assignments = proto_lib.assign_pixels(
    protos, embeddings, gt, target_weights, offsets, cfg.kappa, cfg.sinkhorn_iterations, similarities=sims
  )
  phm, ppc, ppd = _prototype_terms(sims, heatmaps, assignments, batch, offsets, num_keypoints)
  total = weights.phm * phm + weights.ppc * ppc + weights.ppd * ppd
  metrics = {'phm': phm, 'ppc': ppc, 'ppd': ppd}

  if phase.cps:
    clusters = extra['cluster_prototypes']
    c_sims = {n: proto_lib.similarity(embeddings[n], clusters) for n in names}
    c_heatmaps = {n: proto_lib.prototype_heatmaps(s) for n, s in c_sims.items()}
    c_assign = proto_lib.assign_pixels(
      clusters, embeddings, gt, target_weights, offsets, cfg.kappa, cfg.sinkhorn_iterations, similarities=c_sims
    )
    c_phm, c_ppc, c_ppd = _prototype_terms(c_sims, c_heatmaps, c_assign, batch, offsets, num_keypoints)
    cps = weights.phm * c_phm + weights.ppc * c_ppc + weights.ppd * c_ppd
    total += weights.cps * cps
    metrics['cps'] = cps

  if phase.css:
    # One block per head d: its predictions on all other datasets' samples, concatenated in dataset order.
    css_heat = kept = jnp.zeros((), jnp.float32)
    pair_embeddings, pair_heatmaps, pair_weights, pair_offsets, pair_sims, pair_k = {}, {}, {}, {}, {}, {}
    for head_name, head_pred in outputs['cross'].items():
      offset, k = offsets[head_name], num_keypoints[head_name]
      others = [n for n in names if n != head_name]
      sims_other = jnp.concatenate([sims[n] for n in others], axis=0)
      proto_pred = jnp.concatenate([heatmaps[n][..., offset : offset + k] for n in others], axis=0)
      target, omega = css_lib.css_targets(head_pred, proto_pred, cfg.css_min_peak, cfg.css_max_distance, sigma=2.0)
      css_heat += css_lib.css_loss(head_pred, proto_pred, target, omega, weights.phm)
      kept += jnp.mean((omega > 0).astype(jnp.float32))
      pair_embeddings[head_name] = jnp.concatenate([embeddings[n] for n in others], axis=0)
      pair_sims[head_name] = sims_other
      pair_heatmaps[head_name] = target * omega[:, None, None, :]
      pair_weights[head_name], pair_offsets[head_name], pair_k[head_name] = omega, offset, k
    css_ppc = css_ppd = jnp.zeros((), jnp.float32)
    if pair_embeddings:
      pair_assign = proto_lib.assign_pixels(
        protos,
        pair_embeddings,
        pair_heatmaps,
        pair_weights,
        pair_offsets,
        cfg.kappa,
        cfg.sinkhorn_iterations,
        similarities=pair_sims,
      )
      for key, assignment in pair_assign.items():
        own = loss_lib.dataset_similarity(pair_sims[key], pair_offsets[key], pair_k[key])
        css_ppc += loss_lib.ppc_loss(own, assignment.local_class, assignment.assignment, assignment.weight)
        css_ppd += loss_lib.ppd_loss(own, assignment.local_class, assignment.assignment, assignment.weight)
      kept = kept / len(pair_embeddings)
    css = css_heat + weights.ppc * css_ppc + weights.ppd * css_ppd
    total += weights.css * css
    metrics.update(css=css, css_kept=kept)

  new_extra = dict(extra)
  if phase.update_prototypes:
    new_extra['prototypes'] = proto_lib.update_prototypes(
      protos, {n: jax.lax.stop_gradient(e) for n, e in embeddings.items()}, assignments, cfg.momentum
    )
  return total, metrics, new_extra
