"""Quantizer maths: straight-through gradients, sampling, bit packing, VQ and LFQ."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from elm_jax.models import quantizers as q

B, H, W, D, K = 2, 3, 3, 8, 6


def _h(seed=0, shape=(B, H, W, D)):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


# ----------------------------------------------------------------------------- bits <-> ids


def test_bits_ids_round_trip():
  rng = np.random.default_rng(0)

  @jax.jit
  def round_trip(ids, bits):
    k = bits.shape[-1]
    to_bits = q.ids_to_bits(ids, k)
    return to_bits, q.bits_to_ids(to_bits), q.ids_to_bits(q.bits_to_ids(bits), k)

  for num_bits in range(1, 25):
    ids = rng.integers(0, 2 ** num_bits, size=(4, 5)).astype(np.int32)
    ids[0, :2] = [0, 2 ** num_bits - 1]
    rand_bits = rng.integers(0, 2, size=(7, num_bits)).astype(np.float32)
    bits, back, bits_again = round_trip(ids, rand_bits)
    assert bits.shape == (4, 5, num_bits) and bits.dtype == jnp.float32
    assert set(np.unique(np.asarray(bits))) <= {0.0, 1.0}
    assert back.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(back), ids, err_msg=f'K={num_bits}')
    np.testing.assert_array_equal(np.asarray(bits_again), rand_bits, err_msg=f'K={num_bits}')


def test_bit_order_msb_first():
  assert int(q.bits_to_ids(jnp.array([1.0, 0.0, 0.0]))) == 4
  assert int(q.bits_to_ids(jnp.array([0, 0, 1]))) == 1
  np.testing.assert_array_equal(np.asarray(q.ids_to_bits(jnp.int32(6), 4)), [0, 1, 1, 0])
  assert int(q.bits_to_ids(jnp.ones((24,)))) == 2 ** 24 - 1


def test_bits_to_ids_rejects_wide_codes():
  with pytest.raises(ValueError, match='31'):
    q.bits_to_ids(jnp.zeros((32,)))


# ----------------------------------------------------------------------------- binary


def _binary(deterministic=False, bits=K):
  model = q.BinaryQuantizer(bits=bits, emb_dim=D, deterministic=deterministic)
  params = model.init(jax.random.key(1), _h(), train=False)['params']
  return model, params


def test_binary_param_shapes():
  _, params = _binary()
  assert params['proj']['kernel'].shape == (D, K)
  assert params['proj']['bias'].shape == (K,)
  assert params['embed'].shape == (K, D)
  assert set(params) == {'proj', 'embed'}


def test_binary_straight_through_gradient_is_exact():
  model, params = _binary()
  w = jax.random.normal(jax.random.key(3), (B, H, W, D))
  logits = jax.random.normal(jax.random.key(4), (B, H, W, K)) * 2.0
  bits = q.bernoulli_bits(jax.random.key(5), jax.nn.sigmoid(logits))
  E = params['embed']

  def st(lg):
    p = jax.nn.sigmoid(lg)
    return jnp.sum(w * (q.straight_through(bits, p) @ E))

  def soft(lg):
    return jnp.sum(w * (jax.nn.sigmoid(lg) @ E))

  np.testing.assert_array_equal(np.asarray(jax.grad(st)(logits)),
                                np.asarray(jax.grad(soft)(logits)))

  # Through the module: grads w.r.t. h of z_q and of probs @ E are identical.
  h = _h(7)
  rngs = {'quantize': jax.random.key(8)}

  def via_zq(h_):
    return jnp.sum(w * model.apply({'params': params}, h_, train=True, rngs=rngs).z_q)

  def via_probs(h_):
    out = model.apply({'params': params}, h_, train=True, rngs=rngs)
    return jnp.sum(w * (out.probs @ params['embed']))

  np.testing.assert_array_equal(np.asarray(jax.grad(via_zq)(h)),
                                np.asarray(jax.grad(via_probs)(h)))
  # and the gradient also reaches E
  g_e = jax.grad(lambda p_: jnp.sum(
      w * model.apply({'params': p_}, h, train=True, rngs=rngs).z_q))(params)['embed']
  assert float(jnp.abs(g_e).sum()) > 0


def test_binary_bits_are_exact_and_forward_is_bits_at_E():
  model, params = _binary()
  out = model.apply({'params': params}, _h(), train=True, rngs={'quantize': jax.random.key(2)})
  bits = np.asarray(out.bits)
  assert set(np.unique(bits)) <= {0.0, 1.0}
  np.testing.assert_array_equal(np.asarray(out.z_q),
                                np.asarray(out.bits @ params['embed']))
  np.testing.assert_array_equal(np.asarray(out.ids), np.asarray(q.bits_to_ids(out.bits)))
  assert out.ids.dtype == jnp.int32 and out.ids.shape == (B, H, W)
  assert float(out.loss) == 0.0
  np.testing.assert_allclose(float(out.metrics['codebook_loss']),
                             float(jnp.mean(out.probs * (1 - out.probs))), rtol=1e-6)


def test_binary_threshold_is_strict():
  np.testing.assert_array_equal(
      np.asarray(q.threshold_bits(jnp.array([0.5, 0.5000001, 0.4999999, 1.0, 0.0]))),
      [0.0, 1.0, 0.0, 1.0, 0.0])
  model, params = _binary(deterministic=True)
  zero = jax.tree.map(jnp.zeros_like, params)  # logits 0 -> p exactly 0.5
  zero['embed'] = params['embed']
  for train in (True, False):
    out = model.apply({'params': zero}, _h(), train=train)
    np.testing.assert_array_equal(np.asarray(out.probs), 0.5)
    np.testing.assert_array_equal(np.asarray(out.bits), 0.0)


def test_binary_eval_is_threshold_and_dequantize_matches():
  model, params = _binary()
  out = model.apply({'params': params}, _h(), train=False)  # no rng needed in eval
  np.testing.assert_array_equal(np.asarray(out.bits), np.asarray(out.probs > 0.5))
  deq = model.apply({'params': params}, out.bits, method=model.dequantize)
  np.testing.assert_array_equal(np.asarray(deq), np.asarray(out.z_q))


def test_bernoulli_mean_matches_probs():
  p = jnp.array([0.0, 0.05, 0.3, 0.5, 0.8, 1.0])
  samples = q.bernoulli_bits(jax.random.key(0), jnp.broadcast_to(p, (20000, 6)))
  mean = np.asarray(samples.mean(axis=0))
  std = np.sqrt(np.asarray(p * (1 - p)) / 20000)
  assert np.all(np.abs(mean - np.asarray(p)) <= 5 * std + 1e-7), mean
  assert mean[0] == 0.0 and mean[-1] == 1.0


def test_binary_sampling_determinism_and_rng_required():
  model, params = _binary()
  h = _h()
  a = model.apply({'params': params}, h, train=True, rngs={'quantize': jax.random.key(9)})
  b = model.apply({'params': params}, h, train=True, rngs={'quantize': jax.random.key(9)})
  c = model.apply({'params': params}, h, train=True, rngs={'quantize': jax.random.key(10)})
  np.testing.assert_array_equal(np.asarray(a.bits), np.asarray(b.bits))
  assert not np.array_equal(np.asarray(a.bits), np.asarray(c.bits))
  with pytest.raises(ValueError, match='quantize'):
    model.apply({'params': params}, h, train=True)
  det, det_params = _binary(deterministic=True)
  d1 = det.apply({'params': det_params}, h, train=True)  # no rng needed
  np.testing.assert_array_equal(np.asarray(d1.bits), np.asarray(d1.probs > 0.5))


def test_binary_rejects_bad_input():
  model, params = _binary()
  with pytest.raises(ValueError, match='NHWC'):
    model.apply({'params': params}, jnp.zeros((B, H, W, D + 1)), train=False)


# ----------------------------------------------------------------------------- VQ

C, CD = 16, 4


def _vq(**kw):
  model = q.VectorQuantizer(codebook_size=C, code_dim=CD, emb_dim=D, **kw)
  params = model.init(jax.random.key(1), _h(), train=False)['params']
  return model, params


def test_vq_picks_nearest_code():
  model, params = _vq()
  h = _h(3)
  out = model.apply({'params': params}, h, train=True)
  k, b = np.asarray(params['quant_proj']['kernel']), np.asarray(params['quant_proj']['bias'])
  z = np.asarray(h) @ k + b
  z = z / np.linalg.norm(z, axis=-1, keepdims=True)
  cb = np.asarray(params['embedding'])
  cb = cb / np.linalg.norm(cb, axis=-1, keepdims=True)
  dist = ((z[..., None, :] - cb) ** 2).sum(-1)  # brute force [B, H, W, C]
  np.testing.assert_array_equal(np.asarray(out.ids), dist.argmin(-1))
  assert out.ids.dtype == jnp.int32 and out.bits is None and out.probs is None
  deq = model.apply({'params': params}, out.ids, method=model.dequantize)
  np.testing.assert_array_equal(np.asarray(deq), np.asarray(out.z_q))
  used = len(np.unique(dist.argmin(-1))) / C
  np.testing.assert_allclose(float(out.metrics['codebook_usage']), used)


@pytest.mark.slow
def test_vq_straight_through_reaches_encoder_and_codebook():
  model, params = _vq()
  h = _h(4)
  w = jax.random.normal(jax.random.key(5), (B, H, W, D))
  g_h = jax.grad(lambda h_: jnp.sum(w * model.apply({'params': params}, h_,
                                                    train=True).z_q))(h)
  assert float(jnp.abs(g_h).sum()) > 0
  g_p = jax.grad(lambda p_: model.apply({'params': p_}, h, train=True).loss)(params)
  assert float(jnp.abs(g_p['embedding']).sum()) > 0
  assert float(jnp.abs(g_p['quant_proj']['kernel']).sum()) > 0
  # the decoder-side gradient does not move the codebook (only the VQ loss does)
  g_dec = jax.grad(lambda p_: jnp.sum(w * model.apply({'params': p_}, h,
                                                      train=True).z_q))(params)
  np.testing.assert_array_equal(np.asarray(g_dec['embedding']), 0.0)


@pytest.mark.parametrize('entropy_weight', [0.0, 0.1])
def test_vq_loss_decreases(entropy_weight):
  model, params = _vq(entropy_weight=entropy_weight)
  h = _h(6)
  opt = optax.adam(1e-2)
  state = opt.init(params)

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(lambda p_: model.apply({'params': p_}, h, train=True).loss)(p)
    upd, s = opt.update(g, s, p)
    return optax.apply_updates(p, upd), s, loss

  losses = []
  for _ in range(30):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0], losses


def test_vq_entropy_terms_direction():
  # one-hot-like affinities: spread over codes vs all on one code
  spread = -10.0 * (1.0 - jnp.eye(8))
  collapsed = -10.0 * (1.0 - jnp.eye(8)[jnp.zeros(8, jnp.int32)])
  ps, bs = q.vq_entropy_terms(spread, 1.0)
  pc, bc = q.vq_entropy_terms(collapsed, 1.0)
  assert float(ps - bs) < float(pc - bc)
  np.testing.assert_allclose(float(bs), np.log(8), atol=1e-3)


# ----------------------------------------------------------------------------- LFQ


def _lfq(**kw):
  model = q.LookupFreeQuantizer(bits=K, emb_dim=D, **kw)
  params = model.init(jax.random.key(1), _h(), train=False)['params']
  return model, params


def test_lfq_sign_ids_and_dequantize():
  model, params = _lfq()
  h = _h(2)
  out = model.apply({'params': params}, h, train=False)
  z = np.asarray(h) @ np.asarray(params['proj']['kernel']) + np.asarray(params['proj']['bias'])
  np.testing.assert_array_equal(np.asarray(out.bits), (z >= 0).astype(np.float32))
  expected_ids = ((z >= 0).astype(np.int64) * (2 ** np.arange(K - 1, -1, -1))).sum(-1)
  np.testing.assert_array_equal(np.asarray(out.ids), expected_ids)
  deq = model.apply({'params': params}, out.bits, method=model.dequantize)
  np.testing.assert_array_equal(np.asarray(deq), np.asarray(out.z_q))
  assert out.z_q.shape == (B, H, W, D)
  assert set(params) == {'proj', 'post_proj'}


def test_lfq_zero_maps_to_plus_one():
  model, params = _lfq()
  zero = jax.tree.map(jnp.zeros_like, params)
  out = model.apply({'params': zero}, _h(), train=True)
  np.testing.assert_array_equal(np.asarray(out.bits), 1.0)
  assert int(out.ids[0, 0, 0]) == 2 ** K - 1


def test_lfq_straight_through_gradient():
  model, params = _lfq()
  h = _h(3)
  w = jax.random.normal(jax.random.key(4), (B, H, W, D))

  def f(h_):
    return jnp.sum(w * model.apply({'params': params}, h_, train=True).z_q)

  kernel, post = params['proj']['kernel'], params['post_proj']['kernel']
  expected = (w @ post.T) @ kernel.T  # identity through the quantizer
  np.testing.assert_allclose(np.asarray(jax.grad(f)(h)), np.asarray(expected),
                             rtol=1e-5, atol=1e-6)


def test_lfq_entropy_penalty_prefers_spread_codes():
  k = 4
  all_codes = np.asarray(q.ids_to_bits(jnp.arange(2 ** k), k)) * 2.0 - 1.0  # [16, 4]
  spread = jnp.asarray(all_codes * 0.5)
  collapsed = jnp.asarray(np.broadcast_to(all_codes[5] * 0.5, all_codes.shape))
  ps, cs = q.lfq_entropy_terms(spread, 0.01)
  pc, cc = q.lfq_entropy_terms(collapsed, 0.01)
  assert float(ps - cs) < float(pc - cc)
  np.testing.assert_allclose(float(cs), k * np.log(2), rtol=1e-4)  # balanced (eps in logs)
  np.testing.assert_allclose(float(cc), 0.0, atol=1e-3)
  np.testing.assert_allclose(float(ps), 0.0, atol=1e-6)            # confident samples
  # undecided samples (z = 0) have maximal per-sample entropy
  p0, _ = q.lfq_entropy_terms(jnp.zeros((3, k)), 0.01)
  np.testing.assert_allclose(float(p0), k * np.log(2), rtol=1e-6)


def test_lfq_factorised_entropy_matches_brute_force():
  k, t = 3, 0.5
  z = jax.random.normal(jax.random.key(0), (10, k)) * 0.3
  codes = np.asarray(q.ids_to_bits(jnp.arange(2 ** k), k)) * 2.0 - 1.0  # [8, 3]
  dist = ((np.asarray(z)[:, None, :] - codes) ** 2).sum(-1)             # [10, 8]
  logits = -dist / t
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  per_sample_bf = -(probs * np.log(probs)).sum(-1).mean()
  avg = probs.mean(0)
  joint_bf = -(avg * np.log(avg)).sum()
  ps, cs = q.lfq_entropy_terms(z, t)
  np.testing.assert_allclose(float(ps), per_sample_bf, rtol=1e-5)
  assert float(cs) >= joint_bf - 1e-4  # factorised batch entropy upper-bounds the joint


def test_lfq_loss_and_metrics_finite_with_grads():
  model, params = _lfq()
  h = _h(5)
  out = model.apply({'params': params}, h, train=True)
  assert np.isfinite(float(out.loss))
  for v in out.metrics.values():
    assert np.isfinite(float(v))
  g = jax.grad(lambda p_: model.apply({'params': p_}, h, train=True).loss)(params)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g))
  assert out.probs.shape == (B, H, W, K)
