"""Every config validates; impossible ones fail naming the field."""


import pytest

from config_loading import CONFIGS, get_config
from elm_jax import configs_lib, sharding

VARIANTS = {"bae": [None, "tiny", "imagenet", "imagenet,bits=20",
                    "tiny,quantizer=vq", "tiny,quantizer=lfq"],
            "ar": [None, "tiny", "imagenet,size=L,split=2-10",
                   "imagenet,size=2B,split=2-12"],
            "mlm": [None, "tiny", "imagenet,size=L,split=1-16"],
            "sample": [None, "tiny", "imagenet", "demo", "mlm"],
            "pipeline": [None, "tiny", "mlm", "tiny,mlm"]}


def test_every_config_file_is_covered():
  assert {p.stem for p in CONFIGS.glob("*.py")} == set(VARIANTS)


@pytest.mark.parametrize("name,arg", [(n, a) for n, args in VARIANTS.items()
                                      for a in args])
def test_validates(name, arg):
  config = get_config(name, arg)
  if name == "pipeline":
    from elm_jax import pipeline
    pipeline.validate(pipeline.stage_configs(config, "/some/workdir"))
    return
  if name == "sample":
    from elm_jax import sample
    from elm_jax.sampling.settings import SamplerSettings
    with pytest.raises(configs_lib.ConfigError, match="generator.checkpoint"):
      sample.validate(config)
    config.generator.checkpoint = "/some/ar/workdir"
    sample.validate(config)
    SamplerSettings(**config.sampler)
    return
  if name in ("ar", "mlm"):
    with pytest.raises(configs_lib.ConfigError, match="tokenizer.checkpoint"):
      configs_lib.validate(config)
    config.tokenizer.checkpoint = "/some/bae/workdir"
  configs_lib.validate(config)


@pytest.mark.parametrize("field,value,match", [
    ("model.quantizer", "fsq", "model.quantizer"),
    ("model.nf", 48, "model.nf"),
    ("data.image_size", 33, "data.image_size"),
    ("model.bits", 40, "model.bits"),
    ("batch_size", 0, "batch_size"),
    ("loss.pixel", "l3", "loss.pixel"),
])
def test_bad_fields_are_named(field, value, match):
  config = get_config("bae", "tiny")
  node = config
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(configs_lib.ConfigError, match=match):
    configs_lib.validate(config)


def test_unknown_variant_argument():
  with pytest.raises(ValueError, match="Unknown config argument 'size'"):
    get_config("bae", "size=L")


def test_mesh_shape_and_batch_divisibility():
  assert sharding.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
  with pytest.raises(ValueError, match="needs 6 devices"):
    sharding.mesh_shape({"data": 3, "fsdp": 2, "tensor": 1}, 8)
  with pytest.raises(ValueError, match="at most one axis"):
    sharding.mesh_shape({"data": -1, "fsdp": -1}, 8)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
  with pytest.raises(ValueError, match="batch_size=12 is not divisible"):
    sharding.check_batch(12, mesh)
