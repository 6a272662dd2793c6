"""The tokenizer stage: autoencoder + LPIPS + PatchGAN, as a loop Stage.

Generator loss = L1 (or L2) + perceptual_weight * LPIPS + quantizer loss
               + [step >= disc_start] * gan_weight * lambda * (-mean D(x_hat)),
with lambda = ||dL_rec/dW|| / ||dL_gan/dW|| clamped to adaptive_max, W the
decoder's last conv kernel (VQGAN's adaptive weight). The autoencoder is
differentiated once: the two losses' gradients w.r.t. the reconstruction are
combined first and pulled back through a single VJP; the gradients w.r.t. W
needed for lambda come from the last conv alone.
Discriminator loss = [step >= disc_start] * hinge(D(x), D(sg(x_hat))).
`train_step` composes the pieces: `_forward`, `_recon_loss`,
`_gan_generator_loss`, `_adaptive_gan_weight`, `_discriminator_step`,
`_autoencoder_step`.
"""

import os
from typing import Any, Iterator

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from elm_jax import sharding
from elm_jax.data import pipeline
from elm_jax.evaluation import extractor as inception_extractor
from elm_jax.evaluation import fid, inception, recon
from elm_jax.models import discriminator as disc_lib
from elm_jax.models.bae import build_autoencoder
from elm_jax.models.perceptual import LPIPS, load_lpips_params
from elm_jax.train import eval_means, optim
from elm_jax.train.state import TrainState

def to_unit(images: jax.Array) -> jax.Array:
  """uint8 [B, H, W, C] -> float32 in [0, 1]."""
  return images.astype(jnp.float32) / 255.0


def to_uint8(images: jax.Array) -> jax.Array:
  return jnp.clip(jnp.round(images * 255.0), 0, 255).astype(jnp.uint8)


def conv_kernel_grad(inputs: jax.Array, kernel: jax.Array,
                     cotangent: jax.Array) -> jax.Array:
  """d<cotangent, conv(inputs, kernel)>/d kernel for a stride-1 SAME conv."""
  def apply(k):
    return jax.lax.conv_general_dilated(
        inputs.astype(jnp.float32), k, (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.vjp(apply, kernel.astype(jnp.float32))[1](cotangent)[0]


class TokenizerStage:
  """Trains an `Autoencoder` (binary, VQ or LFQ) on images."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model = build_autoencoder(config.model)
    self.loss = config.loss
    self.use_gan = config.loss.gan_weight > 0
    self.use_lpips = config.loss.perceptual_weight > 0
    self.eval_lpips = config.eval.get("lpips", True)
    self.inception_params = config.eval.get("inception_params", "")
    if not self.inception_params:
      logging.info("rFID skipped: config.eval.inception_params is empty (convert the FID "
                   "Inception with `python -m elm_jax.evaluation.convert_inception`).")
    elif not os.path.isfile(self.inception_params):  # before training, not at its end
      raise FileNotFoundError(
          f"config.eval.inception_params={self.inception_params!r} is not a file; convert "
          "the FID Inception with `python -m elm_jax.evaluation.convert_inception "
          "--out=PATH`, or leave the field empty to skip rFID.")
    self.disc = disc_lib.PatchDiscriminator(**config.loss.disc)
    self.lpips = LPIPS()
    self.tx_ae = optim.make_optimizer(**config.optim, total_steps=config.total_steps)
    o = config.optim
    self.schedule = optim.schedule(o.lr, o.get("warmup_steps", 0),
                                   o.get("decay", "constant"), config.total_steps,
                                   o.get("final_fraction", 0.0))
    self.tx_disc = optim.make_optimizer(**config.disc_optim,
                                        total_steps=config.total_steps)
    size = config.data.image_size
    self._dummy = jnp.zeros((1, size, size, 3), jnp.float32)

  # ---------------------------------------------------------------- state
  def init(self, rng: jax.Array) -> TrainState:
    r_ae, r_q, r_d = jax.random.split(rng, 3)
    ae = self.model.init({"params": r_ae, "quantize": r_q}, self._dummy)["params"]
    params, opt_state, model_state = {"ae": ae}, {"ae": self.tx_ae.init(ae)}, {}
    if self.use_gan:
      variables = self.disc.init(r_d, self._dummy, train=False)
      params["disc"] = variables["params"]
      opt_state["disc"] = self.tx_disc.init(variables["params"])
      model_state["disc"] = variables["batch_stats"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=opt_state, ema_params=ae,
                      model_state=model_state, rng=rng)

  def frozen(self) -> Any:
    frozen = {}
    if self.use_lpips or self.eval_lpips:
      frozen["lpips"] = load_lpips_params(self.loss.lpips_weights or None)
    if self.inception_params:
      frozen["inception"] = inception.load_params(self.inception_params)
    return frozen

  # ---------------------------------------------------------------- data
  def train_loader(self):
    return pipeline.loader_from_config(self.config.data,
                                       self.config.data.train_split, True,
                                       self.config.batch_size, self.config.seed)

  def eval_batches(self, full: bool = True) -> Iterator[dict]:
    loader = pipeline.loader_from_config(
        self.config.data, self.config.data.eval_split, False,
        self.config.eval.batch_size, self.config.seed)
    return pipeline.eval_pass(loader, self.config.eval, full)

  # ---------------------------------------------------------------- losses
  def _recon_loss(self, images, x_hat, frozen):
    """Pixel + perceptual loss of the batch (a mean) and its parts."""
    diff = images - x_hat
    pixel = (jnp.mean(jnp.abs(diff)) if self.loss.pixel == "l1"
             else jnp.mean(jnp.square(diff)))
    perceptual = jnp.zeros((), jnp.float32)
    if self.use_lpips:
      perceptual = jnp.mean(self.lpips.apply({"params": frozen["lpips"]},
                                             images, x_hat))
    total = self.loss.pixel_weight * pixel + self.loss.perceptual_weight * perceptual
    return total, {"pixel": pixel, "lpips": perceptual}

  def _forward(self, ae_params, images, rng):
    """The autoencoder in train mode, for jax.vjp: -> ((x_hat, quantizer
    loss), (quantizer output, the decoder's last conv input))."""
    (x_hat, q), inter = self.model.apply(
        {"params": ae_params}, images, train=True, rngs={"quantize": rng},
        mutable=["intermediates"])
    last_in = inter["intermediates"]["decoder"]["conv_out_input"][0]
    return (x_hat, q.loss), (q, last_in)

  def _gan_generator_loss(self, disc_vars, x_hat):
    """-mean D(x_hat) and its gradient w.r.t. x_hat."""
    def loss(x):
      logits, _ = self.disc.apply(disc_vars, x, train=True, mutable=["batch_stats"])
      return disc_lib.generator_loss(logits)
    return jax.value_and_grad(loss)(x_hat)

  def _adaptive_gan_weight(self, ae_params, last_in, g_rec, g_gan):
    """VQGAN's lambda = ||dL_rec/dW|| / ||dL_gan/dW|| (clamped), W the
    decoder's last conv kernel, from that conv alone."""
    kernel = ae_params["decoder"]["conv_out"]["kernel"]
    return disc_lib.adaptive_weight(conv_kernel_grad(last_in, kernel, g_rec),
                                    conv_kernel_grad(last_in, kernel, g_gan),
                                    self.loss.adaptive_max)

  def _discriminator_step(self, disc_params, disc_opt, batch_stats, images,
                          x_hat, on):
    """One hinge-loss update of the discriminator on real | sg(fake) ->
    (params, optimizer state, batch stats, metrics)."""
    def loss(dp):
      both = jnp.concatenate([images, jax.lax.stop_gradient(x_hat)])
      logits, new = self.disc.apply({"params": dp, "batch_stats": batch_stats},
                                    both, train=True, mutable=["batch_stats"])
      real, fake = jnp.split(logits, 2)
      return on * disc_lib.hinge_d_loss(real, fake), (new["batch_stats"], real, fake)

    (d_loss, (stats, real, fake)), grads = jax.value_and_grad(
        loss, has_aux=True)(disc_params)
    updates, disc_opt = self.tx_disc.update(grads, disc_opt, disc_params)
    metrics = {"loss/disc": d_loss, "gan/logits_real": jnp.mean(real),
               "gan/logits_fake": jnp.mean(fake)}
    return optax.apply_updates(disc_params, updates), disc_opt, stats, metrics

  def _autoencoder_step(self, ae_params, ae_opt, grads):
    """One optimizer update of the autoencoder -> (params, optimizer state)."""
    updates, ae_opt = self.tx_ae.update(grads, ae_opt, ae_params)
    return optax.apply_updates(ae_params, updates), ae_opt

  def train_step(self, state: TrainState, batch: dict, frozen: Any
                 ) -> tuple[TrainState, dict]:
    """The autoencoder is differentiated once: the reconstruction and GAN
    losses' gradients w.r.t. x_hat are combined, then pulled back."""
    images = to_unit(batch["image"])  # [B, H, W, 3]
    r_q, _ = jax.random.split(state.step_rng())
    (x_hat, q_loss), pullback, (q, last_in) = jax.vjp(
        lambda p: self._forward(p, images, r_q), state.params["ae"], has_aux=True)
    (rec, rec_parts), g_rec = jax.value_and_grad(
        self._recon_loss, argnums=1, has_aux=True)(images, x_hat, frozen)
    m = {"loss/rec": rec, "loss/quantizer": q_loss,
         **{f"loss/{k}": v for k, v in rec_parts.items()},
         **{f"quantizer/{k}": v for k, v in q.metrics.items()}}
    params, opt_state = dict(state.params), dict(state.opt_state)
    model_state = dict(state.model_state)
    cotangent, total = g_rec, rec + q_loss
    if self.use_gan:
      on = (state.step >= self.loss.disc_start).astype(jnp.float32)
      g_loss, g_gan = self._gan_generator_loss(
          {"params": params["disc"], "batch_stats": model_state["disc"]}, x_hat)
      lam = self._adaptive_gan_weight(params["ae"], last_in, g_rec, g_gan)
      weight = on * self.loss.gan_weight * lam
      cotangent, total = g_rec + weight * g_gan, total + weight * g_loss
      (params["disc"], opt_state["disc"], model_state["disc"],
       d_metrics) = self._discriminator_step(params["disc"], opt_state["disc"],
                                             model_state["disc"], images, x_hat, on)
      m.update({"loss/gan_generator": g_loss, "gan/adaptive_weight": lam,
                **d_metrics})

    (ae_grads,) = pullback((cotangent, jnp.ones((), jnp.float32)))
    params["ae"], opt_state["ae"] = self._autoencoder_step(
        params["ae"], opt_state["ae"], ae_grads)
    ema = optim.ema_update(state.ema_params, params["ae"], state.step,
                           self.config.ema.decay, self.config.ema.every)
    m.update({"loss/total": total,
              "psnr": jnp.mean(recon.psnr(images, jnp.clip(x_hat, 0, 1))),
              "grad_norm": optax.tree.norm(ae_grads),
              "learning_rate": self.schedule(state.step)})
    if q.bits is not None:
      stats = recon.BitStats.from_bits(q.bits)
      m["code_usage"], m["bit_entropy"] = stats.usage(), stats.mean_entropy()
    else:
      m["code_usage"] = recon.codebook_usage(q.ids, self.model.codebook_size)
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state, ema_params=ema,
                              model_state=model_state)
    return new_state, m

  # ---------------------------------------------------------------- eval
  def _eval_step(self, ae_params, batch, frozen):
    images = to_unit(batch["image"])
    mask = batch["mask"]  # [B]
    x_hat, q = self.model.apply({"params": ae_params}, images, train=False)
    x_hat = jnp.clip(x_hat, 0.0, 1.0)
    per_example = {"psnr": recon.psnr(images, x_hat),
                   "ssim": recon.ssim(images, x_hat)}
    if self.eval_lpips:
      per_example["lpips"] = self.lpips.apply({"params": frozen["lpips"]},
                                              images, x_hat)
    stats = (recon.BitStats.from_bits(q.bits, mask) if q.bits is not None else
             recon.CodeStats.from_ids(q.ids, self.model.codebook_size, mask))
    return eval_means.masked_sums(per_example, mask), stats, x_hat

  def evaluate(self, state, frozen, batches, mesh):
    params = state.ema_params if self.config.eval.use_ema else state.params["ae"]
    step = jax.jit(self._eval_step)
    totals, stats, first = eval_means.Totals(), None, None
    if "inception" in frozen:  # rFID: reconstructions vs inputs
      real = inception_extractor.FeatureExtractor(frozen["inception"], mesh)
      fake = inception_extractor.FeatureExtractor(frozen["inception"], mesh)
    for local in batches:
      batch = sharding.global_batch(local, mesh)
      sums, batch_stats, x_hat = step(params, batch, frozen)
      totals.add(sums)
      if "inception" in frozen:
        real.add(batch["image"], batch["mask"])
        fake.add(to_uint8(x_hat), batch["mask"])
      if first is None:
        n = min(8, x_hat.shape[0])
        first = np.concatenate([np.asarray(batch["image"][:n]),
                                np.asarray(to_uint8(x_hat[:n]))], axis=2)
        stats = batch_stats
      else:
        stats = stats.merge(batch_stats)
    out = totals.means(self.config.data)
    out["code_usage"] = float(stats.usage())
    if isinstance(stats, recon.BitStats):
      out["bit_entropy"] = float(stats.mean_entropy())
      out["bit_entropy_min"] = float(jnp.min(stats.entropy()))
    else:
      out["code_entropy"] = float(stats.entropy())
    if "inception" in frozen:
      r, f = real.stats("inputs"), fake.stats("reconstructions")
      out["rfid"] = fid.frechet_distance(f["mu"], f["sigma"], r["mu"], r["sigma"],
                                         f["features"])
    return out, {"inputs_vs_reconstructions": first}
