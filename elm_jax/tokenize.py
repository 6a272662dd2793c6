"""Pre-tokenize a dataset once with a trained tokenizer.

  python -m elm_jax.tokenize --tokenizer=workdirs/bae_fmnist --out=workdirs/tokens

Writes, per split, OUT/<split>/probs.npy (uint8 [N, h, w, K]: the encoder's
bit probabilities quantised as round(255 p)), probs_flipped.npy (the same for
horizontally flipped images, with --flips), labels.npy (int32 [N]) and
OUT/meta.json. Storing probabilities rather than bits keeps ELM's Bernoulli
augmentation: the generator draws fresh bits from them every epoch without
running the encoder again. Files are written under a temporary name and
renamed when complete, so an interrupted run never leaves a half-written
split that looks finished. Each batch is split over this process's devices
(rounded up to a multiple of their count). Later runs may add splits to the same OUT (same
tokenizer and settings, checked against meta.json before any work); a split
that is already there is never overwritten.
"""

from absl import app, flags

from elm_jax.bad_input import exit_on_bad_input, parse_flags


def main(tokenizer_dir: str, out_dir: str, splits: list, batch_size: int, flips: bool,
         data_overrides: dict) -> None:
  with exit_on_bad_input("elm_jax.tokenize"):
    # deferred: jax takes seconds to import; --help needs none of it
    from elm_jax.data import tokenizing
    tokenizing.tokenize(tokenizer_dir, out_dir, splits, batch_size, flips,
                        data_overrides)


if __name__ == "__main__":
  # Flags are defined only when run, so importing this module defines none.
  _TOKENIZER = flags.DEFINE_string("tokenizer", None, "Workdir of a configs/bae.py run.")
  _OUT = flags.DEFINE_string("out", None, "Output directory.")
  _SPLITS = flags.DEFINE_list("splits", ["train", "test"], "Splits to tokenize.")
  _BATCH = flags.DEFINE_integer("batch_size", 500, "Images per encoder call.")
  _FLIPS = flags.DEFINE_bool("flips", True, "Also store flipped-image probabilities.")
  _SOURCE = flags.DEFINE_string("source", "", "Override the tokenizer run's data.source.")
  _PATH = flags.DEFINE_string("path", "", "Override data.path.")
  _NAME = flags.DEFINE_string("name", "", "Override data.name.")
  flags.mark_flags_as_required(["tokenizer", "out"])
  app.run(lambda argv: main(_TOKENIZER.value, _OUT.value, _SPLITS.value, _BATCH.value,
                            _FLIPS.value, dict(source=_SOURCE.value, path=_PATH.value,
                                               name=_NAME.value)),
          flags_parser=parse_flags)
