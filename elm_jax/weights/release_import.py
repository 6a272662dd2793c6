"""The work of `python -m elm_jax.convert` (see its docstring): a released
PyTorch state dict -> a workdir like a training run's.

Imported by the command only after its flags parse: jax, orbax and the
stages take seconds to import, and `--help` needs none of them.
"""

import json
import os
import shutil
import tempfile
import time

import jax
import ml_collections
import numpy as np

from elm_jax import atomic_files, checkpointing, configs_lib
from elm_jax.convert import BAE_KINDS, KINDS
from elm_jax.models.bae import build_autoencoder
from elm_jax.models.transformer import SIZES
from elm_jax.train import frozen_tokenizer
from elm_jax.weights import (architecture, converted_state, state_dict_io,
                             torch_llamagen, torch_llamagen_vq)


class ConversionError(ValueError):
  """A problem with the input or the flags; the message says how to fix it."""


# ------------------------------------------------------------------ config


def load_config(spec: str) -> ml_collections.ConfigDict:
  """"configs/ar.py:size=L,split=2-10" (relative to the repository) -> config."""
  path, _, arg = spec.partition(":")
  full = path if os.path.isabs(path) else os.path.join(configs_lib.CONFIGS_DIR,
                                                        "..", path)
  if not os.path.isfile(full):
    raise ConversionError(f"{full} not found; pass --config=PATH[:args].")
  return configs_lib.load_module(full).get_config(arg or None)


def default_config_spec(kind: str, facts: dict, codes=None) -> str:
  """The --config a released file of this kind uses, from its shapes (and
  the tokenizer's `codes`: a VQ tokenizer's ids take split=auto)."""
  if kind == "elm-bae":
    return f"configs/bae.py:imagenet,bits={facts['bits'].value}"
  if kind == "llamagen-vq":
    return "configs/bae.py:imagenet,quantizer=vq"
  if codes is not None and codes.are_ids:
    split = "auto"
  elif "split" in facts:
    split = "{}-{}".format(*facts["split"].value)
  else:
    raise architecture.not_a_bit_vocabulary(facts)
  if kind == "llamagen-gpt":
    return f"configs/ar.py:imagenet,size=B,split={split}"
  size = architecture.match_size(SIZES, facts)
  if size is None:
    raise ConversionError(
        f"No size in configs ({', '.join(f'{s}={v[:2]}' for s, v in SIZES.items())}"
        f") has {facts['num_layers'].value} layers of width "
        f"{facts['dim'].value}; pass --config=configs/{kind[4:]}.py:split={split} "
        "with --config.model.num_layers, dim, num_heads, head_dim.")
  return f"configs/{kind[4:]}.py:imagenet,size={size},split={split}"


def _llamagen_vq_config(config, facts: dict, image_size: int,
                        default: bool) -> None:
  """LlamaGen's VQ architecture in a configs/bae.py config: set from the
  file's shapes for the default config, else checked against --config."""
  arch = dict(facts)
  levels = len(arch["ch_mult"])
  if image_size % 2 ** (levels - 1):
    raise ConversionError(f"--image_size={image_size} is not divisible by the "
                          f"tokenizer's downsampling {2 ** (levels - 1)}.")
  want = dict(arch, quantizer="vq", style="llamagen", pixel_range="symmetric",
              resolution=image_size,
              attn_resolutions=(image_size // 2 ** (levels - 1),))
  if default:
    config.model.update(want)
    config.data.image_size = image_size
    return
  m = config.model
  bad = [f"model.{k}: the file needs {v!r}, the config has {m[k]!r}"
         for k, v in want.items() if k in m and tuple(np.atleast_1d(m[k])) !=
         tuple(np.atleast_1d(v))]
  if bad:
    raise ConversionError("The state dict does not fit --config: "
                          + "; ".join(bad) + ".")


def _llamagen_defaults(config, facts, grid: int, tok) -> None:
  name = architecture.match_size(torch_llamagen.LLAMAGEN_SIZES, facts)
  if name is None:
    raise ConversionError(
        f"No LlamaGen size has {facts['num_layers'].value} layers of width "
        f"{facts['dim'].value} ({torch_llamagen.LLAMAGEN_SIZES}); pass --config="
        "configs/ar.py:split=1-K with --config.model.num_layers, dim, "
        "num_heads, head_dim.")
  layers, dim, heads = torch_llamagen.LLAMAGEN_SIZES[name]
  config.model.update(num_layers=layers, dim=dim, num_heads=heads,
                      head_dim=dim // heads)
  if tok is None:
    config.data.image_size = 16 * grid  # LlamaGen's VQGAN downsamples 16x
  print(f"LlamaGen size: {name}")


# -------------------------------------------------------------------- disk


def _has_checkpoint(workdir: str) -> bool:
  d = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
  return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))


def write_workdir(out: str, step: int, state, data_iter, config,
                  provenance: dict, overwrite: bool) -> str:
  """Saves the checkpoint under a temporary name, then renames it into `out`."""
  os.makedirs(out, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".convert-", dir=out)
  try:
    ckpt = checkpointing.Checkpointer(tmp, asynchronous=False)
    ckpt.save(step, state, data_iter,
              json.loads(config.to_json_best_effort()))
    ckpt.close()
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  final = os.path.join(out, checkpointing.CHECKPOINT_DIR)
  aside = os.path.join(tmp, "replaced")
  if os.path.exists(final):
    if _has_checkpoint(out) and not overwrite:  # appeared meanwhile
      shutil.rmtree(tmp, ignore_errors=True)
      raise ConversionError(f"{final} holds a checkpoint; pass --overwrite.")
    os.replace(final, aside)
  try:
    os.replace(os.path.join(tmp, checkpointing.CHECKPOINT_DIR), final)
  except BaseException:
    if os.path.exists(aside):
      os.replace(aside, final)
    raise
  atomic_files.write_text(os.path.join(out, "converted_from.json"),
                          json.dumps(provenance, indent=1))
  shutil.rmtree(tmp, ignore_errors=True)
  return final


# --------------------------------------------------------------------- cli


def convert(kind: str, src: str, out: str, config=None, *, tokenizer: str = "",
            step: int = 0, overwrite: bool = False, prefer_ema: bool = True,
            allow_pickle: bool = False, grid_size: int = 0,
            image_size: int = 0) -> str:
  """Converts `src` into the workdir `out`; returns its checkpoint directory."""
  if kind not in KINDS:
    raise ConversionError(f"--from={kind!r}: expected one of {KINDS}.")
  if step < 0:
    raise ConversionError(f"--step={step} must be >= 0.")
  if os.path.exists(out) and not os.path.isdir(out):
    raise ConversionError(f"--out={out} is a file; pass a directory.")
  if _has_checkpoint(out) and not overwrite:
    raise ConversionError(f"--out={out} already holds a checkpoint; pass "
                          "--overwrite to replace it, or choose another --out.")
  if tokenizer and kind in BAE_KINDS:
    raise ConversionError(f"--tokenizer is for generators, not --from={kind}.")
  if image_size and kind != "llamagen-vq":
    raise ConversionError("--image_size is for --from=llamagen-vq; a generator "
                          "takes its images' size from --tokenizer.")
  began = time.perf_counter()
  size_mb = os.path.getsize(src) / 2 ** 20 if os.path.isfile(src) else 0.0
  print(f"reading {src} ({size_mb:,.0f} MB)", flush=True)
  sd, notes = state_dict_io.read_state_dict(src, prefer_ema, allow_pickle)
  print(f"read {len(sd)} tensors in {time.perf_counter() - began:.1f} s", flush=True)
  if kind == "llamagen-gpt":
    sd, more = torch_llamagen.to_elm_keys(sd)
    notes += more
  if kind == "elm-bae":  # a whole BinaryGAN: its discriminator starts fresh
    sd, more = state_dict_io.take_submodule(sd, "ae.")
    notes += more
  for note in notes:
    print(f"{src}: {note}")
  if kind == "elm-bae":
    facts = architecture.infer_bae(sd)
  elif kind == "llamagen-vq":
    facts = torch_llamagen_vq.infer_architecture(sd)
  else:
    facts = architecture.infer_transformer(sd, causal=kind != "elm-mlm")
  tok = None
  if tokenizer and kind not in BAE_KINDS:
    tok = frozen_tokenizer.load(os.path.abspath(tokenizer), "--tokenizer")
  spec = "--config"
  if config is None:
    spec = default_config_spec(kind, facts, tok.codes if tok else None)
    config = load_config(spec)
    print(f"config: {spec}")
  stage = {"elm-bae": "bae", "llamagen-vq": "bae", "elm-mlm": "mlm"}.get(kind, "ar")
  if config.stage != stage:
    raise ConversionError(f"--from={kind} makes a {stage!r} run but --config is "
                          f"a {config.stage!r} config; pass configs/{stage}.py.")
  if kind == "llamagen-vq":
    _llamagen_vq_config(config, facts, image_size or 256, spec != "--config")
  if kind not in BAE_KINDS:
    if tokenizer:
      config.tokenizer.checkpoint = os.path.abspath(tokenizer)
    if kind != "llamagen-gpt" and not config.tokenizer.checkpoint:
      raise ConversionError(
          f"--from={kind} needs --tokenizer=BAE_WORKDIR (a configs/bae.py run "
          "or a converted ELM BAE): it fixes the bits and the grid.")
    if grid_size and config.tokenizer.checkpoint:
      raise ConversionError("--grid_size is for llamagen-gpt without "
                            "--tokenizer; the tokenizer fixes the grid.")
  if tok is None and kind not in BAE_KINDS and config.tokenizer.checkpoint:
    tok = frozen_tokenizer.load(config.tokenizer.checkpoint,
                                "config.tokenizer.checkpoint")
  if tok is not None:
    grid_size = tok.grid_size
    if spec != "--config":  # the default config: the tokenizer's images
      config.data.image_size = tok.config.data.image_size
  elif kind == "llamagen-gpt" and not grid_size:
    fact = facts.get("grid_size")
    raise ConversionError(
        "--from=llamagen-gpt without --tokenizer needs --grid_size (16 for "
        "256x256 models, 24 for 384x384)"
        + (f"; the file's {fact.key} implies {fact.value}." if fact else
           ": the file does not say."))
  if kind == "llamagen-gpt" and spec != "--config":
    _llamagen_defaults(config, facts, grid_size, tok)
  check = config
  if kind == "llamagen-gpt" and not config.tokenizer.checkpoint:
    check = ml_collections.ConfigDict(config.to_dict())  # no tokenizer to name
    check.tokenizer.checkpoint = "(none: LlamaGen's VQ tokenizer)"
  configs_lib.validate(check)
  config_flag = ("--config=" + spec.partition(":")[0] if spec != "--config"
                 else "--config=FILE")
  if kind in BAE_KINDS:
    if kind == "elm-bae":
      architecture.check_bae(facts, config.model)
    print(f"tokenizer: {config.data.image_size}x{config.data.image_size} images "
          f"-> a {build_autoencoder(config.model).latent_size}^2 grid")
    state, _ = converted_state.bae_state(sd, config, step, kind)
  else:
    architecture.check_transformer(facts, config, config_flag,
                                   tok.codes if tok else None)
    state, _ = converted_state.generator_state(kind, sd, config, facts,
                                               grid_size, step, tok)
  print(f"dtype: model.dtype={config.model.dtype} (compute), "
        f"model.param_dtype={config.model.get('param_dtype', 'float32')}"
        + ("; sample with --config.generator.dtype=float32 to reproduce the "
           "PyTorch float32 reference exactly"
           if kind not in BAE_KINDS and config.model.dtype != "float32" else ""))
  provenance = dict(src=os.path.abspath(src), kind=kind, step=step,
                    config=spec, notes=notes, bytes=os.path.getsize(src))
  # No data-iterator state: a resumed run starts its input pipeline afresh
  # (checkpointing.restore allows that), whatever its process count.
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.ema_params))
  print(f"mapped {count:,} parameters at {time.perf_counter() - began:.1f} s; "
        "writing the checkpoint", flush=True)
  final = write_workdir(out, step, state, None, config, provenance, overwrite)
  print(f"wrote {final}/{step}: {count:,} parameters ({kind}) in "
        f"{time.perf_counter() - began:.1f} s")
  return final
