"""Checkpoints of freshly initialised runs, saved as training would save them."""

import json

import jax

from config_loading import get_config
from elm_jax import checkpointing, sharding
from elm_jax.train.stages import make_stage


def save_random_run(config, workdir: str, step: int = 1) -> str:
  """Saves a freshly initialised run of `config` as a training run would."""
  state = sharding.unbox(jax.jit(make_stage(config).init)(jax.random.PRNGKey(0)))
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save(step, state, None, json.loads(config.to_json_best_effort()))
  ckpt.close()
  return workdir


def save_tiny_generator(stage_name: str, tokenizer_dir: str, workdir: str) -> str:
  """A random-weight configs/<ar|mlm>.py:tiny run (2-4 split) over the tokenizer."""
  config = get_config(stage_name, "tiny,split=2-4")
  config.tokenizer.checkpoint = tokenizer_dir
  return save_random_run(config, workdir, step=3)
