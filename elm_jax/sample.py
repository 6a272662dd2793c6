"""Entry point: sample images from a trained generator.

  python -m elm_jax.sample --config=configs/sample.py[:variant] \
      --config.generator.checkpoint=GEN_WORKDIR --workdir=OUT

Writes OUT/grid.png (a row per class) and OUT/samples.npz (num_samples
class-balanced images under arr_0, labels under arr_1: the ADM evaluator's
layout). Every global batch is sharded over all devices of all processes and
stored in OUT/batches/ as soon as it is done (by process 0); running the
same command again resumes, skipping finished batches. On several hosts every
process runs the same command (the multi-process flags of elm_jax.main, or
none to detect SLURM / TPU); only process 0 reads and writes OUT.
"""

import math
import os
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from elm_jax import distributed
from elm_jax.bad_input import exit_on_bad_input, local_path, parse_flags
from elm_jax.sampling import sample_store


def validate(config) -> None:
  """Config errors that can be found before anything is loaded."""
  # deferred: jax-heavy; --help and bad flags need none of it
  from elm_jax.configs_lib import require
  require(bool(config.generator.checkpoint), "generator.checkpoint",
          "empty; pass the workdir of an AR or MLM run "
          "(--config.generator.checkpoint=DIR).")
  require(config.generator.get("dtype", "") in ("", "float32", "bfloat16",
                                                "float16"),
          "generator.dtype", f"{config.generator.get('dtype')!r}: expected "
          "float32, bfloat16, float16 or empty (the generator's own).")
  require(config.batch_size > 0, "batch_size", "must be positive.")
  require(config.num_samples >= 0, "num_samples", "must be >= 0.")
  require(config.grid.per_class >= 0 and config.grid.classes >= 0, "grid",
          "per_class and classes must be >= 0.")


def balanced_labels(num_samples: int, num_classes: int):
  """[0, 1, ..., C-1, 0, 1, ...]: N/C of each class, every batch mixed."""
  if num_samples % num_classes:
    raise ValueError(
        f"config.num_samples={num_samples} is not a multiple of the "
        f"{num_classes} classes; class-balanced sampling needs one "
        f"(e.g. {num_classes * math.ceil(num_samples / num_classes)}).")
  return np.arange(num_samples, dtype=np.int32) % num_classes


class Runner:
  """Jitted, sharded sampler + decoder for one generator and setting."""

  def __init__(self, config, gen, mesh, rules):
    # deferred: jax-heavy; --help and bad flags need none of it
    import jax
    import jax.numpy as jnp
    from elm_jax import sharding
    from elm_jax.sampling import autoregressive, masked
    from elm_jax.sampling.images import jit_decoder
    from elm_jax.sampling.settings import SamplerSettings

    self.gen, self.mesh = gen, mesh
    self.settings = SamplerSettings(**config.sampler)
    model = gen.model
    length = model.grid_size ** 2 - int(model.causal)
    abstract = jax.eval_shape(
        model.init, jax.random.key(0),
        jax.ShapeDtypeStruct((1, length, model.num_subcodes), jnp.int32),
        jax.ShapeDtypeStruct((1,), jnp.int32))["params"]
    param_sharding = sharding.tree_shardings(abstract, mesh, rules)
    self.params = sharding.place_from_host(gen.params, param_sharding)
    self.tok_params = sharding.place_from_host(gen.tokenizer.params,
                                               sharding.replicated(mesh))
    settings = self.settings
    shardings = dict(
        in_shardings=(param_sharding, sharding.batch_sharding(mesh, 1),
                      sharding.replicated(mesh)),
        out_shardings=sharding.batch_sharding(mesh, 3))
    if gen.stage == "ar":
      self.sampler = autoregressive.jit_sampler(
          model, settings, batch=config.batch_size, **shardings)
    else:
      self.sampler = jax.jit(
          lambda p, labels, rng: masked.sample(model, p, labels, rng, settings),
          **shardings)
    self.decoder = jit_decoder(
        gen.tokenizer.model, gen.patch,
        in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh, 3)),
        out_shardings=sharding.batch_sharding(mesh, 4))
    self.batch_size = config.batch_size

  def images(self, labels, rng):
    """labels: numpy [n] (same on every process) -> numpy uint8 [n, H, W, 3].

    Runs in chunks of exactly batch_size (the last one padded), so every
    call uses one compiled program; chunk i draws from fold_in(rng, i).
    """
    # deferred: jax-heavy; --help and bad flags need none of it
    import jax
    from jax.experimental import multihost_utils
    from elm_jax import sharding
    bs, out = self.batch_size, []
    for i, start in enumerate(range(0, len(labels), bs)):
      chunk = labels[start:start + bs]
      padded = np.concatenate([chunk, np.zeros(bs - len(chunk), chunk.dtype)])
      global_labels = jax.make_array_from_callback(
          padded.shape, sharding.batch_sharding(self.mesh, 1),
          lambda idx, padded=padded: padded[idx])
      ids = self.sampler(self.params, global_labels, jax.random.fold_in(rng, i))
      images = self.decoder(self.tok_params, ids)
      gathered = multihost_utils.process_allgather(images, tiled=True)
      out.append(np.asarray(gathered)[:len(chunk)])
    return np.concatenate(out)


def run(config, workdir: str) -> dict:
  """Samples the grid and the npz; returns {"grid": path, "samples": path}."""
  # deferred: jax-heavy; --help and bad flags need none of it
  import flax.linen as nn
  import jax
  from elm_jax import sharding, workdir_lock
  from elm_jax.sampling import generator_checkpoint, images as images_lib

  gen = generator_checkpoint.load(config.generator.checkpoint,
                                  config.generator.use_ema,
                                  config.tokenizer.checkpoint,
                                  config.generator.get("dtype", ""))
  num_classes = gen.model.num_classes
  labels = balanced_labels(config.num_samples, num_classes)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(config.batch_size, mesh)
  rules = sharding.rules_from_config(config)
  chief = jax.process_index() == 0
  # The decoder too: a tokenizer trained on (or another one) changes the images.
  tokenizer = config.tokenizer.checkpoint or gen.config.tokenizer.checkpoint
  settings = dict(generator=os.path.abspath(config.generator.checkpoint),
                  generator_step=gen.step, use_ema=config.generator.use_ema,
                  dtype=gen.config.model.dtype,
                  tokenizer=os.path.abspath(tokenizer),
                  tokenizer_step=gen.tokenizer.step,
                  seed=config.seed, batch_size=config.batch_size,
                  num_samples=config.num_samples, **dict(config.sampler))
  os.makedirs(workdir, exist_ok=True)
  # One sampler per workdir: two would interleave their shards.
  with workdir_lock.WorkdirLock(workdir):
    store = sample_store.SampleStore(workdir, settings) if chief else None
    out = {}
    root = jax.random.key(config.seed)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      runner = Runner(config, gen, mesh, rules)
      logging.info("Sampling %s step %d (%s) with %s", gen.stage, gen.step,
                   config.generator.checkpoint, runner.settings)
      if config.grid.per_class and config.grid.classes:
        rows = min(config.grid.classes, num_classes)
        classes = np.linspace(0, num_classes - 1, rows).round().astype(np.int32)
        grid_labels = np.repeat(classes, config.grid.per_class)
        grid = runner.images(grid_labels, jax.random.fold_in(root, 2**31 - 1))
        if chief:
          out["grid"] = os.path.join(workdir, sample_store.GRID)
          sample_store.write_png(out["grid"], images_lib.tile(grid, rows))
          logging.info("Wrote %s", out["grid"])
      if config.num_samples:
        out["samples"] = _sample_npz(config, runner, store, root, labels, chief)
    return out


def _sample_npz(config, runner, store, root, labels, chief):
  # deferred: jax-heavy; --help and bad flags need none of it
  import jax
  from jax.experimental import multihost_utils
  bs = config.batch_size
  num_batches = -(-config.num_samples // bs)
  done = np.array([chief and store.load_batch(i) is not None
                   for i in range(num_batches)])
  done = np.asarray(multihost_utils.broadcast_one_to_all(done)).astype(bool)
  if done.any():
    logging.info("Resuming: %d of %d batches are already done.", done.sum(),
                 num_batches)
  todo = np.flatnonzero(~done)
  begin = time.time()
  for n, i in enumerate(todo, 1):
    start = time.time()
    batch_labels = labels[i * bs:(i + 1) * bs]
    images = runner.images(batch_labels, jax.random.fold_in(root, int(i)))
    if chief:
      store.write_batch(int(i), images, batch_labels)
    now = time.time()
    # The first batch includes the compile: the ETA assumes later ones as slow.
    eta = (now - begin) / n * (len(todo) - n)
    logging.info("Batch %d/%d: %.2f images/s, ETA %dm%02ds", i + 1, num_batches,
                 len(batch_labels) / (now - start), eta // 60, eta % 60)
  if not chief:
    return ""
  path = store.assemble(num_batches, config.num_samples)
  logging.info("Wrote %s (%d samples)", path, config.num_samples)
  return path


def main(config, workdir: str, distributed_flags: dict | None = None) -> None:
  with exit_on_bad_input("elm_jax.sample"):
    local_path("--workdir", workdir)
    validate(config)
    if distributed_flags is not None:
      distributed.initialize_from_flags(distributed_flags)  # before any jax use
    import jax  # deferred: jax-heavy; --help and bad flags need none of it
    from elm_jax import run_log
    if config.jax_disable_most_optimizations:
      jax.config.update("jax_disable_most_optimizations", True)
    with run_log.capture(workdir, "sample"):
      run(config, workdir)


if __name__ == "__main__":
  # Flags are defined here, not at import, so this module can be imported
  # beside elm_jax.main (which defines --config too).
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/sample.py:tiny.",
      lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the samples go.")
  _DISTRIBUTED = distributed.define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(lambda argv: main(_CONFIG.value, _WORKDIR.value, _DISTRIBUTED),
          flags_parser=parse_flags)
