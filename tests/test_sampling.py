"""The AR KV-cache sampler and the MaskGIT sampler, against full forwards."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elm_jax import platform
from elm_jax.models.transformer import Transformer
from elm_jax.sampling import autoregressive, masked, schedules
from elm_jax.sampling.logits_filter import filter_logits, top_k_filter, top_p_filter
from elm_jax.sampling.settings import SamplerSettings

NULL = 10


def tiny(causal=True, scan_layers=False, grid=4, subcodes=2):
  return Transformer(num_layers=2, dim=64, num_heads=2, head_dim=32,
                     num_classes=NULL, bits=8, num_subcodes=subcodes,
                     grid_size=grid, causal=causal, scan_layers=scan_layers)


def random_params(model, seed=0):
  """Init, then perturb everything (the heads start at zero: all ties)."""
  t = model.grid_size ** 2 - int(model.causal)

  @jax.jit  # one compile instead of an eager dispatch per op: seconds saved
  def init(key):
    params = model.init(key, jnp.zeros((1, t, model.num_subcodes), jnp.int32),
                        jnp.zeros((1,), jnp.int32))["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    return jax.tree.unflatten(tree, [l + 0.1 * jax.random.normal(k, l.shape)
                                     for l, k in zip(leaves, keys)])

  return init(jax.random.key(seed))


@pytest.mark.parametrize("scan_layers", [False, True])
def test_cached_logits_equal_full_forward_at_every_step(scan_layers):
  model = tiny(scan_layers=scan_layers)
  params = random_params(model)
  labels = jnp.array([1, 4, 7])
  settings = SamplerSettings(cfg_scale=3.0, cfg_schedule="cosine", top_k=5)
  tokens, logits = jax.jit(lambda p, l, r: autoregressive.sample(
      model, p, l, r, settings, return_logits=True))(params, labels,
                                                     jax.random.key(3))
  assert tokens.shape == (3, 16, 2) and logits.shape == (6, 16, 2, 16)
  both = jnp.concatenate([labels, jnp.full_like(labels, NULL)])
  full, _ = jax.jit(model.apply)({"params": params},
                                 jnp.concatenate([tokens, tokens])[:, :-1],
                                 both)  # [6, 16, 2, 16]: position s sees cells < s
  np.testing.assert_allclose(logits, full, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("scan_layers", [False, True])
@pytest.mark.parametrize("prefill, chunks", [(0, (4, 11)), (3, (5, 7))])
def test_cached_forward_over_several_positions_at_once(scan_layers, prefill,
                                                       chunks):
  """The class token with `prefill` cells, then chunks of cells through the
  model's cache, give the full forward's logits (the multi-query decode
  path); a scanned model's cache is one stacked buffer per k and v."""
  model = tiny(grid=4, scan_layers=scan_layers)
  params = random_params(model)
  labels = jnp.array([2, 5])
  cells = jax.random.randint(jax.random.key(4), (2, 15, 2), 0, 16)
  full, none = model.apply({"params": params}, cells, labels)  # [2, 16, 2, 16]
  assert none is None
  cache = model.init_cache(2)
  k = cache["layers"]["k"] if scan_layers else cache["layers"][1]["k"]
  assert k.shape == ((2,) if scan_layers else ()) + (2, 16, 2, 32)
  step = jax.jit(lambda t, l, c: model.apply({"params": params}, t, l, cache=c))
  logits, cache = step(cells[:, :prefill], labels, cache)
  outs, start = [logits], prefill
  for size in chunks:
    logits, cache = step(cells[:, start:start + size], None, cache)
    outs.append(logits)
    start += size
  assert int(cache["index"]) == 16
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_mlm_has_no_cache():
  model = tiny(causal=False)
  params = random_params(model)
  with pytest.raises(ValueError, match="MLM"):
    model.apply({"params": params}, jnp.zeros((1, 16, 2), jnp.int32),
                jnp.zeros((1,), jnp.int32), cache=model.init_cache(1))


@pytest.mark.slow
def test_top_k_1_without_guidance_is_greedy_decoding():
  model = tiny()
  params = random_params(model, seed=5)
  labels = jnp.array([0, 9])
  settings = SamplerSettings(cfg_scale=1.0, top_k=1, temperature=0.7)
  tokens = autoregressive.sample(model, params, labels, jax.random.key(0),
                                 settings)
  # Repeated full forwards over the prefix; cells after it are zeros, which
  # causality makes irrelevant to position s (one compile for all lengths).
  forward = jax.jit(lambda ids: model.apply({"params": params}, ids, labels)[0])
  greedy = jnp.zeros((2, 16, 2), jnp.int32)
  for s in range(16):
    logits = forward(greedy[:, :-1])  # [2, 16, 2, V]
    greedy = greedy.at[:, s].set(jnp.argmax(logits[:, s], -1))
  np.testing.assert_array_equal(tokens, greedy)


def test_sampling_is_deterministic_per_rng():
  model = tiny()
  params = random_params(model, seed=2)
  labels = jnp.arange(4)
  settings = SamplerSettings(cfg_scale=2.0, cfg_schedule="linear")
  fn = jax.jit(lambda r: autoregressive.sample(model, params, labels, r, settings))
  a, b, c = fn(jax.random.key(0)), fn(jax.random.key(0)), fn(jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  assert (np.asarray(a) != np.asarray(c)).any()


def test_few_decoding_rows_compile_with_eigen_dots_on_cpu():
  """decode_compiler_options picks XLA's Eigen dots for 4-32 rows per device on CPU
  only; the program it compiles samples the same tokens as the default one."""
  assert platform.decode_compiler_options(16, "cpu")
  assert not platform.decode_compiler_options(16, "gpu")
  assert not platform.decode_compiler_options(2, "cpu")
  assert not platform.decode_compiler_options(64, "cpu")
  model = tiny()
  params = random_params(model, seed=4)
  settings = SamplerSettings(cfg_scale=2.0, cfg_schedule="linear")
  labels = jnp.arange(4 * jax.device_count()) % NULL  # guided: 8 rows/device

  def program(fn):
    return fn.lower(params, labels, jax.random.key(0)).compile().as_text()
  few = autoregressive.jit_sampler(model, settings, batch=labels.shape[0])
  default = autoregressive.jit_sampler(model, settings)
  assert "ynn_fusion" in program(default)
  assert "ynn_fusion" not in program(few)
  np.testing.assert_array_equal(few(params, labels, jax.random.key(3)),
                                default(params, labels, jax.random.key(3)))


@pytest.mark.slow
def test_sharded_sampler_matches_single_device():
  """A (data=2, tensor=4) mesh with tensor-parallel params gives the same greedy tokens."""
  import flax.linen as nn
  from elm_jax import sharding
  model = Transformer(num_layers=2, dim=128, num_heads=4, head_dim=32,
                      num_classes=NULL, bits=8, num_subcodes=2, grid_size=4)
  params = random_params(model, seed=7)
  labels = jnp.arange(4)
  settings = SamplerSettings(cfg_scale=1.5, top_k=1)
  expected = autoregressive.sample(model, params, labels, jax.random.key(0),
                                   settings)
  mesh = sharding.make_mesh(dict(data=2, fsdp=1, tensor=4))
  abstract = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, 15, 2), jnp.int32),
                            jnp.zeros((1,), jnp.int32))["params"]
  shardings = sharding.tree_shardings(abstract, mesh)
  assert shardings["layers_0"]["attention"]["qkv"]["kernel"].spec[1] == "tensor"
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.DEFAULT_RULES):
    fn = jax.jit(lambda p, l, r: autoregressive.sample(model, p, l, r, settings),
                 in_shardings=(shardings, sharding.batch_sharding(mesh, 1),
                               sharding.replicated(mesh)))
    got = fn(jax.device_put(params, shardings), labels, jax.random.key(0))
  np.testing.assert_array_equal(got, expected)


def test_guidance_schedules_match_the_formulas():
  s, n = 4.0, 256
  t = np.arange(n)
  r = (t + 1) / n
  want = {
      "constant": np.full(n, s),
      "linear": 1 + (s - 1) * (t + 1) / n,  # docs/spec.md section 7
      "cosine": 1 + (s - 1) * np.cos(-np.pi / 2 + r * np.pi / 2),
      "log": 1 + (s - 1) * np.log(1 + (np.e - 1) * r),
      "square": 1 + (s - 1) * r ** 2,
      "square_root": 1 + (s - 1) * np.sqrt(r),
  }
  for name, expected in want.items():
    got = schedules.guidance_scale(s, name, jnp.asarray(t), n)
    np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=name)
    assert abs(float(got[-1]) - s) < 1e-5, name
  with pytest.raises(ValueError, match="guidance schedule 'cos'"):
    SamplerSettings(cfg_schedule="cos")


def test_guidance_combines_conditional_and_unconditional():
  from elm_jax.sampling.guidance import guide
  cond, uncond = jnp.full((2, 3), 2.0), jnp.full((2, 3), 0.5)
  out = guide(jnp.concatenate([cond, uncond]),
              SamplerSettings(cfg_scale=3.0, cfg_schedule="linear"), 1, 4)
  np.testing.assert_allclose(out, 0.5 + (1 + 2.0 * 2 / 4) * 1.5)


def test_top_k_and_top_p_filters():
  logits = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
  kept = lambda x: np.isfinite(np.asarray(x))[0].tolist()  # noqa: E731
  assert kept(top_k_filter(logits, 2)) == [True, True, False, False, False]
  assert kept(top_k_filter(logits, 0)) == [True] * 5
  # 0.5 < 0.6 -> add 0.2 (0.7 >= 0.6): keep two.
  assert kept(top_p_filter(logits, 0.6)) == [True, True, False, False, False]
  assert kept(top_p_filter(logits, 0.5)) == [True, False, False, False, False]
  assert kept(top_p_filter(logits, 0.71)) == [True, True, True, False, False]
  hot = filter_logits(logits, temperature=0.5)
  np.testing.assert_allclose(hot, logits / 0.5)
  with pytest.raises(ValueError, match="temperature"):
    SamplerSettings(temperature=0.0)


@pytest.mark.slow
def test_maskgit_keeps_decoded_tokens_and_ends_unmasked():
  model = tiny(causal=False)
  params = random_params(model, seed=4)
  settings = SamplerSettings(cfg_scale=3.0, cfg_schedule="linear",
                             iterations=6, gumbel_scale=9.0)
  tokens, history = jax.jit(lambda r: masked.sample(
      model, params, jnp.array([2, 5]), r, settings, return_history=True))(
          jax.random.key(0))
  history = np.asarray(history)  # [T, B, L, N]
  is_masked = (history == model.mask_id).all(-1)  # [T, B, L]
  assert ((history == model.mask_id).any(-1) == is_masked).all()  # whole cells
  counts = [int(schedules.masked_after(t, 6, 16)) for t in range(6)]
  assert counts == [math.floor(16 * math.cos(math.pi / 2 * (t + 1) / 6) + 1e-4)
                    for t in range(5)] + [0]
  np.testing.assert_array_equal(is_masked.sum(-1), np.array([counts] * 2).T)
  for t in range(1, 6):  # a decoded cell never changes again
    decoded = ~is_masked[t - 1]
    np.testing.assert_array_equal(history[t][decoded], history[t - 1][decoded])
  assert not is_masked[-1].any()
  np.testing.assert_array_equal(tokens, history[-1])
  assert (np.asarray(tokens) < model.vocab_size).all()


def test_samplers_reject_the_wrong_model_kind():
  with pytest.raises(ValueError, match="causal"):
    autoregressive.sample(tiny(causal=False), {}, jnp.zeros(1, jnp.int32),
                          jax.random.key(0), SamplerSettings())
  with pytest.raises(ValueError, match="MLM"):
    masked.sample(tiny(), {}, jnp.zeros(1, jnp.int32), jax.random.key(0),
                  SamplerSettings())
