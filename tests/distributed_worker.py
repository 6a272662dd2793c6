"""One process of tests/test_distributed.py's multi-process run.

Runs `elm_jax.main` with its own flags (so jax.distributed starts from
--coordinator_address etc.), keeps the state train_and_evaluate returns and
writes this process's copy of every parameter to DUMP/params_<process>.npz.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from elm_jax import distributed
from elm_jax import main as elm_main

_DUMP = flags.DEFINE_string("dump", None, "Where to write params_<process>.npz.")
# The flags of `python -m elm_jax.main`, which defines them only when run.
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs, summaries.")
_DISTRIBUTED = distributed.define_flags()


def run(argv):
  import jax
  import numpy as np
  from elm_jax.train import loop
  captured = {}
  train = loop.train_and_evaluate

  def capture(config, workdir, stage):
    captured["state"] = train(config, workdir, stage)
    return captured["state"]

  loop.train_and_evaluate = capture
  del argv
  elm_main.main(_CONFIG.value, _WORKDIR.value, _DISTRIBUTED)
  local = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(captured["state"].params):
    shards = [np.asarray(s.data) for s in leaf.addressable_shards]
    assert leaf.is_fully_replicated, jax.tree_util.keystr(path)
    assert all((s == shards[0]).all() for s in shards), jax.tree_util.keystr(path)
    local[jax.tree_util.keystr(path)] = shards[0]
  np.savez(os.path.join(_DUMP.value, f"params_{jax.process_index()}.npz"), **local)


if __name__ == "__main__":
  app.run(run)
