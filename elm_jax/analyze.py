"""The paper's analyses as commands that write numbers (JSON), plots (PNG) and TensorBoard.

  # unigram / bigram KL from uniform: image tokens of a dataset vs English text
  python -m elm_jax.analyze token-randomness --tokenizer=workdirs/bae_fmnist \
      --num_images=2000 --out=workdirs/analysis
  # per-layer attention maps and average attention distance of a generator
  python -m elm_jax.analyze attention --generator=workdirs/ar_fmnist \
      --num_images=16 --out=workdirs/analysis

token-randomness: the tokenizer's thresholded codes of the first --num_images
of its evaluation split, as sub-code ids (--num_subcodes; default K/8, i.e.
V = 256 entries, when 8 divides K) in raster order, vs the UTF-8 bytes (V =
256) of the Python help texts that ship with the standard library, cut into
sequences of the same length, and vs uniformly random tokens of the same
count (the estimator's floor). Writes token_randomness.{json,png}.

attention: the generator's EMA weights on the thresholded codes of the first
--num_images evaluation images (AR: the 255 input cells; MLM: all cells,
unmasked) with their labels. Writes attention.json (mean distance in grid
cells per layer and per head), attention.png (the query at --query_cell's
attention map per layer, and the distance per layer) and TensorBoard
scalars (analysis/attention_distance at step = layer) and images.
"""

from absl import app, flags

from elm_jax.bad_input import exit_on_bad_input, parse_flags

COMMANDS = ("token-randomness", "attention")


def main(argv, out: str, tokenizer: str, generator: str, num_images: int, num_subcodes: int,
         query_cell: list[str]) -> None:
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"Usage: python -m elm_jax.analyze {{{'|'.join(COMMANDS)}}} --out=DIR "
                         "[--tokenizer=DIR | --generator=DIR]")
  if argv[1] == "token-randomness":
    if not tokenizer:
      raise app.UsageError("token-randomness needs --tokenizer=WORKDIR.")
    with exit_on_bad_input("elm_jax.analyze"):
      # deferred: jax and matplotlib take seconds; --help needs none of them
      from elm_jax.evaluation import analyses
      analyses.token_randomness(tokenizer, num_images, out, num_subcodes)
  else:
    if not generator:
      raise app.UsageError("attention needs --generator=WORKDIR.")
    query = tuple(int(v) for v in query_cell) if query_cell else None
    with exit_on_bad_input("elm_jax.analyze"):
      from elm_jax.evaluation import analyses  # deferred, as above
      analyses.attention(generator, num_images, out, query)


if __name__ == "__main__":
  # Flags are defined only when run, so importing this module defines none.
  _TOKENIZER = flags.DEFINE_string("tokenizer", "", "token-randomness: a tokenizer workdir.")
  _GENERATOR = flags.DEFINE_string("generator", "", "attention: an AR/MLM workdir.")
  _OUT = flags.DEFINE_string("out", None, "Output directory.")
  _NUM_IMAGES = flags.DEFINE_integer("num_images", 1000, "Evaluation images to use.")
  _NUM_SUBCODES = flags.DEFINE_integer("num_subcodes", 0,
                                       "token-randomness: sub-codes per cell (0: K/8).")
  _QUERY_CELL = flags.DEFINE_list("query_cell", [],
                                  "attention: row,col of the mapped query (default: centre).")
  flags.mark_flags_as_required(["out"])
  app.run(lambda argv: main(argv, _OUT.value, _TOKENIZER.value, _GENERATOR.value,
                            _NUM_IMAGES.value, _NUM_SUBCODES.value, _QUERY_CELL.value),
          flags_parser=parse_flags)
