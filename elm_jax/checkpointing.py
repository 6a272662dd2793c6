"""Orbax checkpoints holding the train state, the data-iterator state and the config.

Saves are asynchronous; a save is only visible once orbax has finalised it
(atomic rename), so a run killed mid-save leaves the previous checkpoint as
the latest one. Restores go straight into sharded arrays when given a tree of
jax.ShapeDtypeStruct with shardings.
"""

import contextlib
import dataclasses
import datetime
import json
import logging as std_logging
import os
import shutil
from typing import Any, Callable

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from absl import logging

from elm_jax.bad_input import local_path

CHECKPOINT_DIR = "checkpoints"
# Where a resume moves checkpoints that do not read back (never deleted).
BROKEN_DIR = "checkpoints_broken"


class BrokenCheckpointError(ValueError):
  """A checkpoint is missing files or does not read back."""


@contextlib.contextmanager
def _quiet_asyncio():
  """Tensorstore's failed reads also log one asyncio error per array."""
  logger = std_logging.getLogger("asyncio")
  level = logger.level
  logger.setLevel(std_logging.CRITICAL)
  try:
    yield
  finally:
    logger.setLevel(level)


class Checkpointer:
  """One run's checkpoints under `workdir/checkpoints/<step>/`."""

  def __init__(self, workdir: str, max_to_keep: int = 3,
               asynchronous: bool = True, read_only: bool = False):
    """read_only: for reading another run; creates, writes and deletes
    nothing under workdir."""
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "data", "config"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            enable_async_checkpointing=asynchronous and not read_only))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any | None,
           config: dict) -> None:
    items = dict(state=ocp.args.StandardSave(state),
                 config=ocp.args.JsonSave(config))
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state: Any | None = None,
              data_iterator: Any | None = None) -> Any:
    """Restores `state` (and the iterator in place) from checkpoint `step`.

    abstract_state: ShapeDtypeStructs with shardings to restore into; None
    gives the arrays as saved, on this process's first device.
    """
    if abstract_state is None:
      abstract_state = self._on_local_device(step)
    items = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iterator is not None:
      if os.path.isdir(os.path.join(self.directory, str(step), "data")):
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
      else:  # e.g. a converted release: no input pipeline was saved.
        logging.info("Checkpoint %s/%d has no data-iterator state; the input "
                     "pipeline starts from its beginning.", self.directory, step)
    try:
      with _quiet_asyncio():
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax raises many types for broken files.
      others = [s for s in self.all_steps() if s != step]
      detail = repr(e)
      if len(detail) > 1500:  # orbax lists whole trees
        detail = detail[:1500] + f"... ({len(detail) - 1500} more characters)"
      raise BrokenCheckpointError(
          f"Could not restore checkpoint {self.directory}/{step}: {detail}. The "
          "checkpoint is missing files or does not match this config. Move "
          f"that directory aside to resume from an earlier step {others}, or "
          "start with a new --workdir.") from e
    return restored.state

  def restore_latest_intact(self, abstract_state: Any, data_iterator: Any,
                            check: Callable[[int], None] | None = None
                            ) -> tuple[int | None, Any]:
    """(step, state) of the newest checkpoint that reads back whole, or
    (None, None) without checkpoints. Newer broken ones are moved to
    WORKDIR/checkpoints_broken/ with a warning; `check(step)` runs before
    each restore (its errors are not breakage and propagate). Raises
    BrokenCheckpointError, moving nothing, when every checkpoint is broken."""
    broken = []
    for step in sorted(self.all_steps(), reverse=True):
      if check is not None:
        check(step)
      try:
        state = self.restore(step, abstract_state, data_iterator)
      except BrokenCheckpointError as e:
        broken.append((step, e))
        continue
      if broken:
        self._move_aside([s for s, _ in broken], step)
      return step, state
    if broken:
      raise BrokenCheckpointError(
          f"Every checkpoint in {self.directory} is broken (steps "
          f"{[s for s, _ in broken]}; the newest: {broken[0][1]}). Move "
          f"{self.directory} aside to train from the start.")
    return None, None

  def _move_aside(self, steps: list[int], good: int) -> None:
    destination = os.path.join(os.path.dirname(self.directory), BROKEN_DIR)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if jax.process_index() == 0:
      os.makedirs(destination, exist_ok=True)
      for step in steps:
        target = os.path.join(destination, f"{step}-{stamp}")
        shutil.move(os.path.join(self.directory, str(step)), target)
        logging.warning("Checkpoint %s/%d does not read back; moved it to %s and "
                        "resuming from step %d.", self.directory, step, target, good)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # noqa: PLC0415
      multihost_utils.sync_global_devices("elm_jax: broken checkpoints moved")
    self.manager.reload()

  def check_for_errors(self) -> None:
    """Raises the error of a failed asynchronous save, if one failed."""
    self.manager.check_for_errors()

  def _on_local_device(self, step: int) -> Any:
    """The saved state's shapes on jax.local_devices()[0]. Without a target,
    orbax would reuse the saved device (cpu:0), which other processes of a
    multi-process run do not have."""
    path = epath.Path(self.directory) / str(step) / "state"
    try:
      saved = ocp.StandardCheckpointHandler().metadata(path).tree
    except Exception:  # pylint: disable=broad-except
      return None  # restore reports the broken checkpoint by name.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device)
        if hasattr(m, "shape") and hasattr(m, "dtype") else m, saved)

  def param_shapes(self, step: int) -> dict[str, tuple] | None:
    """{"params/.../kernel": shape} of the saved params and ema_params, from
    the metadata only; None when that cannot be read (restore reports it)."""
    path = epath.Path(self.directory) / str(step) / "state"
    try:
      saved = ocp.StandardCheckpointHandler().metadata(path).tree
      saved = {k: saved[k] for k in ("params", "ema_params") if k in saved}
    except Exception:  # pylint: disable=broad-except
      return None
    return leaf_shapes(saved)

  def restore_config(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    path = os.path.join(self.directory, str(step), "config", "metadata")
    try:
      with open(path) as f:
        return json.load(f)
    except (OSError, ValueError) as e:
      others = [s for s in self.all_steps() if s != step]
      raise ValueError(
          f"Checkpoint {self.directory}/{step} has no readable config ({path}: "
          f"{type(e).__name__}: {e}); the checkpoint is incomplete or corrupt. "
          f"Move that directory aside to use an earlier step {others}.") from e

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


# What a run of each kind is, for the messages of load_run.
RUN_KINDS = {"tokenizer": (("bae",), "configs/bae.py"),
             "generator": (("ar", "mlm"), "configs/ar.py")}


@dataclasses.dataclass
class SavedRun:
  """The latest checkpoint of a training run, read back."""
  step: int
  config: ml_collections.ConfigDict  # the run's config
  state: Any  # the train state as saved, on this process's first device


def load_run(workdir: str, kind: str, flag: str) -> SavedRun:
  """The latest checkpoint of the `kind` run ("tokenizer" or "generator") in
  `workdir`, which the option `flag` named (for the error messages).

  Reads only: a wrong path is reported, never created.
  """
  stages, train_config = RUN_KINDS[kind]
  if not workdir:
    raise ValueError(f"{flag} is empty; pass the workdir of a {kind} run "
                     f"({flag}=DIR).")
  train = (f"train one with `python -m elm_jax.main --config={train_config} "
           f"--workdir={workdir}` first")
  local_path(flag, workdir)
  if not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
    raise FileNotFoundError(f"{flag}={workdir!r} holds no checkpoint (no "
                            f"{CHECKPOINT_DIR}/ directory there); {train}.")
  ckpt = Checkpointer(workdir, read_only=True)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"{flag}={workdir!r} holds no checkpoint; {train}.")
    config = ml_collections.ConfigDict(ckpt.restore_config(step))
    if config.get("stage") not in stages:
      raise ValueError(f"{flag}={workdir!r} is a {config.get('stage')!r} run, "
                       f"not a {kind} ({' / '.join(stages)}) run.")
    state = ckpt.restore(step)
  finally:
    ckpt.close()
  return SavedRun(step, config, state)


def leaf_shapes(tree: Any) -> dict[str, tuple]:
  """{"a/b/c": shape} for every leaf with a shape."""
  def name(path):
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                    for k in path)
  return {name(p): tuple(x.shape)
          for p, x in jax.tree_util.tree_leaves_with_path(tree) if hasattr(x, "shape")}


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)


def log_restore(step: int, directory: str) -> None:
  logging.info("Resuming from checkpoint %s/%d", directory, step)
