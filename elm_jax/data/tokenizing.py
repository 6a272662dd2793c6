"""The work of `python -m elm_jax.tokenize` (see its docstring): a dataset's
bit probabilities under a trained BAE, stored for elm_jax.data.token_pipeline.

Imported by the command only after its flags parse: jax takes seconds to
import, and `--help` needs none of it.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from elm_jax import atomic_files, sharding
from elm_jax.data import pipeline
from elm_jax.train import frozen_tokenizer

META = "meta.json"


def quantize(probs: jax.Array) -> jax.Array:
  """float probabilities in [0, 1] -> uint8 round(255 p)."""
  return jnp.round(jnp.clip(probs, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def dequantize(q: jax.Array) -> jax.Array:
  return q.astype(jnp.float32) / 255.0


def sharded_encoder(tok: frozen_tokenizer.FrozenTokenizer, batch_size: int):
  """(encode(params, images [B,H,W,3]) -> uint8 [B,h,w,K], params, B): the
  batch split over this process's devices, B rounded up to their count."""
  mesh = sharding.make_mesh({"data": -1}, jax.local_devices())
  rounded = -(-batch_size // mesh.size) * mesh.size
  if rounded != batch_size:
    logging.info("--batch_size=%d rounded up to %d (a multiple of the %d "
                 "devices).", batch_size, rounded, mesh.size)
  replicated = NamedSharding(mesh, P())
  split_batch = NamedSharding(mesh, P(sharding.BATCH_AXES))
  encode = jax.jit(lambda p, x: quantize(
      frozen_tokenizer.probabilities(tok.model, p, x)),
                   in_shardings=(replicated, split_batch), out_shardings=split_batch)
  return encode, jax.device_put(tok.params, replicated), rounded


def tokenize_split(tok: frozen_tokenizer.FrozenTokenizer, data: dict, split: str,
                   out_dir: str, batch_size: int, flips: bool) -> int:
  """Encodes one split into out_dir/<split>/; returns the example count."""
  final = os.path.join(out_dir, split)
  if os.path.exists(final):
    raise FileExistsError(f"{final} exists; remove it to tokenize again.")
  n = pipeline.num_examples(data["source"], data["path"], data["name"], split)
  encode, params, batch_size = sharded_encoder(tok, batch_size)
  loader = pipeline.make_loader(
      source=data["source"], path=data["path"], name=data["name"], split=split,
      image_size=data["image_size"], global_batch_size=batch_size, train=False,
      seed=0, num_classes=data["num_classes"])
  tmp = final + ".partial"
  os.makedirs(tmp, exist_ok=True)
  g, k = tok.grid_size, tok.bits
  names = ["probs"] + (["probs_flipped"] if flips else [])
  arrays = {name: np.lib.format.open_memmap(
      os.path.join(tmp, f"{name}.npy"), mode="w+", dtype=np.uint8,
      shape=(n, g, g, k)) for name in names}
  labels = np.zeros((n,), np.int32)
  written, start, every = 0, time.time(), max(n // 10, 1)
  for batch in loader:
    keep = batch["mask"] > 0
    images = batch["image"]
    count = int(keep.sum())
    rows = slice(written, written + count)
    arrays["probs"][rows] = np.asarray(encode(params, images))[keep]
    if flips:
      arrays["probs_flipped"][rows] = np.asarray(
          encode(params, images[:, :, ::-1]))[keep]
    labels[rows] = batch["label"][keep]
    if (written + count) // every > written // every:  # about every 10%
      done, seconds = written + count, time.time() - start
      eta = seconds / done * (n - done)
      logging.info("%s: %d of %d examples (%.1f images/s), ETA %dm%02ds", split,
                   done, n, done / seconds, eta // 60, eta % 60)
    written += count
  if written != n:
    raise RuntimeError(f"{split}: encoded {written} of {n} examples (images "
                       "that failed to decode are not tokenized).")
  for a in arrays.values():
    a.flush()
  atomic_files.write_with(os.path.join(tmp, "labels.npy"), lambda f: np.save(f, labels))
  os.rename(tmp, final)
  logging.info("%s: %d examples -> %s", split, n, final)
  return n


def _write_meta(out_dir: str, meta: dict) -> None:
  """Replaces OUT/meta.json atomically (a kill leaves the old or the new)."""
  atomic_files.write_text(os.path.join(out_dir, META), json.dumps(meta, indent=1))


def _splits_already_written(out_dir: str, splits: list, meta: dict) -> dict:
  """Checks, before any work, that OUT can take these splits: none of them
  exists yet and splits already there came from the same tokenizer and
  settings. Returns the counts of the splits already there."""
  there = [s for s in splits if os.path.exists(os.path.join(out_dir, s))]
  if there:
    rest = [s for s in splits if s not in there]
    raise FileExistsError(
        f"{', '.join(os.path.join(out_dir, s) for s in there)} exists; remove "
        "it to tokenize again"
        + (f", or pass --splits={','.join(rest)} to add only the others"
           if rest else "") + " (nothing was written).")
  path = os.path.join(out_dir, META)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    old = json.load(f)
  differ = sorted(k for k in meta if old.get(k) != meta[k])
  if differ:
    raise ValueError(
        f"{out_dir} holds splits {sorted(old.get('splits', {}))} tokenized with "
        f"other settings ({', '.join(f'{k}: {old.get(k)!r} there, {meta[k]!r} now' for k in differ)}); "
        "use another --out (nothing was written).")
  return dict(old.get("splits", {}))


def tokenize(tokenizer_dir: str, out_dir: str, splits: list, batch_size: int,
             flips: bool, data_overrides: dict | None = None) -> dict:
  """Tokenizes `splits` into out_dir; returns the meta.json written.

  A directory may be filled over several runs (say train now, test later)
  by the same tokenizer with the same settings; meta.json lists every split
  and is rewritten after each one.
  """
  tok = frozen_tokenizer.load(tokenizer_dir, flag="--tokenizer")
  frozen_tokenizer.require_binary(
      tok, tokenizer_dir, "elm_jax.tokenize (generators over VQ or LFQ codes "
      "encode in the train step, with config.data.tokens empty)")
  data = dict(tok.config.data)
  data.update({k: v for k, v in (data_overrides or {}).items() if v})
  meta = dict(tokenizer=os.path.abspath(tokenizer_dir), step=tok.step,
              bits=tok.bits, grid_size=tok.grid_size,
              image_size=data["image_size"], num_classes=data["num_classes"],
              flips=flips, quantization="p = q / 255")
  os.makedirs(out_dir, exist_ok=True)
  counts = _splits_already_written(out_dir, splits, meta)
  for split in splits:
    counts[split] = tokenize_split(tok, data, split, out_dir, batch_size, flips)
    _write_meta(out_dir, dict(meta, splits=counts))
  return dict(meta, splits=counts)
