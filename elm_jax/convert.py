"""Released PyTorch checkpoints -> elm_jax workdirs: `python -m elm_jax.convert`.

  python -m elm_jax.convert --from=elm-bae --src=binaryae_ema.th --out=workdirs/bae20
  python -m elm_jax.convert --from=elm-ar --src=ELM-L-2-10.pth \
      --tokenizer=workdirs/bae20 --out=workdirs/elm_L
  python -m elm_jax.convert --from=elm-mlm --src=MLM-1-16.pth \
      --tokenizer=workdirs/bae16 --out=workdirs/mlm_L
  python -m elm_jax.convert --from=llamagen-vq --src=vq_ds16_c2i.pt \
      --out=workdirs/llamagen_vq
  python -m elm_jax.convert --from=llamagen-gpt --src=c2i_L_256.pt \
      --tokenizer=workdirs/llamagen_vq --out=workdirs/llamagen_L

--src: .pt/.pth/.th (needs torch) or .npz of the state dict. --out becomes a
workdir like a training run's: an orbax checkpoint (elm_jax.checkpointing:
state = TrainState with params == ema_params == the imported weights, a fresh
optimizer state, step --step; config = the stage's full config) that
`elm_jax.main` resumes and the loaders read. Without --config the stage's
ImageNet config is used, with the size and split read off the file; with
--config (and --config.x=y overrides) the file is checked against it. The
checkpoint is written beside --out first and moved in by rename; an existing
checkpoint is kept unless --overwrite.
"""

import sys
from typing import Sequence

from absl import flags
from ml_collections import config_flags

from elm_jax.config_error import ConfigError

KINDS = ("elm-bae", "elm-ar", "elm-mlm", "llamagen-vq", "llamagen-gpt")
BAE_KINDS = ("elm-bae", "llamagen-vq")  # tokenizers
_USAGE = ("usage: python -m elm_jax.convert --from={" + "|".join(KINDS) + "} "
          "--src=FILE --out=DIR [--config=configs/...py:args] "
          "[--tokenizer=TOKENIZER_WORKDIR] [--grid_size=N] [--image_size=N] "
          "[--step=N] [--overwrite]")


def _define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> dict:
  """The command's flag holders, defined in `fv`: a FlagValues of one `cli`
  call, not absl's global FLAGS, so that `cli` runs any number of command
  lines in one process and --config finds the --config.x=y overrides in
  `argv` (not sys.argv)."""
  d = dict(flag_values=fv)
  return dict(
      kind=flags.DEFINE_enum("from", None, KINDS, "What --src holds.", **d),
      src=flags.DEFINE_string("src", None, ".pt/.pth/.th or .npz state dict.", **d),
      out=flags.DEFINE_string("out", None, "The workdir to create.", **d),
      config=config_flags.DEFINE_config_file(
          "config", None, "Config (default: the stage's ImageNet config with "
          "the file's size and split).", lock_config=True, sys_argv=list(argv),
          **d),
      tokenizer=flags.DEFINE_string(
          "tokenizer", "", "Generators: the tokenizer workdir the model's "
          "tokens come from (a BAE for elm-ar / elm-mlm, a --from=llamagen-vq "
          "workdir for llamagen-gpt); fills config.tokenizer.checkpoint and "
          "fixes the grid.", **d),
      step=flags.DEFINE_integer("step", 0, "Train step to record.", **d),
      overwrite=flags.DEFINE_boolean("overwrite", False,
                                     "Replace a checkpoint in --out.", **d),
      prefer_ema=flags.DEFINE_boolean(
          "ema", True, "Take the EMA weights when the file holds both.", **d),
      allow_pickle=flags.DEFINE_boolean(
          "allow_pickle", False, "Unpickle Python objects in a .pt (runs code "
          "from the file: only for trusted files).", **d),
      grid_size=flags.DEFINE_integer(
          "grid_size", 0, "llamagen-gpt without --tokenizer (then required): "
          "token grid side, 16 for 256x256 models, 24 for 384x384; refused "
          "when the file's freqs_cis says otherwise.", **d),
      image_size=flags.DEFINE_integer(
          "image_size", 0, "llamagen-vq: the image side the tokenizer workdir "
          "records (default 256: a 16x16 grid for VQ-16; 384 gives 24x24).",
          **d),
  )


def cli(argv: Sequence[str]) -> int:
  """Runs the command line `argv` (argv[0] is the program); returns the exit code."""
  fv = flags.FlagValues()
  holders = _define_flags(fv, argv)
  if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
    print(f"{__doc__}\n{_USAGE}\n\n{fv.get_help()}")
    return 0
  try:
    fv(list(argv))
    for name in ("from", "src", "out"):
      if fv[name].value is None:
        raise flags.Error(f"--{name} is required.")
  except flags.Error as e:
    print(f"convert: {e}\n{_USAGE}", file=sys.stderr)
    return 2
  args = {k: h.value for k, h in holders.items()}
  try:
    # deferred: jax and orbax take seconds to import; --help needs neither
    from elm_jax.weights import release_import
    release_import.convert(args.pop("kind"), args.pop("src"), args.pop("out"),
                           **args)
  except (ConfigError, OSError, ImportError, KeyError, ValueError) as e:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f"convert: error: {msg}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(cli(sys.argv))
