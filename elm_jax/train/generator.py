"""What the AR and MLM stages share: data, frozen tokenizer, optimizer, eval.

Images come from the same pipeline as the tokenizer stage and the frozen
tokenizer turns them into sub-code ids inside the jitted step; or, with
config.data.tokens set, batches carry the bit probabilities that
`elm_jax.tokenize` stored. Either way a BAE's bits are drawn from the
Bernoulli probabilities every time (ELM's augmentation); VQ and LFQ codes
are deterministic (elm_jax.train.frozen_tokenizer). A subclass supplies
`loss(params, ids, labels, rng, train) -> (loss [B], aux {name: [B]})`,
per-example values: training takes their means, evaluation their masked sums.
Every evaluation also samples a class-conditional grid (config.eval.sample_grid,
a fixed seed so that grids compare across steps) for TensorBoard.
"""

import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from elm_jax import generator_config, sharding
from elm_jax.config_error import ConfigError
from elm_jax.data import pipeline, token_pipeline
from elm_jax.sampling import autoregressive, masked
from elm_jax.sampling import images as images_lib
from elm_jax.sampling.settings import SamplerSettings
from elm_jax.train import eval_means, frozen_tokenizer, optim
from elm_jax.train.state import TrainState


class GeneratorStage:
  """Base of ARStage and MLMStage."""

  causal: bool = True

  def __init__(self, config: ml_collections.ConfigDict,
               tokenizer: frozen_tokenizer.FrozenTokenizer | None = None):
    """tokenizer: given (e.g. abstract, for elm_jax.aot) instead of loaded
    from config.tokenizer.checkpoint."""
    self.config = config
    self.tokenizer = tokenizer or frozen_tokenizer.load(config.tokenizer.checkpoint)
    k = self.tokenizer.bits
    self.model = generator_config.build_transformer(
        config, self.tokenizer.codes,
        f"the tokenizer in {config.tokenizer.checkpoint}")
    self.num_subcodes = self.model.num_subcodes
    self.patch = generator_config.patch_of(config)
    self.length = self.model.grid_size ** 2
    size = self.tokenizer.config.data.image_size
    if size != config.data.image_size:
      raise ConfigError(
          f"config.data.image_size={config.data.image_size} but the tokenizer "
          f"in {config.tokenizer.checkpoint} was trained on {size}x{size}.")
    self.schedule = optim.schedule(
        config.optim.lr, config.optim.warmup_steps, config.optim.decay,
        config.total_steps)
    self.tx = optim.make_optimizer(**config.optim, total_steps=config.total_steps)
    self.tokens_per_step = config.batch_size * self.length * self.num_subcodes
    self._grid_fn = None  # the jitted eval.sample_grid sampler, made once
    self.tokens_dir = config.data.get("tokens", "")
    if self.tokens_dir:
      quantizer = self.tokenizer.model.quantizer
      if quantizer != "binary":
        raise ConfigError(
            f"config.data.tokens={self.tokens_dir!r}: stored codes are a BAE's "
            f"bit probabilities, but this tokenizer's model.quantizer is "
            f"{quantizer!r}; leave config.data.tokens empty (the encoder then "
            "runs in the step).")
      meta = token_pipeline.read_meta(self.tokens_dir)
      if (meta["bits"], meta["grid_size"]) != (k, self.tokenizer.grid_size):
        raise ConfigError(
            f"config.data.tokens={self.tokens_dir!r} holds {meta['bits']}-bit "
            f"codes on a {meta['grid_size']}^2 grid; the tokenizer makes {k}-bit "
            f"codes on {self.tokenizer.grid_size}^2. Tokenize with this tokenizer.")
      if tokenizer is None:  # loaded from config.tokenizer.checkpoint
        self._check_tokens_tokenizer(meta)

  def _check_tokens_tokenizer(self, meta: dict) -> None:
    """The stored codes must come from config.tokenizer.checkpoint (the
    decoder that sampling will use), at the same training step."""
    source, step = meta.get("tokenizer"), meta.get("step")
    here = self.config.tokenizer.checkpoint
    moved = source is not None and not os.path.isdir(source)
    other = (source is not None and not moved
             and not os.path.samefile(source, here))
    if other or (step is not None and step != self.tokenizer.step):
      raise ConfigError(
          f"config.data.tokens={self.tokens_dir!r} was tokenized by {source} at "
          f"step {step}, but config.tokenizer.checkpoint={here!r} is at step "
          f"{self.tokenizer.step}{' in another directory' if other else ''}; "
          "the sampler would decode with a different tokenizer. Tokenize again "
          "with this one (python -m elm_jax.tokenize).")
    if moved:
      logging.warning("config.data.tokens was tokenized by %s, which no longer "
                      "exists; assuming it moved to %s (same step %s).",
                      source, here, step)

  # ---------------------------------------------------------------- state
  def init(self, rng: jax.Array) -> TrainState:
    ids = jnp.zeros((1, self.length, self.num_subcodes), jnp.int32)
    params = self.model.init({"params": rng}, self._inputs(ids),
                             jnp.zeros((1,), jnp.int32))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params), ema_params=params,
                      model_state={}, rng=rng)

  def _inputs(self, ids):
    return ids[:, :-1] if self.causal else ids

  def frozen(self) -> Any:
    return {} if self.tokens_dir else {"tokenizer": self.tokenizer.params}

  # ---------------------------------------------------------------- data
  def _loader(self, split: str, train: bool, batch_size: int):
    if self.tokens_dir:
      return token_pipeline.make_loader(self.tokens_dir, split, batch_size,
                                        train, self.config.seed)
    return pipeline.loader_from_config(self.config.data, split, train,
                                       batch_size, self.config.seed)

  def train_loader(self):
    return self._loader(self.config.data.train_split, True, self.config.batch_size)

  def eval_batches(self, full: bool = True) -> Iterator[dict]:
    loader = self._loader(self.config.data.eval_split, False,
                          self.config.eval.batch_size)
    return pipeline.eval_pass(loader, self.config.eval, full)

  def tokenize(self, frozen, batch, rng):
    """A batch -> ids [B, L, n]; Bernoulli bits unless rng is None."""
    if "probs" in batch:  # pre-tokenized: uint8 p * 255
      probs = batch["probs"].astype(jnp.float32) / 255.0
      return frozen_tokenizer.sample_subcodes(probs, self.num_subcodes, rng,
                                              self.patch)
    return frozen_tokenizer.encode_subcodes(
        self.tokenizer.model, frozen["tokenizer"], batch["image"],
        self.num_subcodes, rng, self.patch)

  # ---------------------------------------------------------------- steps
  def loss(self, params, ids, labels, rng, train: bool):
    raise NotImplementedError

  def train_step(self, state: TrainState, batch: dict, frozen: Any):
    r_tok, r_loss = jax.random.split(state.step_rng())
    ids = self.tokenize(frozen, batch,
                        r_tok if self.config.tokenizer.bernoulli else None)

    def objective(params):
      loss, aux = self.loss(params, ids, batch["label"], r_loss, True)
      return loss.mean(), jax.tree.map(jnp.mean, aux)

    (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = optim.ema_update(state.ema_params, params, state.step,
                           self.config.ema.decay, self.config.ema.every)
    metrics = {"loss": loss, "perplexity": jnp.exp(loss),
               "grad_norm": optax.tree.norm(grads),
               "learning_rate": self.schedule(state.step), **aux}
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state, ema_params=ema), metrics

  def _eval_step(self, params, batch, frozen):
    ids = self.tokenize(frozen, batch, None)
    loss, aux = self.loss(params, ids, batch["label"], jax.random.PRNGKey(0),
                          False)
    return eval_means.masked_sums({"loss": loss, **aux}, batch["mask"])

  def evaluate(self, state, frozen, batches, mesh):
    params = state.ema_params if self.config.eval.use_ema else state.params
    step = jax.jit(self._eval_step)
    totals = eval_means.Totals()
    for local in batches:
      totals.add(step(params, sharding.global_batch(local, mesh), frozen))
    out = totals.means(self.config.data)
    out["perplexity"] = float(np.exp(out["loss"]))
    grid = self.config.eval.get("sample_grid", {})
    if not (grid and grid.get("classes", 0) and grid.get("per_class", 0)):
      return out, {}
    tok_params = frozen.get("tokenizer", self.tokenizer.params)
    return out, {"samples": self.sample_grid(params, tok_params, mesh)}

  def sample_grid(self, params, tok_params, mesh) -> np.ndarray:
    """config.eval.sample_grid: `classes` rows (spread over the classes) of
    `per_class` samples at CFG `cfg_scale`, seed `seed` -> uint8 [1, H', W', 3]."""
    g = self.config.eval.sample_grid
    num_classes = self.model.num_classes
    classes = np.linspace(0, num_classes - 1, min(g.classes, num_classes))
    labels = np.repeat(classes.round().astype(np.int32), g.per_class)
    if self._grid_fn is None:  # one compile per run
      settings = SamplerSettings(cfg_scale=g.cfg_scale)
      sample = autoregressive.sample if self.causal else masked.sample
      tok_model, patch = self.tokenizer.model, self.patch

      def grid_images(params, tok_params, labels):
        ids = sample(self.model, params, labels, jax.random.key(g.seed), settings)
        return images_lib.decode_tokens(tok_model, tok_params, ids, patch)

      self._grid_fn = jax.jit(grid_images,
                              out_shardings=sharding.replicated(mesh))
    images = np.asarray(self._grid_fn(params, tok_params, labels))
    return images_lib.tile(images, len(classes))[None]
