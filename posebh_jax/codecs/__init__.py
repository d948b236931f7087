"""Heatmap codecs (MSRA / UDP encode, argmax + DARK-UDP / quarter-shift decode)."""

from posebh_jax.codecs.heatmap import (
  DECODE_METHODS,
  HeatmapCodec,
  MSRAHeatmap,
  UDPHeatmap,
  decode,
  decode_argmax,
  decode_argmax_jax,
  encode_msra,
  encode_udp,
  flip_heatmaps,
  get_codec,
  heatmap_to_image,
  refine_dark_udp,
  refine_quarter_shift,
)

__all__ = [
  "DECODE_METHODS",
  "HeatmapCodec",
  "MSRAHeatmap",
  "UDPHeatmap",
  "decode",
  "decode_argmax",
  "decode_argmax_jax",
  "encode_msra",
  "encode_udp",
  "flip_heatmaps",
  "get_codec",
  "heatmap_to_image",
  "refine_dark_udp",
  "refine_quarter_shift",
]
