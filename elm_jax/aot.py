"""Ahead-of-time compilation of the real train step (and AR sampler) for a TPU pod.

  PYTHONPATH=/opt/libtpu python -m elm_jax.aot \
      --config=configs/ar.py:imagenet,size=2B,split=2-12 --topology=v5p-128 \
      --config.mesh.data=1 --config.mesh.fsdp=-1 --batch=256 [--json=out.json]

Runs on a machine without TPUs: libtpu (launch/requirements-tpu.txt,
installed into a folder of its own, named by --libtpu or PYTHONPATH)
describes the topology, `jax.experimental.topologies` gives its devices, and
the same jitted step the training loop runs (loop.jit_train_step) is lowered
with abstract inputs (nothing is allocated) and compiled by XLA:TPU. Prints
per-chip memory (arguments, outputs, temporaries, total against the chip's
HBM) and FLOPs per step; exits with status 1 naming the overflow when the
step does not fit. The mesh and sharding rules come from the config
(`--config.mesh.fsdp=-1`, `--config.model.remat=full`, ...).

`--topology=cpu` compiles for this machine's devices instead (tests;
`--hbm_gib` then sets the budget).
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from elm_jax.bad_input import parse_flags


def main(config, topology: str, batch: int, hbm_gib: float, json_path: str, libtpu: str,
         sample_batch: int) -> None:
  # deferred: jax and flax take seconds to import; --help needs neither
  import jax
  from elm_jax import aot_compile, configs_lib
  target = aot_compile.parse_topology(topology, hbm_gib)
  if target.chip != "cpu":  # compile for TPU on a host that has none
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # parallel compiles
  if libtpu:
    sys.path.insert(0, os.path.abspath(libtpu))
  with config.unlocked():
    if batch:
      config.batch_size = batch
    if config.stage in ("ar", "mlm") and not config.tokenizer.checkpoint:
      config.tokenizer.checkpoint = "(abstract: configs/bae.py)"
  configs_lib.validate(config)
  if config.get("jax_disable_most_optimizations", False):
    jax.config.update("jax_disable_most_optimizations", True)
  try:
    sys.exit(aot_compile.run(config, target, json_path, sample_batch))
  except (RuntimeError, ValueError) as e:
    sys.exit(f"AOT compile failed: {e}")


if __name__ == "__main__":
  # Flags are defined only when run, so this module can be imported beside
  # elm_jax.main (which defines --config too).
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/ar.py:imagenet,size=2B,split=2-12.",
      lock_config=True)
  _TOPOLOGY = flags.DEFINE_string(
      "topology", None, "v5p-128, v4-64, v5e-256, v6e-64, v5p:4x4x4, or cpu.")
  _BATCH = flags.DEFINE_integer("batch", 0, "Global batch size (0: config.batch_size).")
  _HBM = flags.DEFINE_float("hbm_gib", 0.0, "Memory per chip (0: the chip's HBM).")
  _JSON = flags.DEFINE_string("json", "", "Also write the report to this JSON file.")
  _LIBTPU = flags.DEFINE_string("libtpu", "", "Folder holding the libtpu package.")
  _SAMPLE_BATCH = flags.DEFINE_integer(
      "sample_batch", 0, "AR stages: also compile the sampler for this many "
      "images (classifier-free guidance doubles the model batch); 0: skip.")
  flags.mark_flags_as_required(["config", "topology"])
  app.run(lambda argv: main(_CONFIG.value, _TOPOLOGY.value, _BATCH.value, _HBM.value,
                            _JSON.value, _LIBTPU.value, _SAMPLE_BATCH.value),
          flags_parser=parse_flags)
