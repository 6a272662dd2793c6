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

import importlib.util
import os

import ml_collections

from elm_jax.configs_lib import parse_arg


def _stage_config(name: str, arg: str) -> ml_collections.ConfigDict:
  """configs/<name>.py:arg (the stage's own config file, beside this one)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"elm_jax_configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


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
    c.generator = _stage_config(generator, "tiny,split=2-4")
    c.sample = _stage_config("sample", "tiny")
    c.sample.num_samples, c.sample.batch_size = 20, 10
    c.sample.grid = dict(per_class=2, classes=10)
  else:
    # The stage configs' Fashion-MNIST defaults (their docstrings say why).
    c.tokenizer = _stage_config("bae", None)
    c.generator = _stage_config(generator, None)
    c.sample = _stage_config("sample", "mlm" if a.mlm else None)
    c.sample.num_samples = 1000
    c.sample.sampler.update(cfg_scale=4.0, cfg_schedule="constant", top_k=0)
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
