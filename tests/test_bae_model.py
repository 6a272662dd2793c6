"""Shapes and sizes of the autoencoder family."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from config_loading import get_config
from elm_jax.models.bae import build_autoencoder


def n_params(tree, prefix=None):
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return sum(int(np.prod(v.shape)) for k, v in leaves
             if prefix is None or jax.tree_util.keystr(k).startswith(prefix))


def abstract_params(model, size):
  variables = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0),
                          "quantize": jax.random.key(1)},
                         jnp.zeros((1, size, size, 3))))
  return jax.tree.map(lambda x: getattr(x, "value", x), variables["params"],
                      is_leaf=lambda x: hasattr(x, "value"))


def unused_torch_shortcuts(params, part):
  """ELM's ResBlocks own a 1x1 conv_out even when they add the identity."""
  return sum(v["conv1"]["kernel"].shape[-1] ** 2 + v["conv1"]["kernel"].shape[-1]
             for k, v in params[part].items()
             if "_res" in k and "shortcut" not in v)


def test_imagenet_bae_parameter_count():
  """docs/spec.md section 2: encoder about 30.4M, decoder about 35.0M, 65.4M in all at K=16.

  ELM counts the PyTorch state dict, which includes the 1x1 convs that
  identity ResBlocks create and never apply (2.35M); elm_jax does not create
  them, so live parameters + those = its figures.
  """
  model = build_autoencoder(get_config("bae", "imagenet").model)
  params = abstract_params(model, 256)
  enc = n_params(params, "['encoder']") + unused_torch_shortcuts(params, "encoder")
  dec = n_params(params, "['decoder']") + unused_torch_shortcuts(params, "decoder")
  assert abs(enc - 30.4e6) / 30.4e6 < 0.01, enc
  assert abs(dec - 35.0e6) / 35.0e6 < 0.01, dec
  total = n_params(params) + unused_torch_shortcuts(params, "encoder") + \
      unused_torch_shortcuts(params, "decoder")
  assert abs(total - 65.4e6) / 65.4e6 < 0.01, total
  assert 62.9e6 < n_params(params) < 63.1e6  # what elm_jax allocates


@pytest.mark.parametrize("arg,size,grid,bits", [("imagenet", 256, 16, 16),
                                                ("imagenet,bits=24", 256, 16, 24),
                                                ("fmnist", 32, 16, 16)])
def test_encode_decode_shapes(arg, size, grid, bits):
  model = build_autoencoder(get_config("bae", arg).model)
  params = abstract_params(model, size)
  images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  q = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, method=model.encode),
                     params, images)
  assert q.bits.shape == (2, grid, grid, bits)
  assert q.ids.shape == (2, grid, grid)
  out = jax.eval_shape(lambda p, b: model.apply({"params": p}, b, method=model.decode),
                       params, q.bits)
  assert out.shape == (2, size, size, 3)
  assert model.latent_size == grid


@pytest.mark.slow
@pytest.mark.parametrize("quantizer", ["binary", "vq", "lfq"])
def test_round_trip_runs_for_every_quantizer(quantizer):
  config = get_config("bae", f"tiny,quantizer={quantizer}")
  model = build_autoencoder(config.model)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  variables = model.init({"params": jax.random.key(1),
                          "quantize": jax.random.key(2)}, x)
  x_hat, q = model.apply(variables, x, train=True,
                         rngs={"quantize": jax.random.key(3)})
  assert x_hat.shape == x.shape and np.isfinite(np.asarray(x_hat)).all()
  codes = q.ids if quantizer == "vq" else q.bits
  again = model.apply(variables, codes, method=model.decode)
  # Decoding the codes of an eval-mode encode reproduces the eval forward.
  x_eval, q_eval = model.apply(variables, x, train=False)
  codes_eval = q_eval.ids if quantizer == "vq" else q_eval.bits
  np.testing.assert_allclose(
      model.apply(variables, codes_eval, method=model.decode), x_eval, atol=1e-5)
  assert again.shape == x.shape
