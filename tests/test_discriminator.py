"""PatchGAN discriminator shapes, BatchNorm bookkeeping and the GAN loss terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elm_jax.models import discriminator as d


def _images(shape, seed=0):
  return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


def test_shapes_and_param_count_256():
  model = d.PatchDiscriminator()  # n_layers=3, ndf=64
  x = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
  variables = jax.eval_shape(lambda k, x_: model.init(k, x_, train=False),
                             jax.random.key(0), x)
  out = jax.eval_shape(lambda v, x_: model.apply(v, x_, train=False), variables, x)
  assert out.shape == (2, 30, 30, 1) and out.dtype == jnp.float32
  n_params = sum(np.prod(p.shape) for p in jax.tree.leaves(variables['params']))
  expected = (3 * 64 * 16 + 64) + (64 * 128 * 16 + 2 * 128) + (128 * 256 * 16 + 2 * 256) \
      + (256 * 512 * 16 + 2 * 512) + (512 * 16 + 1)
  assert n_params == expected == 2_765_633
  params = variables['params']
  assert set(params) == {'conv0', 'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3', 'conv_out'}
  assert 'bias' not in params['conv1'] and 'bias' in params['conv0']
  assert set(variables['batch_stats']) == {'bn1', 'bn2', 'bn3'}


@pytest.mark.slow
def test_forward_32_and_init_statistics():
  model = d.PatchDiscriminator(ndf=8)
  x = _images((2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  out = model.apply(variables, x, train=False)
  assert out.shape == (2, 2, 2, 1)
  assert np.all(np.isfinite(np.asarray(out)))
  p = variables['params']
  np.testing.assert_array_equal(np.asarray(p['conv0']['bias']), 0.0)
  np.testing.assert_array_equal(np.asarray(p['bn1']['bias']), 0.0)
  assert abs(float(p['bn3']['scale'].mean()) - 1.0) < 0.02
  assert abs(float(p['conv3']['kernel'].std()) - 0.02) < 0.003


def test_batch_stats_update_only_in_train():
  model = d.PatchDiscriminator(n_layers=2, ndf=8)
  x = _images((4, 32, 32, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  stats0 = variables['batch_stats']
  out, new = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert out.shape == (4, 6, 6, 1)  # 32 -> 16 -> 8 -> 7 -> 6
  for a, b in zip(jax.tree.leaves(stats0), jax.tree.leaves(new['batch_stats'])):
    assert not np.allclose(np.asarray(a), np.asarray(b))
  _, same = model.apply(variables, x, train=False, mutable=['batch_stats'])
  for a, b in zip(jax.tree.leaves(stats0), jax.tree.leaves(same['batch_stats'])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # momentum 0.9: new_mean = 0.9 * 0 + 0.1 * batch_mean
  mean = new['batch_stats']['bn1']['mean']
  assert float(jnp.abs(mean).max()) > 0


def test_rejects_bad_input():
  model = d.PatchDiscriminator(ndf=8)
  with pytest.raises(ValueError, match='B, H, W, 3'):
    model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)


def test_hinge_d_loss_values():
  real = jnp.array([2.0, 0.5, -1.0])   # relu(1 - r) = 0, 0.5, 2 -> mean 2.5/3
  fake = jnp.array([-2.0, 0.0, 1.0])   # relu(1 + f) = 0, 1, 2 -> mean 1
  np.testing.assert_allclose(float(d.hinge_d_loss(real, fake)), 0.5 * (2.5 / 3 + 1.0),
                             rtol=1e-6)
  # a perfect discriminator with margin has zero loss
  assert float(d.hinge_d_loss(jnp.full((2, 3, 3, 1), 1.5), jnp.full((2, 3, 3, 1), -1.0))) == 0
  np.testing.assert_allclose(float(d.generator_loss(fake)), 1.0 / 3, rtol=1e-6)


def test_adaptive_weight_formula_and_clamp():
  rec = jnp.array([3.0, 4.0])         # norm 5
  gan = jnp.array([0.0, 10.0])        # norm 10
  np.testing.assert_allclose(float(d.adaptive_weight(rec, gan)), 5.0 / (10.0 + 1e-4),
                             rtol=1e-6)
  np.testing.assert_allclose(float(d.adaptive_weight(rec, {'a': gan[:1], 'b': gan[1:]})),
                             5.0 / (10.0 + 1e-4), rtol=1e-6)
  assert float(d.adaptive_weight(rec, 0.1 * gan)) == 1.0             # clamped at max
  np.testing.assert_allclose(float(d.adaptive_weight(rec, 0.1 * gan, max_weight=1e4)),
                             5.0 / (1.0 + 1e-4), rtol=1e-6)
  assert float(d.adaptive_weight(jnp.zeros(2), gan)) == 0.0
  g = jax.grad(lambda s: d.adaptive_weight(s * rec, gan))(1.0)       # stop-gradient
  assert float(g) == 0.0
