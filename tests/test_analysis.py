"""Token randomness and attention locality: known answers, then the commands on tiny models."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from config_loading import get_config
from elm_jax.evaluation import analyses
from elm_jax.evaluation import analysis
from elm_jax.models.transformer import Transformer
from random_runs import save_random_run


def test_token_kl_known_answers():
  v = 16
  # Row r: r, r+1, ..., r+16 (mod v). Over all rows every token occurs 17 times and each
  # of the v pairs (i, i+1 mod v) 16 times: uniform unigrams, v of v^2 bigrams.
  cycle = (np.arange(v)[:, None] + np.arange(v + 1)[None, :]) % v
  got = analysis.token_kl(cycle, v)
  assert got["unigram_kl"] == pytest.approx(0.0, abs=1e-12)
  assert got["bigram_kl"] == pytest.approx(math.log(v))  # v of v^2 pairs, uniformly
  constant = np.full((3, 10), 5)
  got = analysis.token_kl(constant, v)
  assert got["unigram_kl"] == pytest.approx(math.log(v))
  assert got["bigram_kl"] == pytest.approx(2 * math.log(v))
  assert got["tokens"] == 30 and got["bigrams"] == 27  # pairs never cross sequences
  with pytest.raises(ValueError, match=r"\[0, 16\)"):
    analysis.token_kl(np.array([[0, 16]]), v)


def test_text_corpus_is_far_from_uniform():
  name, text = analysis.stdlib_corpus()
  assert len(text) > 100_000
  seq = analysis.text_bytes(text, 256)
  got = analysis.token_kl(seq, 256)
  assert got["unigram_kl"] > 1.0 and got["bigram_kl"] > got["unigram_kl"]


def test_attention_distance_on_constructed_weights():
  g = 4
  model = Transformer(num_layers=1, dim=64, num_heads=1, bits=4, num_subcodes=1, grid_size=g)
  positions = analysis.grid_positions(model, g * g)  # class token + cells 0..14
  assert np.isnan(positions[0]).all() and tuple(positions[1]) == (0, 0)
  s = g * g
  self_only = np.eye(s)[None, None, None]  # [1, 1, 1, S, S]
  left = np.zeros((s, s))
  for q in range(s):
    r, c = positions[q] if q else (np.nan, np.nan)
    if q and c > 0:
      left[q, q - 1] = 1.0  # the cell to the left
    else:
      left[q, 0] = 1.0  # only the class token: no cell weight, left out
  weights = np.concatenate([self_only, left[None, None, None]], axis=0)  # 2 "layers"
  np.testing.assert_allclose(analysis.mean_attention_distance(weights, positions), [0.0, 1.0])
  maps = analysis.attention_map(weights, positions, (1, 1), g)
  assert maps[1][1, 0] == 1.0 and maps[1].sum() == 1.0 and maps[0][1, 1] == 1.0


@pytest.mark.slow
def test_captured_weights_are_causal_distributions_and_leave_logits_alone(tiny_ar_dir):
  stage, params, _ = analyses.load_generator(tiny_ar_dir)
  model = stage.model
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 20, model.num_subcodes), 0,
                              model.vocab_size)
  labels = jnp.array([1, 2])
  w = np.asarray(analysis.attention_weights(model, params, tokens, labels))
  assert w.shape == (model.num_layers, 2, model.num_heads, 21, 21)
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
  assert np.all(np.triu(w, k=1) == 0.0)  # causal
  assert np.abs(w[1] - w[0]).max() > 1e-6  # layers differ
  scanned = model.clone(scan_layers=True)
  with pytest.raises(ValueError, match="scan_layers=False"):
    analysis.attention_weights(scanned, params, tokens, labels)


@pytest.mark.slow
def test_commands_write_numbers_plots_and_tensorboard(tmp_path, tiny_tokenizer_dir,
                                                      tiny_ar_dir):
  out = str(tmp_path / "analysis")
  got = analyses.token_randomness(tiny_tokenizer_dir, 16, out)
  image = next(v for k, v in got.items() if k.startswith("image tokens"))
  text = next(v for k, v in got.items() if k.startswith("text bytes"))
  assert image["vocab_size"] == 256 and image["tokens"] == 16 * 256  # 8 bits: one sub-code
  assert text["tokens"] > 100_000 and text["unigram_kl"] > 1.0
  assert json.load(open(os.path.join(out, "token_randomness.json"))) == got

  res = analyses.attention(tiny_ar_dir, 4, out, query_cell=(8, 8))
  assert len(res["mean_distance_per_layer"]) == 2
  assert all(0.0 < d < 16 * math.sqrt(2) for d in res["mean_distance_per_layer"])
  assert np.array(res["mean_distance_per_head"]).shape == (2, 2)
  for name in ("token_randomness.png", "attention.png"):
    assert os.path.getsize(os.path.join(out, name)) > 1000
  assert json.load(open(os.path.join(out, "attention.json"))) == res
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))


@pytest.mark.slow
def test_attention_command_unstacks_a_scanned_generator(tmp_path, tiny_tokenizer_dir):
  """The imagenet configs (and converted ELM checkpoints) scan their layers."""
  config = get_config("ar", "tiny,split=2-4")
  config.tokenizer.checkpoint = tiny_tokenizer_dir
  config.model.scan_layers = True
  workdir = save_random_run(config, str(tmp_path / "ar_scanned"), step=3)
  stage, params, _ = analyses.load_generator(workdir)
  assert stage.model.scan_layers and "layers" in params
  model, flat = analyses.unscanned(stage.model, params)
  assert not model.scan_layers and "layers_1" in flat and "layers" not in flat
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 20, model.num_subcodes), 0,
                              model.vocab_size)
  labels = jnp.array([1, 2])
  np.testing.assert_allclose(  # the same function
      np.asarray(model.apply({"params": flat}, tokens, labels, train=False)[0]),
      np.asarray(stage.model.apply({"params": params}, tokens, labels, train=False)[0]),
      atol=1e-5)
  res = analyses.attention(workdir, 2, str(tmp_path / "analysis"))
  assert len(res["mean_distance_per_layer"]) == model.num_layers
