"""The JAX BAE reproduces ELM's PyTorch BAE (tests/reference/bae_k8)."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elm_jax import sharding
from elm_jax.models.bae import Autoencoder
from elm_jax.weights.torch_bae import bae_params_from_torch
from elm_jax.weights.tree_check import check_against

REF = pathlib.Path(__file__).parent / "reference" / "bae_k8"


def nchw(x):
  return np.transpose(x, (0, 2, 3, 1))


@pytest.fixture(scope="module")
def reference():
  cfg = json.loads((REF / "config.json").read_text())["constructor_H"]
  arch = dict(nf=cfg["nf"], ch_mult=tuple(cfg["ch_mult"]),
              num_res_blocks=cfg["res_blocks"],
              attn_resolutions=tuple(cfg["attn_resolutions"]),
              resolution=cfg["img_size"], emb_dim=cfg["emb_dim"],
              bits=cfg["codebook_size"], deterministic=True)
  model = Autoencoder(**arch)
  sd = dict(np.load(REF / "state_dict.npz"))
  params = bae_params_from_torch(sd, **arch)
  inputs, outputs = np.load(REF / "inputs.npz"), np.load(REF / "outputs.npz")
  return model, params, inputs, outputs, sd


def test_params_fit_model(reference):
  model, params, inputs, _, _ = reference
  expected = sharding.unbox(jax.eval_shape(
      model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"])
  check_against(expected, params, "bae_k8 state dict")


def test_matches_pytorch(reference):
  model, params, inputs, out, _ = reference
  images = jnp.asarray(nchw(inputs["images"]))
  q = model.apply({"params": params}, images, method=model.encode)
  enc = model.apply({"params": params}, images,
                    method=lambda m, x: m.encoder(x))
  np.testing.assert_allclose(enc, nchw(out["enc_out"]), atol=1e-4)
  np.testing.assert_allclose(q.probs, nchw(out["probs"]), atol=1e-4)
  far = ~nchw(out["near_threshold"])
  np.testing.assert_array_equal(np.asarray(q.bits)[far], nchw(out["codes"])[far])
  recon = model.apply({"params": params}, jnp.asarray(nchw(out["codes"])),
                      method=model.decode)
  np.testing.assert_allclose(recon, nchw(out["recon"]), atol=1e-4)
  recon_random = model.apply({"params": params},
                             jnp.asarray(nchw(inputs["codes_random"])),
                             method=model.decode)
  np.testing.assert_allclose(recon_random, nchw(out["recon_random"]), atol=1e-4)


def test_unknown_key_is_named(reference):
  model, _, _, _, sd = reference
  arch = dict(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,),
              resolution=32)
  with pytest.raises(ValueError, match="encoder.blocks.99.weight"):
    bae_params_from_torch({**sd, "encoder.blocks.99.weight": np.zeros(3)}, **arch)
  missing = {k: v for k, v in sd.items() if k != "quantize.embed.weight"}
  with pytest.raises(KeyError, match="quantize.embed.weight"):
    bae_params_from_torch(missing, **arch)
