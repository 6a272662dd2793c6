"""grain loaders over a pre-tokenized dataset written by `elm_jax.tokenize`.

Records: {"probs": uint8 [h, w, K] (p = q / 255), "label": int32}. Training
picks the flipped or unflipped probabilities at random per record (the
horizontal-flip augmentation) from grain's per-record rng, so resuming from a
saved iterator state replays the same batches. Evaluation is one ordered pass
padded to whole batches, with "mask".
"""

import json
import math
import os

import grain
import numpy as np

from elm_jax.data import global_batches


class TokenSource:
  """Memory-mapped probs (and flipped probs) of one split."""

  def __init__(self, root: str, split: str):
    directory = os.path.join(root, split)
    if not os.path.isdir(directory):
      raise FileNotFoundError(
          f"No tokenized split {directory!r}; run `python -m elm_jax.tokenize "
          f"--tokenizer=BAE_WORKDIR --out={root} --splits={split}`.")
    self.probs = np.load(os.path.join(directory, "probs.npy"), mmap_mode="r")
    flipped = os.path.join(directory, "probs_flipped.npy")
    self.flipped = np.load(flipped, mmap_mode="r") if os.path.exists(flipped) else None
    self.labels = np.load(os.path.join(directory, "labels.npy"))
    if len(self.labels) != len(self.probs):
      raise ValueError(f"{directory}: {len(self.probs)} probs but "
                       f"{len(self.labels)} labels; tokenize it again.")

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    return {"probs": np.asarray(self.probs[i]), "label": np.int32(self.labels[i]),
            "flipped": None if self.flipped is None else np.asarray(self.flipped[i])}


def read_meta(root: str) -> dict:
  with open(os.path.join(root, "meta.json")) as f:
    return json.load(f)


class _PickOrientation(grain.transforms.RandomMap):
  def random_map(self, record, rng: np.random.Generator):
    flipped = record.pop("flipped")
    if flipped is not None and rng.random() < 0.5:
      record["probs"] = flipped
    return record


class _DropFlipped(grain.transforms.Map):
  def map(self, record):
    record.pop("flipped")
    return record


class _Pad:
  def __init__(self, parent, length):
    self.parent, self.length = parent, length

  def __len__(self):
    return self.length

  def __getitem__(self, i):
    record = self.parent[i if i < len(self.parent) else 0]
    record["mask"] = np.float32(i < len(self.parent))
    return record


def make_loader(root: str, split: str, global_batch_size: int, train: bool,
                seed: int) -> grain.DataLoader:
  shard = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  if global_batch_size % shard.shard_count:
    raise ValueError(f"global_batch_size={global_batch_size} must be a multiple "
                     f"of the {shard.shard_count} processes.")
  batch = global_batch_size // shard.shard_count
  src = TokenSource(root, split)
  loader_shard = shard
  if train:  # each process reads its slice of each global batch (global_batches.py)
    ops = [_PickOrientation()]
    sampler = global_batches.ProcessSliceSampler(
        grain.samplers.IndexSampler(len(src), shuffle=True, num_epochs=None,
                                    seed=seed),
        global_batch_size, shard.shard_index, shard.shard_count)
    loader_shard = grain.sharding.NoSharding()
  else:
    ops = [_DropFlipped()]
    src = _Pad(src, math.ceil(len(src) / global_batch_size) * global_batch_size)
    sampler = grain.samplers.IndexSampler(len(src), shard_options=shard,
                                          shuffle=False, num_epochs=1, seed=seed)
  ops.append(grain.transforms.Batch(batch_size=batch, drop_remainder=train))
  return grain.DataLoader(data_source=src, sampler=sampler, operations=ops,
                          shard_options=loader_shard)
