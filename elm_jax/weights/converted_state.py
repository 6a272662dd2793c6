"""The TrainState of a converted run: imported weights in the stage's tree.

`bae_state` (ELM's BAE, LlamaGen's VQ) and `generator_state` (ELM AR / MLM,
LlamaGen GPT) build exactly what the stage would initialise, with the
imported weights as params and EMA params and a fresh optimizer state; a
mis-shaped tensor is named with its PyTorch shape, the one expected and the
model's parameter.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from elm_jax import generator_config, sharding
from elm_jax.config_error import ConfigError
from elm_jax.tokens import Codes
from elm_jax.train import optim
from elm_jax.train.ar import ARStage
from elm_jax.train.bae import TokenizerStage
from elm_jax.train.mlm import MLMStage
from elm_jax.train.state import TrainState
from elm_jax.weights import (architecture, torch_bae, torch_llamagen,
                             torch_llamagen_vq)
from elm_jax.weights.torch_transformer import transformer_params_from_torch
from elm_jax.weights.tree_check import check_against

# Compiled once and run once: optimisation passes would cost more than they save.
_FAST_COMPILE = {"xla_backend_optimization_level": 0,
                 "xla_llvm_disable_expensive_passes": True}


def _fast_jit(fn):
  return jax.jit(fn, compiler_options=_FAST_COMPILE)


def _torch_layout(shape: tuple) -> tuple:
  """A conv kernel HWIO -> PyTorch's OIHW, a Dense kernel [in, out] -> [out, in]."""
  if len(shape) == 4:
    h, w, i, o = shape
    return (o, i, h, w)
  return tuple(reversed(shape)) if len(shape) == 2 else tuple(shape)


def _check_shapes(expected: Any, params: Any, sources: dict) -> None:
  want = {jax.tree_util.keystr(p): tuple(v.shape)
          for p, v in jax.tree_util.tree_leaves_with_path(expected)}
  bad = [f"PyTorch {sources.get(k, '?')!r} has shape "
         f"{_torch_layout(np.shape(v))}, expected {_torch_layout(want[k])} "
         f"(for the model's {k}, {want[k]})"
         for p, v in jax.tree_util.tree_leaves_with_path(params)
         if (k := jax.tree_util.keystr(p)) in want
         and tuple(np.shape(v)) != want[k]]
  if bad:
    raise ValueError("Mis-shaped tensors (check the architecture flags): "
                     + "; ".join(bad[:8]))


def _same_tree(abstract: Any, state: Any) -> None:
  """The converted state must be exactly what the stage would initialise."""
  if jax.tree.structure(abstract) != jax.tree.structure(state):
    raise RuntimeError("Internal error: the converted TrainState does not have "
                       "the stage's tree structure.")
  check_against(abstract, state, "converted state")
  for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(state)):
    if a.dtype != s.dtype:
      raise RuntimeError(f"Internal error: dtype {s.dtype} where the stage "
                         f"has {a.dtype}.")


def bae_state(sd: dict, config, step: int, kind: str = "elm-bae"):
  """(TrainState, stage) of a tokenizer run holding the imported autoencoder
  (ELM's BAE, or LlamaGen's VQ for kind llamagen-vq)."""
  arch = dict(config.model)
  stage = TokenizerStage(config)
  rng = jax.random.PRNGKey(config.seed)
  abstract = sharding.unbox(jax.eval_shape(stage.init, rng))
  layout = torch_llamagen_vq if kind == "llamagen-vq" else torch_bae
  params = (torch_llamagen_vq.vq_params_from_torch(sd, **arch)
            if kind == "llamagen-vq" else torch_bae.bae_params_from_torch(sd, **arch))
  _check_shapes(abstract.ema_params, params, layout.torch_sources(sd, **arch))
  ae = jax.tree.map(jnp.asarray, params)
  # As TokenizerStage.init, without compiling the autoencoder's forward; the
  # discriminator (not in ELM's release) starts fresh, as in training.
  r_disc = jax.random.split(rng, 3)[2]
  params, model_state = {"ae": ae}, {}
  opt_state = {"ae": _fast_jit(stage.tx_ae.init)(ae)}
  if "disc" in abstract.params:
    size = config.data.image_size
    disc = _fast_jit(lambda r: stage.disc.init(
        r, jnp.zeros((1, size, size, 3)), train=False))(r_disc)
    params["disc"], model_state["disc"] = disc["params"], disc["batch_stats"]
    opt_state["disc"] = _fast_jit(stage.tx_disc.init)(disc["params"])
  state = TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                     opt_state=opt_state, ema_params=ae,
                     model_state=model_state, rng=rng)
  _same_tree(abstract, state)
  return state, stage


def generator_state(kind: str, sd: dict, config, facts: dict, grid_size: int,
                    step: int, tok=None):
  """(TrainState, stage or None) of an AR / MLM run holding the imported model
  over the FrozenTokenizer `tok` (None: llamagen-gpt on a grid_size^2 grid)."""
  rng = jax.random.PRNGKey(config.seed)
  if tok is None:
    split = generator_config.split_of(config)
    if split is None:
      raise ConfigError(
          "split=auto follows a tokenizer; without --tokenizer pass "
          "--config=configs/ar.py:split=n-k (the file's: "
          "{}-{}).".format(*facts["split"].value))
    codes = Codes(grid_size, bits=split[0] * split[1])
  else:
    codes = tok.codes
  model = generator_config.build_transformer(config, codes)
  architecture.check_grid(facts, model.grid_size,
                          f"the tokenizer {config.tokenizer.checkpoint} makes"
                          if tok else "--grid_size gives")
  if "freqs_cis" in sd:
    torch_llamagen.check_freqs_cis(sd.pop("freqs_cis"), model.head_dim,
                                   model.rope_base)
  model_kw = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
              if f.name not in ("parent", "name")}
  params = jax.tree.map(jnp.asarray, transformer_params_from_torch(sd, **model_kw))
  stage, abstract = None, None
  if tok is not None:
    stage_class = MLMStage if kind == "elm-mlm" else ARStage
    stage = stage_class(config, tok)  # checks the split and the image size
    tx = stage.tx
    abstract = sharding.unbox(jax.eval_shape(stage.init, rng))
  else:  # llamagen-gpt without a tokenizer: bits and grid go into the config.
    with config.unlocked():
      config.model.bits, config.model.grid_size = codes.bits, grid_size
    tx = optim.make_optimizer(**config.optim, total_steps=config.total_steps)
  state = TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                     opt_state=_fast_jit(tx.init)(params), ema_params=params,
                     model_state={}, rng=rng)
  if abstract is not None:
    _same_tree(abstract, state)
  return state, stage
