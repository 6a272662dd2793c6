"""The work of `python -m elm_jax.aot` (see its docstring): a stage's train
step (and sampler) compiled for a TPU topology or this CPU, with the memory
report.

Imported by the command only after its flags parse: jax and flax take
seconds to import, and `--help` needs neither.
"""

import dataclasses
import json
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import topologies

from elm_jax import atomic_files, checkpointing, configs_lib, generator_config, sharding
from elm_jax.models.bae import build_autoencoder
from elm_jax.sampling.autoregressive import jit_sampler
from elm_jax.sampling.settings import SamplerSettings
from elm_jax.train import stages
from elm_jax.train.frozen_tokenizer import FrozenTokenizer

GIB = 2 ** 30
# Per-chip HBM (GiB) and TensorCores per chip (the "-N" of v4-N / v5p-N counts
# cores; v5e / v6e slices count chips).
CHIPS = {"v4": (32, 2), "v5p": (95, 2), "v5e": (16, 1), "v6e": (32, 1)}
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4",
              128: "4x4x8", 256: "4x8x8", 512: "8x8x8", 1024: "8x8x16",
              2048: "8x16x16", 4096: "16x16x16"}
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8",
              128: "8x16", 256: "16x16"}

class DoesNotFit(RuntimeError):
  pass


@dataclasses.dataclass(frozen=True)
class Target:
  """Where to compile: `name` as given, chip generation, devices, HBM (GiB)."""
  name: str
  chip: str
  topology_name: str  # for get_topology_desc, e.g. "v5p:4x4x4"; "" for cpu
  chips: int
  hbm_gib: float


def parse_topology(name: str, hbm_gib: float = 0.0) -> Target:
  """"v5p-128" (cores, as Cloud TPU names slices) or "v5p:4x4x4" (chips)."""
  if name == "cpu":
    return Target(name, "cpu", "", 0, hbm_gib)
  chip, sep, rest = name.replace(":", "-", 1).partition("-")
  if chip not in CHIPS or not sep:
    raise ValueError(f"--topology={name!r}: expected <chip>-<cores> or "
                     f"<chip>:<AxBxC> with chip in {sorted(CHIPS)}, or cpu.")
  hbm, cores_per_chip = CHIPS[chip]
  if ":" in name:
    shape = rest
    chips = 1
    for d in shape.split("x"):
      chips *= int(d)
  else:
    if not rest.isdigit() or int(rest) % cores_per_chip:
      raise ValueError(f"--topology={name!r}: the count after '-' is the "
                       f"number of TensorCores ({cores_per_chip} per {chip} chip).")
    chips = int(rest) // cores_per_chip
    shapes = _SHAPES_2D if cores_per_chip == 1 else _SHAPES_3D
    if chips not in shapes:
      raise ValueError(f"--topology={name!r}: no standard {chip} slice of "
                       f"{chips} chips; known: {sorted(shapes)} chips, or give "
                       f"the shape as {chip}:AxBxC.")
    shape = shapes[chips]
  return Target(name, chip, f"{chip}:{shape}", chips, hbm_gib or hbm)


def target_devices(target: Target) -> list:
  if target.chip == "cpu":
    return jax.devices()
  try:
    # deferred: a probe, importable once main() has put --libtpu on sys.path
    import libtpu  # noqa: F401  pylint: disable=unused-import
  except ImportError as e:
    raise RuntimeError(
        "libtpu is not importable, so TPU programs cannot be compiled here. "
        "Install it beside the project: pip install --target /opt/libtpu -r "
        "launch/requirements-tpu.txt, then pass --libtpu=/opt/libtpu (or "
        "PYTHONPATH=/opt/libtpu).") from e
  # v4 / v5p: one device per chip (megacore), as on a real pod.
  extra = {"chip_config_name": "megacore"} if CHIPS[target.chip][1] == 2 else {}
  return list(topologies.get_topology_desc(
      platform="tpu", topology_name=target.topology_name, **extra).devices)


# ------------------------------------------------------------------ stages
def _tokenizer_config(config, bits: int | None):
  """The tokenizer's config: its checkpoint's, or configs/bae.py at this size."""
  ckpt_dir = config.tokenizer.checkpoint
  if ckpt_dir and os.path.isdir(os.path.join(ckpt_dir, checkpointing.CHECKPOINT_DIR)):
    ckpt = checkpointing.Checkpointer(ckpt_dir, read_only=True)
    out = ml_collections.ConfigDict(ckpt.restore_config())
    ckpt.close()
    return out
  module = configs_lib.load_module(os.path.join(configs_lib.CONFIGS_DIR, "bae.py"))
  variant = {256: "imagenet", 32: "fmnist"}.get(config.data.image_size)
  if variant is None:
    raise ValueError(f"config.data.image_size={config.data.image_size}: no "
                     "configs/bae.py variant; set config.tokenizer.checkpoint.")
  return module.get_config(variant if bits is None else f"{variant},bits={bits}")


def abstract_tokenizer(config):
  """A FrozenTokenizer whose params are ShapeDtypeStructs (no weights read)."""
  split = generator_config.split_of(config)  # None: split=auto
  bits = None if split is None else split[0] * split[1]
  tok_config = _tokenizer_config(config, bits)
  model = build_autoencoder(tok_config.model)
  size = tok_config.data.image_size
  dummy = jnp.zeros((1, size, size, 3), jnp.float32)
  params = jax.eval_shape(
      lambda r: model.init({"params": r, "quantize": r}, dummy)["params"],
      jax.random.PRNGKey(0))
  return FrozenTokenizer(model, sharding.unbox(params), tok_config, 0)


def make_stage(config):
  """The config's stage; a generator over an abstract tokenizer."""
  tokenizer = abstract_tokenizer(config) if config.stage in stages.GENERATORS else None
  return stages.make_stage(config, tokenizer)


def abstract_batch(config, stage, batch: int) -> dict:
  """ShapeDtypeStructs of one global training batch (no sharding yet)."""
  out = {"label": jax.ShapeDtypeStruct((batch,), np.int32)}
  if config.data.get("tokens", ""):
    tok = stage.tokenizer
    out["probs"] = jax.ShapeDtypeStruct(
        (batch, tok.grid_size, tok.grid_size, tok.bits), np.uint8)
  else:
    s = config.data.image_size
    out["image"] = jax.ShapeDtypeStruct((batch, s, s, 3), np.uint8)
  return out


# ------------------------------------------------------------------ compile
def _memory(compiled) -> dict:
  m = compiled.memory_analysis()
  out = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
         "aliased": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes,
         "code": m.generated_code_size_in_bytes}
  # Donated state: outputs alias their inputs, counted once.
  out["total"] = (out["arguments"] + out["outputs"] - out["aliased"]
                  + out["temporaries"] + out["code"])
  return {k: int(v) for k, v in out.items()}


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def compile_train_step(config, target: Target, devices, sample_batch: int = 0
                       ) -> dict:
  """Lowers and compiles loop.jit_train_step for `devices`; the report dict.

  sample_batch > 0 (AR): also compiles the sampler for that many images.
  """
  # deferred: heavy (TensorFlow), not needed for --help or bad flags
  from elm_jax.train import loop

  mesh = sharding.make_mesh(config.mesh, devices)
  sharding.check_batch(config.batch_size, mesh)
  rules = sharding.rules_from_config(config)
  stage = make_stage(config)
  rng = jax.random.PRNGKey(config.seed)  # on the host, before the TPU mesh is set
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    unboxed, state_sharding, _ = loop.sharded_state(stage, mesh, rules, rng)
    state = checkpointing.abstract_with_shardings(unboxed, state_sharding)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding.batch_sharding(
        mesh, len(v.shape))) for k, v in abstract_batch(config, stage,
                                                        config.batch_size).items()}
    frozen = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=sharding.replicated(mesh)), stage.frozen())
    compiled = loop.jit_train_step(stage, state_sharding).lower(
        state, batch, frozen).compile()
    report = {"program": "train_step", "memory": _memory(compiled),
              "flops_per_chip": _flops(compiled)}
    if sample_batch and config.stage == "ar":
      report["sampler"] = _compile_sampler(stage, unboxed, state_sharding, mesh,
                                           sample_batch)
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(unboxed.params))
  report.update(describe_run(config, target, len(devices), dict(mesh.shape)),
                parameters=params)
  report["flops_per_step"] = report["flops_per_chip"] * len(devices)
  if config.stage in ("ar", "mlm"):
    report["model_flops_per_step"] = transformer_train_flops(
        params, config.batch_size, stage.length * (1 if stage.causal else stage.num_subcodes),
        config.model.num_layers, config.model.dim)
  return report


def describe_run(config, target: Target, chips: int, mesh: dict) -> dict:
  """The report's fields that say what was compiled, for what."""
  return dict(stage=config.stage, topology=target.name, chip=target.chip,
              chips=chips, mesh=mesh, batch=config.batch_size,
              remat=config.model.get("remat", "none"),
              dtype=config.model.get("dtype", ""),
              hbm_bytes=int(target.hbm_gib * GIB) if target.hbm_gib else 0)


def transformer_train_flops(params: int, batch: int, seq: int, layers: int,
                            dim: int) -> float:
  """Model FLOPs of one training step: 6 N per token (forward + backward
  matmuls) plus attention's 12 L S d per token (QK^T and AV, not halved for
  causal masks). XLA's own count sees a scanned layer (scan_layers=True)
  once, so this is the number to compare with peak FLOP/s."""
  return float(batch * seq * (6 * params + 12 * layers * seq * dim))


def _compile_sampler(stage, unboxed, state_sharding, mesh, batch: int) -> dict:
  """The AR sampler (elm_jax.sampling), jitted as the sample command runs it."""
  settings = SamplerSettings(cfg_scale=4.0, cfg_schedule="linear")  # ELM's FID setting
  params = checkpointing.abstract_with_shardings(unboxed.ema_params,
                                                 state_sharding.ema_params)
  labels = jax.ShapeDtypeStruct((batch,), np.int32,
                                sharding=sharding.batch_sharding(mesh, 1))
  rng = jax.ShapeDtypeStruct((2,), np.uint32, sharding=sharding.replicated(mesh))
  compiled = jit_sampler(stage.model, settings).lower(params, labels, rng).compile()
  return {"program": "sampler", "batch": batch, "memory": _memory(compiled),
          "flops_per_chip": _flops(compiled)}


# ------------------------------------------------------------------ report
def _gib(n: int) -> str:
  return f"{n / GIB:.2f}"


def format_report(report: dict) -> str:
  """A human-readable table of one report."""
  hbm = report["hbm_bytes"]
  lines = [f"{report['stage']} step, {report['parameters'] / 1e6:.1f}M parameters, "
           f"batch {report['batch']}, on {report['topology']} ({report['chips']} "
           f"{report['chip']} chips), mesh {report['mesh']}, remat "
           f"{report['remat']}, {report['dtype']}"]
  programs = [report] + ([report["sampler"]] if "sampler" in report else [])
  lines.append(f"{'program':<12}{'args GiB':>10}{'out GiB':>10}{'alias GiB':>10}"
               f"{'temp GiB':>10}{'total GiB':>10}{'HBM GiB':>9}{'fits':>6}"
               f"{'TFLOP/chip':>12}")
  for p in programs:
    m = p["memory"]
    fits = "-" if not hbm else ("yes" if m["total"] <= hbm else "NO")
    lines.append(f"{p['program']:<12}{_gib(m['arguments']):>10}{_gib(m['outputs']):>10}"
                 f"{_gib(m['aliased']):>10}{_gib(m['temporaries']):>10}"
                 f"{_gib(m['total']):>10}{(_gib(hbm) if hbm else '-'):>9}{fits:>6}"
                 f"{p['flops_per_chip'] / 1e12:>12.2f}")
  lines.append(f"train step: {report['flops_per_step'] / 1e12:.1f} TFLOP over "
               "all chips by XLA's count (a scanned layer counted once)")
  if "model_flops_per_step" in report:
    lines.append(f"train step: {report['model_flops_per_step'] / 1e12:.1f} model "
                 f"TFLOP (6 N + attention per token), "
                 f"{report['model_flops_per_step'] / report['chips'] / 1e12:.2f} per chip")
  return "\n".join(lines)


FIX = ("shard the state (--config.mesh.fsdp=-1 --config.mesh.data=1), add "
       "--config.model.remat=full, lower the batch or use more chips")


def overflow(report: dict) -> str:
  """'' when every program fits the chip, else a message naming the overflow."""
  hbm = report["hbm_bytes"]
  if not hbm:
    return ""
  programs = [report] + ([report["sampler"]] if "sampler" in report else [])
  over = [p for p in programs if p["memory"]["total"] > hbm]
  return "; ".join(
      f"{p['program']} needs {_gib(p['memory']['total'])} GiB per chip "
      f"(temporaries {_gib(p['memory']['temporaries'])}, arguments "
      f"{_gib(p['memory']['arguments'])}) but a {report['chip']} chip has "
      f"{_gib(hbm)} GiB: {FIX}" for p in over)


def compile_refused(config, target: Target, chips: int, message: str) -> dict:
  """The report when XLA stops compiling because the program cannot fit."""
  first = message.strip().splitlines()[0]
  return dict(describe_run(config, target, chips, dict(config.mesh)),
              error=f"the {target.chip} compiler ran out of memory ({first}): {FIX}")


def write_json(path: str, report: dict) -> None:
  """Atomically (elm_jax.atomic_files): a crash leaves the old file or the new
  one, never half."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  atomic_files.write_text(path, json.dumps(report, indent=1))


def run(config, target: Target, json_path: str = "", sample_batch: int = 0) -> int:
  """Compiles, prints the report; 0 if it fits, 1 (with the message) if not."""
  devices = target_devices(target)
  try:
    report = compile_train_step(config, target, devices, sample_batch)
  except RuntimeError as e:  # the TPU compiler itself refuses what cannot fit
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    report = compile_refused(config, target, len(devices), str(e))
  else:
    print(format_report(report))
  problem = report.get("error") or overflow(report)
  report["fits"] = not problem
  if json_path:
    write_json(json_path, report)
  if problem:
    print(f"DOES NOT FIT: {problem}", file=sys.stderr)
    return 1
  return 0
