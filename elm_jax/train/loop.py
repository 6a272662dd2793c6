"""The one training loop. Stages (BAE, AR, MLM) plug in through `Stage`.

The loop owns the mesh, sharded initialisation, checkpoint/resume, metric
writing, periodic evaluation and the non-finite guard, and the run's faults:
it holds the workdir (`workdir_lock`), resumes from the newest checkpoint
that reads back, and saves and stops on SIGTERM/SIGINT (`preemption`),
as docs/reliability.md lists. A stage owns its model,
its pure `train_step(state, batch, frozen)` and its evaluation. `frozen` holds
arrays the step reads but never updates and that are not checkpointed
(LPIPS weights, a frozen tokenizer).
"""

import json
import os
import time
from typing import Any, Iterator, Protocol

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging

from elm_jax import checkpointing, distributed, metrics, sharding, workdir_lock
from elm_jax.config_error import ConfigError
from elm_jax.train import preemption
from elm_jax.train.state import TrainState


class Stage(Protocol):
  """What a training stage provides to the loop."""

  def init(self, rng: jax.Array) -> TrainState:
    """Fresh state; parameters may be boxed with logical axis names."""

  def train_step(self, state: TrainState, batch: dict, frozen: Any
                 ) -> tuple[TrainState, dict]:
    """Pure: one optimisation step; returns scalar metrics."""

  def frozen(self) -> Any:
    """Host arrays passed to every step (replicated), or {}."""

  def train_loader(self) -> Any:
    """An iterable whose iterator has get_state/set_state (grain)."""

  def eval_batches(self, full: bool) -> Iterator[dict]:
    """A pass over the held-out split (all of it if `full`); with "mask"."""

  def evaluate(self, state: TrainState, frozen: Any, batches: Iterator[dict],
               mesh: jax.sharding.Mesh) -> tuple[dict, dict]:
    """(scalars, images) on held-out data."""


class NonFiniteLossError(FloatingPointError):
  pass


def _config_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stage: Stage) -> TrainState:
  """Trains `stage` to config.total_steps, resuming from `workdir` if possible."""
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(config.batch_size, mesh)
  if "eval" in config and "batch_size" in config.eval:
    sharding.check_batch(config.eval.batch_size, mesh, "eval.batch_size")
  rules = sharding.rules_from_config(config)
  logging.info("Mesh %s on %d devices (%d processes)", dict(mesh.shape),
               jax.device_count(), jax.process_count())

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    return _run(config, workdir, stage, mesh, rules)


def sharded_state(stage: Stage, mesh, rules, rng):
  """(unboxed abstract state, its shardings, jitted init) from logical names."""
  abstract = jax.eval_shape(stage.init, rng)
  state_sharding = sharding.tree_shardings(abstract, mesh, rules)
  # Runs once: XLA's optimisation passes would cost more than they save.
  init = jax.jit(lambda r: sharding.unbox(stage.init(r)),
                 out_shardings=state_sharding,
                 compiler_options={"xla_backend_optimization_level": 0,
                                   "xla_llvm_disable_expensive_passes": True})
  return sharding.unbox(abstract), state_sharding, init


def jit_train_step(stage: Stage, state_sharding):
  """The stage's step with the state's shardings pinned and the state donated."""
  return jax.jit(stage.train_step, in_shardings=(state_sharding, None, None),
                 out_shardings=(state_sharding, None), donate_argnums=(0,))


def _run(config, workdir, stage, mesh, rules) -> TrainState:
  rng = jax.random.PRNGKey(config.seed)
  unboxed, state_sharding, init = sharded_state(stage, mesh, rules, rng)

  loader = stage.train_loader()
  data_iter = iter(loader)
  _check_eval_split(stage)
  # After the config and data checks: a refused start leaves no empty workdir.
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.WorkdirLock(workdir):
    ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
    try:
      return _resume_and_train(config, workdir, stage, mesh, rng, unboxed,
                               state_sharding, init, data_iter, ckpt)
    finally:  # an exception must not lose a save already in flight.
      ckpt.close()


def _resume_and_train(config, workdir, stage, mesh, rng, unboxed, state_sharding,
                      init, data_iter, ckpt) -> TrainState:
  if ckpt.latest_step() is not None:
    checkpointing.log_restore(ckpt.latest_step(), ckpt.directory)
  start, state = ckpt.restore_latest_intact(
      checkpointing.abstract_with_shardings(unboxed, state_sharding), data_iter,
      check=lambda step: _check_resumable(config, ckpt, step, unboxed))
  fresh = start is None
  if fresh:
    start = 0
    state = init(rng)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(unboxed.params))
    logging.info("Initialised %d trainable parameters", n_params)
  elif jax.process_index() == 0:
    # Steps logged after the checkpoint are trained again: log them once.
    metrics.drop_rows_after(workdir, start)
  # After the restore: a refused resume leaves no new event file behind.
  writer = metrics.create_writer(workdir)
  if fresh:
    writer.write_hparams(_flat_hparams(config))
  try:
    return _train(config, workdir, stage, mesh, state, state_sharding, start,
                  data_iter, ckpt, writer)
  finally:
    writer.flush()


def _final_eval_logged(workdir: str, step: int) -> bool:
  """Whether metrics.jsonl holds an evaluation at `step` (process 0's answer)."""
  logged = False
  if jax.process_index() == 0:
    path = os.path.join(workdir, "metrics.jsonl")
    logged = os.path.exists(path) and any(
        r["step"] == step and any(k.startswith("eval/") for k in r)
        for r in metrics.read_jsonl(workdir))
  return distributed.process_0_says(logged)


def _check_eval_split(stage: Stage) -> None:
  """Every run evaluates at its end: an empty split must fail before training."""
  if next(iter(stage.eval_batches(full=False)), None) is None:
    raise ValueError("The evaluation split has no images (config.data.eval_split); "
                     "name a split that holds some.")


def _train(config, workdir, stage, mesh, state, state_sharding, start, data_iter,
           ckpt, writer) -> TrainState:
  frozen = sharding.place_from_host(stage.frozen(), sharding.replicated(mesh))
  step_fn = jit_train_step(stage, state_sharding)
  total = config.total_steps
  # Progress and ETA on the console only: train/steps_per_sec below is the
  # one steps/s series in the metrics.
  report = metrics.report_progress(num_train_steps=total, writer=None,
                                   every_secs=config.get("progress_every_secs", 30))
  accumulator = metrics.MeanAccumulator()
  cfg_json = _config_dict(config)
  step = start
  tick, tick_step = time.perf_counter(), start
  with preemption.StopSignal() as stop:
    for step in range(start + 1, total + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = sharding.global_batch(next(data_iter), mesh)
        state, step_metrics = step_fn(state, batch, frozen)
      accumulator.add(step_metrics)
      report(step)
      ckpt.check_for_errors()  # a failed asynchronous save ends the run here
      stopping = stop.reached(step) and step < total
      checkpoint_now = step % config.checkpoint_every == 0 or step == total or stopping
      if step % config.log_every == 0 or checkpoint_now:
        scalars = accumulator.fetch()
        bad = metrics.non_finite(scalars)
        if bad:
          ckpt.wait()
          raise NonFiniteLossError(
              f"Non-finite {bad} at step {step}; stopping without saving. The "
              f"last good checkpoint ({ckpt.latest_step()}) in {ckpt.directory} "
              "is intact: lower optim.lr or check the data.")
        now = time.perf_counter()
        scalars["steps_per_sec"] = (step - tick_step) / max(now - tick, 1e-9)
        if hasattr(stage, "tokens_per_step"):
          scalars["tokens_per_sec"] = scalars["steps_per_sec"] * stage.tokens_per_step
        tick, tick_step = now, step
        writer.write_scalars(step, {f"train/{k}": v for k, v in scalars.items()})
      if checkpoint_now:  # before the evaluation: a failing eval loses no steps
        ckpt.save(step, state, data_iter, cfg_json)
        logging.info("Checkpoint of step %d saving to %s", step, ckpt.directory)
      if stopping:
        ckpt.wait()
        ckpt.check_for_errors()
        raise preemption.Stopped(stop.signum, step, ckpt.directory)
      if step % config.eval_every == 0 or step == total:
        _evaluate(stage, state, frozen, mesh, writer, step, final=step == total)
  if start == total and not _final_eval_logged(workdir, start):
    # Trained to the end before, but its final evaluation was cut short.
    logging.info("Training had finished at step %d; evaluating it now.", start)
    _evaluate(stage, state, frozen, mesh, writer, start, final=True)
  logging.info("Finished at step %d", step)
  return state


def _evaluate(stage, state, frozen, mesh, writer, step, final) -> None:
  t0 = time.perf_counter()
  scalars, images = stage.evaluate(state, frozen,
                                   stage.eval_batches(full=final), mesh)
  scalars["seconds"] = time.perf_counter() - t0
  writer.write_scalars(step, {f"eval/{k}": v for k, v in scalars.items()})
  if images:
    writer.write_images(step, {f"eval/{k}": v for k, v in images.items()})
  logging.info("eval at step %d: %s", step,
               ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))


def _check_resumable(config, ckpt, step: int, unboxed) -> None:
  """Refuses, naming the changed config fields, to resume a checkpoint of
  another stage or whose parameters have other shapes than this config's."""
  try:
    saved = ckpt.restore_config(step)
  except (OSError, ValueError):
    saved = None  # restore names the broken checkpoint
  where = f"{ckpt.directory}/{step}"
  if saved is not None and "stage" in config and saved.get("stage") != config.stage:
    raise ConfigError(
        f"{where} holds a {saved.get('stage')!r} run but this config trains "
        f"{config.stage!r}; pass a new --workdir (or the {config.stage} run's own).")
  shapes = ckpt.param_shapes(step)
  want = checkpointing.leaf_shapes({"params": unboxed.params,
                                    "ema_params": unboxed.ema_params})
  if shapes is None or shapes == want:
    return
  diff = [f"{k}: saved {shapes.get(k, 'absent')}, now {want.get(k, 'absent')}"
          for k in sorted(set(shapes) | set(want)) if shapes.get(k) != want.get(k)]
  changed = changed_fields(saved, _config_dict(config)) if saved else []
  raise ConfigError(
      f"{where} holds parameters of another shape than this config makes "
      f"({len(diff)} differ, e.g. {'; '.join(diff[:3])}). Changed config fields: "
      f"{'; '.join(changed[:12]) or 'none found'}. Resume with the saved values "
      "(--config.FIELD=VALUE) or start a new --workdir.")


def changed_fields(saved: dict, current: dict, prefix: str = "") -> list[str]:
  """'field: saved -> current' for every leaf that differs."""
  out = []
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
    if isinstance(a, dict) and isinstance(b, dict):
      out += changed_fields(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key}: {a!r} -> {b!r}")
  return out


def _flat_hparams(config) -> dict:
  flat = {}

  def walk(prefix, node):
    for k, v in node.items():
      if isinstance(v, (dict, ml_collections.ConfigDict)):
        walk(f"{prefix}{k}.", v)
      elif isinstance(v, (int, float, str, bool)):
        flat[f"{prefix}{k}"] = v
  walk("", config)
  return flat
