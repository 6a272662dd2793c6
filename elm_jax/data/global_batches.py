"""One process's share of a global sample stream, the same for any process count.

Global batch t is the records at global sampler positions [t*B, (t+1)*B),
B the global batch size; process p of P reads the slice
[t*B + p*b, t*B + (p+1)*b), b = B / P, which is exactly the rows of the
global array that `jax.make_array_from_process_local_data` gives its devices
(the batch axis is split in process order). A run on 1 process and on 8
therefore trains on the same global batches, record for record, with the same
per-record augmentation rng (grain's Philox(seed + global position)).

grain's DataLoader with W workers hands worker w every W-th local position
and returns the workers' batches round-robin; the position map below
accounts for that, so the guarantee holds for any worker_count too.
"""

import sys

import grain


class ProcessSliceSampler:
  """Wraps a global grain sampler; local position j -> global position.

  Use it with the DataLoader's shard_options=NoSharding(): the process
  split is done here.
  """

  def __init__(self, sampler, global_batch_size: int, process_index: int,
               process_count: int, worker_count: int = 0):
    if global_batch_size % process_count:
      raise ValueError(f"global_batch_size={global_batch_size} must be a multiple "
                       f"of jax.process_count()={process_count}; change the batch size.")
    self.sampler = sampler
    self.global_batch = global_batch_size
    self.local_batch = global_batch_size // process_count
    self.process_index = process_index
    self.process_count = process_count
    self.workers = max(worker_count, 1)

  def global_position(self, j: int) -> int:
    worker, step = j % self.workers, j // self.workers
    batch_of_worker, row = divmod(step, self.local_batch)
    batch = batch_of_worker * self.workers + worker  # round-robin order
    return (batch * self.global_batch + self.process_index * self.local_batch
            + row)

  def __len__(self) -> int:
    total = len(self.sampler)
    if total == sys.maxsize:  # infinite
      return total
    whole = total // (self.global_batch * self.workers) * self.workers
    return whole * self.local_batch

  def __getitem__(self, j: int) -> grain.RecordMetadata:
    if j < 0 or j >= len(self):
      raise IndexError(f"local position {j} out of range [0, {len(self)}).")
    meta = self.sampler[self.global_position(j)]
    return grain.RecordMetadata(index=j, record_key=meta.record_key,
                                rng=meta.rng)

  def __repr__(self) -> str:  # part of the saved iterator state
    return (f"ProcessSliceSampler({self.sampler!r}, global_batch_size="
            f"{self.global_batch}, process={self.process_index}/"
            f"{self.process_count}, workers={self.workers})")
