"""grain input pipelines: `make_loader` and `num_examples`.

Train: seeded global shuffle (grain IndexSampler, reshuffled every epoch), infinite repeat,
  each process reading its slice of every global batch (the same global batches for any process
  count: global_batches.py), random augmentation from grain's per-record rng
  (Philox(seed + sampler index)), so a restored iterator state replays the exact same batches.
Eval: one pass. The split is padded up to a multiple of global_batch_size * max(worker_count, 1)
  with copies of record 0 marked mask=0 (never decoded), then split into equal contiguous
  per-process shards, so every process yields the same number of full batches and sum(mask) over
  all processes equals the split size (minus any undecodable images, which in eval also come out
  zeroed with mask 0). With worker_count=0 the records come in split order; with workers, grain
  hands worker w every worker_count-th record and returns the workers' batches round-robin.

Batches: {"image": uint8 [b, S, S, 3], "label": int32 [b], "mask": float32 [b] (eval only)},
b = global_batch_size // jax.process_count().
"""

import math

import grain
import numpy as np

from elm_jax.data import global_batches
from elm_jax.data import sources
from elm_jax.data import transforms

# grain's default (16 threads, 500-record buffer) rescans the whole buffer on every record, which
# cost about 0.6 ms per record here; a 64-record buffer keeps parallel reads at a fraction of that.
_READ_OPTIONS: grain.ReadOptions = grain.ReadOptions(num_threads=8, prefetch_buffer_size=64)


class _EvalPadSource:
  """Pads `parent` to `length` records (copies of record 0); adds "mask" (1 real, 0 pad)."""

  def __init__(self, parent, length: int):
    self.parent, self.length = parent, length

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict:
    real = index < len(self.parent)
    record = self.parent[index if real else 0]
    record["mask"] = np.float32(real)
    return record

  def __repr__(self) -> str:
    return f"_EvalPadSource({self.parent!r}, length={self.length})"


def _process_batch_size(global_batch_size: int, shard_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % shard_count:
    raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                     f"jax.process_count()={shard_count}; change the batch size.")
  return global_batch_size // shard_count


def _check_labels(src, source: str, num_classes: int) -> None:
  if src.num_labels is not None and src.num_labels > num_classes:
    what = {"folder": f"{src.num_labels} class folders in {getattr(src, 'root', '')}",
            "tfds": f"{src.num_labels} label classes in tfds dataset {getattr(src, 'name', '')}",
            }.get(source, f"labels up to {src.num_labels - 1} in {source}")
    raise ValueError(f"Found {what}, but num_classes={num_classes}: labels would fall outside "
                     f"[0, {num_classes}). Raise num_classes or fix the dataset.")


def make_loader(
    source: str,
    path: str,
    name: str,
    split: str,
    image_size: int,
    global_batch_size: int,
    train: bool,
    seed: int,
    num_classes: int,
    worker_count: int = 0,
    *,
    shard_options: grain.sharding.ShardOptions | None = None,
) -> grain.DataLoader:
  """Builds the grain DataLoader; `iter(loader)` has get_state()/set_state().

  Args:
    source: "fashion_mnist" | "tfds" | "folder".
    path: Fashion-MNIST dir ("" = /usr/share/datasets/fashion-mnist), tfds data_dir ("" = tfds
      default), or image-folder root.
    name: tfds dataset name (e.g. "imagenet2012"); ignored otherwise.
    split: e.g. "train", "test", "validation" (tfds accepts slices like "train[:1%]").
    image_size: output side S.
    global_batch_size: summed over processes; must divide by the process count.
    train: augmented infinite shuffled stream, else one ordered padded pass with "mask".
    seed: 32-bit non-negative seed for shuffling and augmentation.
    num_classes: labels must lie in [0, num_classes); checked here.
    worker_count: grain worker processes (0 = in-process).
    shard_options: overrides grain.sharding.ShardByJaxProcess (tests, custom topologies).
  """
  if image_size <= 0:
    raise ValueError(f"image_size={image_size} must be positive.")
  shard = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
  shard = grain.sharding.ShardOptions(shard.shard_index, shard.shard_count, drop_remainder=True)
  batch_size = _process_batch_size(global_batch_size, shard.shard_count)
  src = sources.open_source(source, path, name, split)
  _check_labels(src, source, num_classes)

  if source == "fashion_mnist":
    ops = [transforms.GrayToRGB(image_size)]
    ops += [transforms.RandomFlip()] if train else []
  else:
    ops = [transforms.DecodeImage(num_records=len(src) if train else 0)]
    if train:
      ops += [transforms.DropUndecodable(), transforms.TrainCrop(image_size)]
    else:
      ops += [transforms.EvalCrop(image_size)]
  ops += [transforms.FinalizeRecord(),
          grain.transforms.Batch(batch_size=batch_size, drop_remainder=train)]

  loader_shard = shard
  if train:
    if len(src) < shard.shard_count:
      raise ValueError(f"{src!r} has fewer records than the {shard.shard_count} processes.")
    # Each process reads its slice of every global batch of one global stream, so the global
    # batches do not depend on the process count (global_batches.py).
    sampler = global_batches.ProcessSliceSampler(
        grain.samplers.IndexSampler(num_records=len(src), shuffle=True, num_epochs=None,
                                    seed=seed),
        global_batch_size, shard.shard_index, shard.shard_count, worker_count)
    loader_shard = grain.sharding.NoSharding()
  else:
    # Each grain worker batches every worker_count-th record of its process's shard, so pad to
    # whole batches per worker: every batch is full and every process yields the same count.
    unit = global_batch_size * max(worker_count, 1)
    padded = math.ceil(len(src) / unit) * unit
    src = _EvalPadSource(src, padded)
    sampler = grain.samplers.IndexSampler(
        num_records=padded, shard_options=shard, shuffle=False, num_epochs=1, seed=seed)
  return grain.DataLoader(data_source=src, sampler=sampler, operations=ops,
                          worker_count=worker_count, shard_options=loader_shard,
                          read_options=_READ_OPTIONS)


def num_examples(source: str, path: str, name: str, split: str) -> int:
  """Records in the split (image folders: files listed, including ones that later fail)."""
  if source == "fashion_mnist":
    return sources.fashion_mnist_size(path, split)
  return len(sources.open_source(source, path, name, split))


def loader_from_config(data, split: str, train: bool, global_batch_size: int,
                       seed: int) -> grain.DataLoader:
  """make_loader with the fields of a config's `data` block."""
  return make_loader(source=data.source, path=data.path, name=data.name,
                     split=split, image_size=data.image_size,
                     global_batch_size=global_batch_size, train=train, seed=seed,
                     num_classes=data.num_classes, worker_count=data.worker_count)


def eval_pass(loader, eval_config, full: bool):
  """Batches of one eval pass: all of them for the final evaluation (when
  eval.full_at_end), else the first eval.max_batches (0 = all)."""
  limit = 0 if full and eval_config.full_at_end else eval_config.max_batches
  for i, batch in enumerate(loader):
    if 0 < limit <= i:
      return
    yield batch


def check_eval_count(count: float, data) -> None:
  """An evaluation pass that counted no example (every image undecodable, or
  eval.max_batches cut before any) has no mean to report."""
  if count <= 0:
    raise ValueError(
        f"The evaluation pass over data.eval_split={data.eval_split!r} of "
        f"{data.source} {data.get('path', '')!r} counted no example: its images "
        "are all undecodable (see the skip warnings above) or it is empty. Fix "
        "or replace the files, or point data.eval_split at another split.")
