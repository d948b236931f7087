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
# TODO(remove): re-export of the crop geometry, now in posebh_jax.geometry, for posebh_jax/evaluate.py
# (codecs.get_warp_matrix, codecs.transform_points) until it imports posebh_jax.geometry itself.
from posebh_jax.geometry import box_to_center_scale, get_warp_matrix, transform_points

__all__ = [
    "DECODE_METHODS",
    "HeatmapCodec",
    "MSRAHeatmap",
    "UDPHeatmap",
    "box_to_center_scale",
    "decode",
    "decode_argmax",
    "decode_argmax_jax",
    "encode_msra",
    "encode_udp",
    "flip_heatmaps",
    "get_codec",
    "get_warp_matrix",
    "heatmap_to_image",
    "refine_dark_udp",
    "refine_quarter_shift",
    "transform_points",
]
