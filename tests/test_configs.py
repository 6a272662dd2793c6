"""Every config validates; impossible ones fail naming the field; an
explicit argument always wins over a variant."""

import itertools
import os
import subprocess
import sys

import ml_collections
import pytest
import yaml

from config_loading import CONFIGS, get_config, load
from elm_jax import config_variants, configs_lib, generator_config, sharding
from elm_jax.models.transformer import SIZES
from elm_jax.tokens import Codes
from processes import ROOT

VARIANTS = {"bae": [None, "tiny", "imagenet", "imagenet,bits=20",
                    "tiny,quantizer=vq", "tiny,quantizer=lfq", "tiny,bits=16"],
            "ar": [None, "tiny", "imagenet,size=L,split=2-10",
                   "imagenet,size=2B,split=2-12", "tiny,size=XL"],
            "mlm": [None, "tiny", "imagenet,size=L,split=1-16"],
            "sample": [None, "tiny", "imagenet", "demo", "mlm", "tiny,mlm"],
            "pipeline": [None, "tiny", "mlm", "tiny,mlm"]}

_GENERATOR_VALUES = {
    "size": (list(SIZES), lambda c, v: (
        c.model.num_layers, c.model.dim, c.model.num_heads) == SIZES[v]),
    "split": (["2-8", "1-16", "2-10", "3-4", "auto"], lambda c, v: (
        c.split == v and generator_config.split_of(c) == (
            None if v == "auto" else tuple(map(int, v.split("-"))))))}
# Each key=value argument of each file: values to try (the default is tried
# too) and whether a config holds the value.
VALUES = {"bae": {"bits": ([1, 8, 16, 20, 31], lambda c, v: c.model.bits == v),
                  "quantizer": (["binary", "vq", "lfq"],
                                lambda c, v: c.model.quantizer == v)},
          "ar": _GENERATOR_VALUES, "mlm": _GENERATOR_VALUES,
          "sample": {}, "pipeline": {}}


def _flags(name):
  return sorted(k for k, v in load(name).ARGS.items() if isinstance(v, bool))


def _variants(name):
  """Every combination of the file's flags that it accepts, "" for none."""
  out = []
  for n in range(len(_flags(name)) + 1):
    for combo in itertools.combinations(_flags(name), n):
      try:
        get_config(name, ",".join(combo))
      except configs_lib.ConfigError as e:
        assert "cannot be combined" in str(e), str(e)
        continue
      out.append(",".join(combo))
  return out


def _leaves(tree, prefix=""):
  """{"model.bits": 16, ...} of a config's to_dict()."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_leaves(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def test_every_config_file_is_covered():
  """common.py is what ar.py and mlm.py share, not a config of its own."""
  assert {p.stem for p in CONFIGS.glob("*.py")} == set(VARIANTS) | {"common"}


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
    ("model.style", "taming", "model.style"),
    ("model.pixel_range", "0-255", "model.pixel_range"),
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


@pytest.mark.parametrize("name,field,value,match", [
    ("ar", "model.remat", "sometimes", "model.remat: 'sometimes': expected one of"),
    ("ar", "model.head_dim", 30, "model.head_dim: must be divisible by 4"),
    ("ar", "model.attention_query_blocks", 0,
     "model.attention_query_blocks: 0 must be >= 1"),
    ("ar", "model.attention_impl", "flash",
     "model.attention_impl: 'flash': expected one of"),
    ("ar", "split", "3", "split='3': expected n-k"),
    ("ar", "patch", 0, "patch: 0: must be a whole number >= 1"),
    ("ar", "eval.sample_grid.classes", -1,
     "eval.sample_grid: classes and per_class must be >= 0"),
    ("ar", "optim.decay", "linear", "optim.decay: 'linear': expected one of"),
    ("bae", "optim.decay", "linear", "optim.decay: 'linear': expected one of"),
])
def test_bad_generator_and_optimizer_fields_are_named(name, field, value, match):
  config = get_config(name, "tiny")
  if name == "ar":
    config.tokenizer.checkpoint = "/some/bae/workdir"
  if field == "model.head_dim":
    config.model.update(dim=config.model.num_heads * value)
  node = config
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(configs_lib.ConfigError, match=match) as e:
    configs_lib.validate(config)
  assert "\n" not in str(e.value)


def test_jax_attention_has_no_dropout():
  config = get_config("ar", "tiny")
  config.tokenizer.checkpoint = "/some/bae/workdir"
  config.model.update(attention_impl="jax", attn_dropout=0.1)
  with pytest.raises(configs_lib.ConfigError, match=r"model.attn_dropout: 0.1 "
                     r"needs model.attention_impl='einsum'"):
    configs_lib.validate(config)


def test_split_alone_sets_the_generator():
  """--config.split=1-8 alone: one 256-way sub-code, one head."""
  config = get_config("ar", "tiny")
  config.split = "1-8"
  model = generator_config.build_transformer(config, Codes(4, bits=8))
  assert (model.num_subcodes, model.vocab_size, model.causal) == (1, 256, True)
  config = get_config("mlm", "tiny,split=4-2")
  model = generator_config.build_transformer(config, Codes(4, bits=8))
  assert (model.num_subcodes, model.vocab_size, model.causal) == (4, 4, False)


def test_a_saved_config_with_the_derived_fields():
  """Workdirs may store model.num_subcodes and subcode_bits beside the
  split: they build the same model when they agree, and name the fields
  when they do not."""
  saved = get_config("ar", "tiny").to_dict()
  saved["model"]["num_subcodes"], saved["subcode_bits"] = 2, 4
  saved["split"] = "2-4"
  config = ml_collections.ConfigDict(saved)
  kwargs = generator_config.transformer_kwargs(config, Codes(4, bits=8))
  fresh = get_config("ar", "tiny,split=2-4")
  assert kwargs == generator_config.transformer_kwargs(fresh, Codes(4, bits=8))
  config.split = "1-8"
  with pytest.raises(configs_lib.ConfigError,
                     match=r"config.split='1-8' disagrees with model.num_subcodes=2 "
                     r"and subcode_bits=4 .*correct or remove the two fields"):
    generator_config.build_transformer(config, Codes(4, bits=8))
  config.tokenizer.checkpoint = "/some/bae/workdir"
  with pytest.raises(configs_lib.ConfigError, match="disagrees"):
    configs_lib.validate(config)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_argument_is_covered(name):
  """ARGS is what the file parses, and each key=value argument has a check
  in VALUES (a new argument without one fails here)."""
  args = load(name).ARGS
  with pytest.raises(configs_lib.ConfigError) as e:
    get_config(name, "no_such_argument")
  assert f"known: {sorted(args)}" in str(e.value)
  assert {k for k, v in args.items() if not isinstance(v, bool)} == set(VALUES[name])


@pytest.mark.parametrize("name,variant", [(n, v) for n in sorted(VARIANTS)
                                          for v in _variants(n)])
def test_an_explicit_argument_wins_over_every_variant(name, variant):
  """`bae.py:tiny,bits=16` trains 16-bit codes, `ar.py:tiny,size=XL` an XL
  model: with every accepted combination of flags, each value of each
  key=value argument ends up in the config."""
  wrong = []
  for key, (values, holds) in VALUES[name].items():
    for value in dict.fromkeys([load(name).ARGS[key], *values]):
      arg = ",".join(filter(None, [variant, f"{key}={value}"]))
      if not holds(get_config(name, arg), value):
        wrong.append(arg)
  assert not wrong, f"configs/{name}.py ignores the explicit argument of {wrong}"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_combined_flags_keep_what_each_sets(name):
  """A combination of flags the file accepts holds every field each flag
  sets on its own; one that cannot is refused."""
  default = _leaves(get_config(name).to_dict())
  alone = {f: _leaves(get_config(name, f).to_dict()) for f in _flags(name)}
  for variant in _variants(name):
    combined = _leaves(get_config(name, variant).to_dict())
    for flag in filter(None, variant.split(",")):
      lost = {k: (v, combined.get(k)) for k, v in alone[flag].items()
              if v != default.get(k) and combined.get(k) != v}
      assert not lost, f"configs/{name}.py:{variant} drops what {flag!r} sets: {lost}"


@pytest.mark.parametrize("name,arg", [
    ("bae", "fmnist,imagenet"), ("bae", "tiny,imagenet"), ("ar", "tiny,imagenet"),
    ("mlm", "imagenet,tiny"), ("sample", "tiny,demo"), ("sample", "imagenet,mlm")])
def test_contradicting_flags_are_refused_in_one_line(name, arg):
  with pytest.raises(configs_lib.ConfigError, match="cannot be combined") as e:
    get_config(name, arg)
  message = str(e.value)
  assert all(repr(flag) in message for flag in arg.split(","))
  assert "\n" not in message and "--config.FIELD=VALUE" in message


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


def test_pipeline_default_generator_reads_blocks_of_cells():
  """configs/pipeline.py: size S over 2x2 blocks of the 16x16 grid of 8-bit
  codes that its tokenizer makes (8x8 positions, four 256-way sub-codes)."""
  config = get_config("pipeline")
  tok = config.tokenizer
  grid = tok.data.image_size // 2 ** (len(tok.model.ch_mult) - 1)
  model = generator_config.build_transformer(config.generator,
                                             Codes(grid, bits=tok.model.bits))
  assert (grid, tok.model.bits) == (16, 8)
  assert (model.grid_size, model.bits, model.num_subcodes, model.vocab_size) == (8, 32, 4, 256)
  assert (model.num_layers, model.dim) == (4, 256)


def test_help_lists_each_files_arguments_as_the_files_declare_them():
  """config_variants reads ARGS without importing; it must agree with the
  imported files."""
  read = config_variants.file_arguments()
  assert set(read) == {"ar.py", "bae.py", "mlm.py", "pipeline.py", "sample.py"}
  for name, args in read.items():
    assert args == dict(configs_lib.load_module(
        os.path.join(configs_lib.CONFIGS_DIR, name)).ARGS), name
  assert ("configs/ar.py: variants tiny|imagenet; arguments size=XS, "
          "split=auto") in config_variants.describe()


def test_print_config_prints_the_resolved_config_and_exits():
  proc = subprocess.run(
      [sys.executable, "-m", "elm_jax.main", "--config=configs/ar.py:tiny",
       "--config.model.dim=128", "--print_config"], cwd=ROOT,
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  printed = yaml.safe_load(proc.stdout)
  assert printed["model"]["dim"] == 128 and printed["split"] == "auto"
  assert printed["stage"] == "ar"
  proc = subprocess.run([sys.executable, "-m", "elm_jax.sample", "--help"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert "configs/sample.py: variants tiny|imagenet|demo|mlm" in proc.stdout
