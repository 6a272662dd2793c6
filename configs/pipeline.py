"""The whole pipeline on one dataset: `python -m elm_jax.pipeline`.

  python -m elm_jax.pipeline --config=configs/pipeline.py --workdir=workdirs/fmnist
  python -m elm_jax.pipeline --config=configs/pipeline.py:tiny --workdir=/tmp/p
  # another dataset, longer training:
  python -m elm_jax.pipeline --config=configs/pipeline.py --workdir=... \
      --config.tokenizer.data.source=folder --config.tokenizer.data.path=ROOT \
      --config.generator.data.source=folder --config.generator.data.path=ROOT \
      --config.tokenizer.total_steps=20000 --config.generator.total_steps=50000

Fields: `tokenizer` (a configs/bae.py config), `generator` (configs/ar.py or
configs/mlm.py), `sample` (configs/sample.py), `evaluation` (sample count,
reference count, classifier and caches). The connecting paths (the
generator's tokenizer, the sampler's generator) are filled in by the
command. Variants: `tiny` (every stage in about a minute, for tests), `mlm`
(a masked generator with MaskGIT decoding).

The Fashion-MNIST default differs from ELM's ImageNet choices (the
`imagenet` variants of the stage configs) to finish within an hour on a
2-core CPU; the figures behind each choice are in benchmarks/pipeline.md.
"""

import ml_collections

from elm_jax.configs_lib import parse_arg, sibling


def _stage_config(name: str, arg: str) -> ml_collections.ConfigDict:
  """configs/<name>.py:arg (the stage's own config file, beside this one)."""
  return sibling(__file__, name).get_config(arg)


# The variants above (flags), with their defaults.
ARGS = dict(tiny=False, mlm=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  generator = "mlm" if a.mlm else "ar"
  c = ml_collections.ConfigDict()
  c.stage = "pipeline"
  if a.tiny:
    c.tokenizer = _stage_config("bae", "tiny")
    # The GAN and LPIPS have tests of their own; here they would only add compiles.
    c.tokenizer.loss.update(gan_weight=0.0, perceptual_weight=0.0)
    c.tokenizer.eval.lpips = False
    # Patch 2 as in the default: 8x8 positions of four 8-bit sub-codes.
    c.generator = _stage_config(generator, "tiny,split=4-8")
    c.generator.patch = 2
    c.sample = _stage_config("sample", "tiny")
    c.sample.num_samples, c.sample.batch_size = 20, 10
    c.sample.grid = dict(per_class=2, classes=10)
  else:
    # The stage configs' Fashion-MNIST defaults (their docstrings say why).
    c.tokenizer = _stage_config("bae", None)
    # Size S (4 layers x 256) over 2x2 blocks of cells: 64 positions of four
    # 8-bit sub-codes, 4.2x the training images per second of one position
    # per cell, so 2,600 steps of 64 images (2.8 epochs) fit the half hour
    # that one epoch took (class accuracy 0.813 against 0.692, FID 56.0
    # against 65.6 at CFG 3.0, temperature 0.7; benchmarks/pipeline.md).
    c.generator = _stage_config(generator, "size=S,split=4-8")
    c.generator.patch = 2
    c.generator.total_steps = 2600
    c.generator.checkpoint_every = 400
    c.generator.eval_every = 2600
    c.sample = _stage_config("sample", "mlm" if a.mlm else None)
    c.sample.num_samples = 1000
    # 8-bit codes, thresholded (not Bernoulli-drawn) for the generator: FID
    # 65.7 against 86.7 for 16-bit codes split 2-8, one position per cell, at
    # the same hour (benchmarks/pipeline.md).
    c.tokenizer.model.bits = 8
    c.generator.tokenizer.bernoulli = False
    # The best class accuracy of a sweep over CFG 2-6 and temperature 0.4-1.0
    # on one trained AR generator of this config (0.895 and FID 53.6 against
    # 0.813 and 56.0 at CFG 3.0, temperature 0.7; benchmarks/pipeline.md).
    c.sample.sampler.update(cfg_scale=2.0, cfg_schedule="constant", temperature=0.5,
                            top_k=0)
  c.evaluation = dict(
      num_samples=c.sample.get_ref("num_samples"), num_reference=1000, batch_size=200,
      # The FID Inception npz; "" converts it once into cache_dir.
      inception="",
      # Classifier, FID reference statistics and the real-image floor; ""
      # is WORKDIR/cache. Point several pipelines at one directory to share it.
      cache_dir="",
      # The class-accuracy CNN, trained on the first train_examples (0: all)
      # images of the training split and tested on test_examples (0: all) of
      # the evaluation split.
      classifier=dict(train_examples=0, test_examples=0, epochs=3, batch_size=128,
                      learning_rate=2e-3, seed=0, max_steps=0))
  if a.tiny:
    c.evaluation.update(num_reference=20, batch_size=20)
    c.evaluation.classifier.update(train_examples=512, test_examples=500, epochs=1,
                                   batch_size=64, max_steps=4)
  # On a CPU host, split every batch over this many CPU devices (0: XLA's
  # default of one); see elm_jax/platform.py.
  c.cpu_devices = 0 if a.tiny else 2
  c.jax_disable_most_optimizations = bool(a.tiny)
  return c
