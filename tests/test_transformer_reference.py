"""The JAX transformers reproduce ELM's PyTorch AR and MLM models
(tests/reference/ar_2x5, mlm_1x5; see tests/reference/README.md)."""

import json
import math
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from elm_jax.models.rope import rope_2d_table
from elm_jax.models.transformer import Transformer
from elm_jax.weights.torch_transformer import transformer_params_from_torch

REF = pathlib.Path(__file__).parent / "reference"
ATOL = 1e-4


def model_kwargs(name: str, **extra) -> dict:
  cfg = json.loads((REF / name / "config.json").read_text())
  c = cfg["constructor_kwargs"]
  return dict(num_layers=c["n_layer"], dim=c["dim"], num_heads=c["n_head"],
              head_dim=cfg["derived"]["head_dim"], num_classes=c["num_classes"],
              bits=c["token_each"] * c["code_dim"], num_subcodes=c["token_each"],
              grid_size=math.isqrt(c["block_size"]),
              causal=cfg["kind"] == "elm_ar_transformer", **extra)


def load(name: str):
  sd = dict(np.load(REF / name / "state_dict.npz"))
  return sd, np.load(REF / name / "inputs.npz"), np.load(REF / name / "outputs.npz")


def run(kw, params, tokens, labels, mask=None):
  model = Transformer(**kw)
  out, _ = model.apply({"params": params}, jnp.asarray(tokens, jnp.int32),
                       jnp.asarray(labels, jnp.int32), mask=mask)
  b, length, n, v = out.shape
  return np.asarray(out).reshape(b, length * n, v)  # cell-major, sub-code minor


@pytest.mark.parametrize("scan_layers", [False, True])
def test_ar_matches_pytorch(scan_layers):
  kw = model_kwargs("ar_2x5", scan_layers=scan_layers)
  sd, inputs, out = load("ar_2x5")
  params = transformer_params_from_torch(sd, **kw)
  logits = run(kw, params, inputs["idx"], inputs["labels"])
  np.testing.assert_allclose(logits, out["logits"], atol=ATOL, rtol=0)
  null = run(kw, params, inputs["idx"], inputs["labels_null"])
  np.testing.assert_allclose(null, out["logits_null_label"], atol=ATOL, rtol=0)
  # The sampler's first step: the class token alone.
  prefill = run(kw, params, inputs["idx"][:, :0], inputs["labels"])
  np.testing.assert_allclose(prefill, out["logits_prefill"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_mlm_matches_pytorch(scan_layers):
  kw = model_kwargs("mlm_1x5", scan_layers=scan_layers)
  sd, inputs, out = load("mlm_1x5")
  params = transformer_params_from_torch(sd, **kw)
  logits = run(kw, params, inputs["idx"], inputs["labels"])
  np.testing.assert_allclose(logits, out["logits"], atol=ATOL, rtol=0)
  # The same through the clean tokens and the boolean mask.
  masked = run(kw, params, inputs["idx_clean"], inputs["labels"],
               mask=jnp.asarray(inputs["token_all_mask"]))
  np.testing.assert_allclose(masked, out["logits"], atol=ATOL, rtol=0)
  null = run(kw, params, inputs["idx"], inputs["labels_null"])
  np.testing.assert_allclose(null, out["logits_null_label"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["ar_2x5", "mlm_1x5"])
def test_rope_table_matches_pytorch(name):
  kw = model_kwargs(name)
  table = rope_2d_table(kw["grid_size"], kw["head_dim"])
  ref = load(name)[2]["freqs_cis"]
  assert table.shape == ref.shape
  np.testing.assert_allclose(table, ref, atol=1e-6, rtol=0)


def test_converter_names_bad_keys():
  kw = model_kwargs("ar_2x5")
  sd = load("ar_2x5")[0]
  missing = {k: v for k, v in sd.items() if k != "layers.1.feed_forward.w3.weight"}
  with pytest.raises(KeyError, match=r"layers\.1\.feed_forward\.w3\.weight"):
    transformer_params_from_torch(missing, **kw)
  with pytest.raises(ValueError, match=r"layers\.7\.attention\.wo\.weight"):
    transformer_params_from_torch(
        {**sd, "layers.7.attention.wo.weight": np.zeros((128, 128))}, **kw)
  bad = {**sd, "proj.weight": np.zeros((128, 192))}
  with pytest.raises(ValueError, match=r"proj\.weight.*\(128, 192\)"):
    transformer_params_from_torch(bad, **kw)
  # An MLM file's dead keys are dropped, but a live one must be there.
  mlm_kw, mlm_sd = model_kwargs("mlm_1x5"), load("mlm_1x5")[0]
  mlm_sd.pop("mlm_layer.bias")
  with pytest.raises(KeyError, match=r"mlm_layer\.bias"):
    transformer_params_from_torch(mlm_sd, **mlm_kw)
