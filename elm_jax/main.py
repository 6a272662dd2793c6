"""Entry point: `python -m elm_jax.main --config=configs/<stage>.py[:args] --workdir=DIR`.

Any config field can be overridden: `--config.optim.lr=3e-4`. Starting again
with the same workdir resumes from its latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from elm_jax import configs_lib, distributed
from elm_jax.bad_input import exit_on_bad_input, local_path, parse_flags


def define_flags() -> dict:
  """Defines this command's flags (only when run as the command, so that
  modules with a --config flag of their own can be imported beside it)."""
  f = dict(
      config=config_flags.DEFINE_config_file(
          "config", None, "Config file, e.g. configs/bae.py:tiny.",
          lock_config=True),
      workdir=flags.DEFINE_string("workdir", None,
                                  "Checkpoints, logs, summaries."),
      **distributed.define_flags())
  flags.mark_flags_as_required(["config", "workdir"])
  return f


def make_stage(config):
  """The Stage object for config.stage."""
  if config.stage == "bae":
    from elm_jax.train.bae import TokenizerStage
    return TokenizerStage(config)
  if config.stage == "ar":
    from elm_jax.train.ar import ARStage
    return ARStage(config)
  if config.stage == "mlm":
    from elm_jax.train.mlm import MLMStage
    return MLMStage(config)
  raise configs_lib.ConfigError(f"config.stage: {config.stage!r} has no trainer.")


def main(f: dict) -> None:
  config = f["config"].value
  with exit_on_bad_input("elm_jax.main"):
    local_path("--workdir", f["workdir"].value)
    configs_lib.validate(config)
    distributed.initialize_from_flags(f)  # before any other jax use
  import jax  # after flag parsing: platform flags are honoured.
  if config.get("jax_disable_most_optimizations", False):
    # tiny configs: compile time dominates a few-step run.
    jax.config.update("jax_disable_most_optimizations", True)
  from elm_jax.train import loop, preemption
  logging.info("JAX %s on %s: %d devices, process %d/%d", jax.__version__,
               jax.default_backend(), jax.device_count(), jax.process_index(),
               jax.process_count())
  # Some config errors show only once the tokenizer and devices are known.
  with preemption.exit_when_stopped(), exit_on_bad_input("elm_jax.main"):
    loop.train_and_evaluate(config, f["workdir"].value, make_stage(config))


if __name__ == "__main__":
  _FLAGS = define_flags()
  app.run(lambda argv: main(_FLAGS), flags_parser=parse_flags)
