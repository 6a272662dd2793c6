"""Entry point: `python -m elm_jax.main --config=configs/<stage>.py[:args] --workdir=DIR`.

Any config field can be overridden: `--config.optim.lr=3e-4`. Starting again
with the same workdir resumes from its latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from elm_jax import distributed
from elm_jax.bad_input import exit_on_bad_input, local_path, parse_flags


def main(config, workdir: str, distributed_flags: dict) -> None:
  """Trains config's stage in workdir; distributed_flags: the holders that
  distributed.define_flags made."""
  # deferred: jax, flax and the stages take seconds to import; --help needs none
  import jax
  from elm_jax import configs_lib, run_log
  from elm_jax.train import loop, preemption
  from elm_jax.train.stages import make_stage
  with exit_on_bad_input("elm_jax.main"):
    local_path("--workdir", workdir)
    configs_lib.validate(config)
    distributed.initialize_from_flags(distributed_flags)  # before any other jax use
  if config.get("jax_disable_most_optimizations", False):
    # tiny configs: compile time dominates a few-step run.
    jax.config.update("jax_disable_most_optimizations", True)
  # Some config errors show only once the tokenizer and devices are known.
  with preemption.exit_when_stopped(), exit_on_bad_input("elm_jax.main"), \
      run_log.capture(workdir, "main"):
    logging.info("JAX %s on %s: %d devices, process %d/%d", jax.__version__,
                 jax.default_backend(), jax.device_count(), jax.process_index(),
                 jax.process_count())
    loop.train_and_evaluate(config, workdir, make_stage(config))


if __name__ == "__main__":
  # Flags are defined only when run, so this module can be imported beside
  # other modules with a --config flag of their own.
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/bae.py:tiny.", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs, summaries.")
  _DISTRIBUTED = distributed.define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(lambda argv: main(_CONFIG.value, _WORKDIR.value, _DISTRIBUTED),
          flags_parser=parse_flags)
