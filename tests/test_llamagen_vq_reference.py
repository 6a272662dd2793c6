"""Autoencoder(style="llamagen") reproduces LlamaGen's VQ tokenizer
(tests/reference/llamagen_vq_8x8). Comparisons are in LlamaGen's [-1, 1]
pixel space: LlamaGen's x is our (x + 1) / 2, our output y is its (y + 1) / 2.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elm_jax import sharding
from elm_jax.models.bae import Autoencoder
from elm_jax.weights.torch_llamagen_vq import (infer_architecture,
                                               torch_sources,
                                               vq_params_from_torch)
from elm_jax.weights.tree_check import check_against

REF = pathlib.Path(__file__).parent / "reference" / "llamagen_vq_8x8"
ATOL = 1e-4


def nhwc(x):
  return np.transpose(x, (0, 2, 3, 1))


@pytest.fixture(scope="module")
def reference():
  cfg = json.loads((REF / "config.json").read_text())
  sd = dict(np.load(REF / "state_dict.npz"))
  arch = dict(**infer_architecture(sd), attn_resolutions=(cfg["grid"],),
              resolution=cfg["image_size"])
  model = Autoencoder(style="llamagen", pixel_range="symmetric",
                      quantizer="vq", **arch)
  params = vq_params_from_torch(sd, **arch)
  inputs, outputs = np.load(REF / "inputs.npz"), np.load(REF / "outputs.npz")
  return model, params, arch, sd, inputs, outputs


def test_architecture_is_read_off_the_state_dict(reference):
  _, _, arch, _, _, _ = reference
  cfg = json.loads((REF / "config.json").read_text())
  args = cfg["model_args"]
  assert arch == dict(nf=cfg["encoder_decoder_ch"],
                      ch_mult=tuple(args["encoder_ch_mult"]), num_res_blocks=2,
                      emb_dim=args["z_channels"],
                      codebook_size=args["codebook_size"],
                      code_dim=args["codebook_embed_dim"],
                      attn_resolutions=(8,), resolution=32)


def test_params_fit_model(reference):
  model, params, _, _, _, _ = reference
  expected = sharding.unbox(jax.eval_shape(
      model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"])
  check_against(expected, params, "llamagen_vq_8x8 state dict")


def test_matches_pytorch(reference):
  model, params, _, _, inputs, out = reference
  variables = {"params": params}
  x = nhwc(inputs["images_nchw"])                     # [B, 32, 32, 3] in [-1, 1]
  images = jnp.asarray((x + 1.0) / 2.0)               # our [0, 1] interface

  pre_quant = model.apply(
      variables, jnp.asarray(x),
      method=lambda m, x: m.quantize.quant_proj(m.encoder(x)))  # [B, 8, 8, 8]
  np.testing.assert_allclose(pre_quant, nhwc(out["pre_quant_nchw"]), atol=ATOL)

  q = model.apply(variables, images, method=model.encode)
  np.testing.assert_array_equal(q.ids, out["indices"])
  embedding = params["quantize"]["embedding"]         # [512, 8]
  codebook = embedding / np.linalg.norm(embedding, axis=-1, keepdims=True)
  np.testing.assert_allclose(codebook[np.asarray(q.ids)],
                             nhwc(out["quant_nchw"]), atol=ATOL)

  decoded = model.apply(                              # decode(quant), [-1, 1]
      variables, jnp.asarray(nhwc(out["quant_nchw"])),
      method=lambda m, e: m.decoder(m.quantize.post_quant_proj(e)))
  np.testing.assert_allclose(decoded, nhwc(out["decoded_nchw"]), atol=ATOL)

  from_ids = model.apply(variables, jnp.asarray(out["indices"]),
                         method=model.decode)         # [B, 32, 32, 3] in [0, 1]
  np.testing.assert_allclose(2.0 * np.asarray(from_ids) - 1.0,
                             nhwc(out["decoded_from_indices_nchw"]), atol=ATOL)

  recon, _ = model.apply(variables, images)
  np.testing.assert_allclose(2.0 * np.asarray(recon) - 1.0,
                             nhwc(out["forward_nchw"]), atol=ATOL)


def test_torch_sources_name_the_pytorch_keys(reference):
  _, _, arch, sd, _, _ = reference
  sources = torch_sources(sd, **arch)
  assert sources["['decoder']['up0_res2']['conv1']['kernel']"] == (
      "decoder.conv_blocks.2.res.2.conv1.weight")
  assert sources["['encoder']['down2_res0']['shortcut']['kernel']"] == (
      "encoder.conv_blocks.2.res.0.nin_shortcut.weight")
  assert sources["['quantize']['quant_proj']['kernel']"] == "quant_conv.weight"
  assert "quantize.codebook_used" not in sources.values()
  assert len(sources) == len(sd) - 1


def test_bad_state_dicts_are_named(reference):
  _, _, arch, sd, _, _ = reference
  key = "decoder.conv_blocks.1.res.0.conv1.weight"
  bad = {**sd, key: np.zeros((48, 64, 3, 3), np.float32)}
  with pytest.raises(ValueError, match=key.replace(".", r"\.") + r" \[48, 64"):
    infer_architecture(bad)
  key = "post_quant_conv.weight"
  bad = {**sd, key: np.zeros((64, 4, 1, 1), np.float32)}
  with pytest.raises(ValueError, match=r"post_quant_conv\.weight \[64, 4, 1, 1\]"):
    infer_architecture(bad)
  extra = "decoder.conv_blocks.0.res.3.conv1.weight"
  with pytest.raises(ValueError, match=r"decoder\.conv_blocks\.0\.res\.\*: 4"):
    infer_architecture({**sd, extra: np.zeros((64, 64, 3, 3), np.float32)})
  missing = {k: v for k, v in sd.items() if k != "quantize.embedding.weight"}
  with pytest.raises(KeyError, match="quantize.embedding.weight"):
    infer_architecture(missing)
  with pytest.raises(KeyError, match="quantize.embedding.weight"):
    vq_params_from_torch(missing, **arch)
  with pytest.raises(ValueError, match="encoder.conv_blocks.9.res.0.norm1.weight"):
    vq_params_from_torch({**sd, "encoder.conv_blocks.9.res.0.norm1.weight":
                          np.zeros(3, np.float32)}, **arch)


def test_bad_style_and_pixel_range_are_named():
  x = jnp.zeros((1, 32, 32, 3))
  small = dict(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,),
               resolution=32, emb_dim=32, bits=8)
  with pytest.raises(ValueError, match=r"model\.style='taming': expected one "
                     r"of 'elm', 'llamagen'"):
    jax.eval_shape(Autoencoder(style="taming", **small).init,
                   jax.random.key(0), x)
  with pytest.raises(ValueError, match=r"model\.pixel_range='0-255': expected "
                     r"one of 'unit', 'symmetric'"):
    jax.eval_shape(Autoencoder(pixel_range="0-255", **small).init,
                   jax.random.key(0), x)
