"""Multi-process start-up: `jax.distributed.initialize` from the environment.

Every host of a TPU pod or GPU cluster runs the same `elm_jax.main` (or
`elm_jax.sample`); before any other jax call, `initialize` connects the
processes. Where the settings come from, in order:

- explicit: `--coordinator_address=HOST:PORT --num_processes=N
  --process_id=I` (all three), or JAX_COORDINATOR_ADDRESS in the environment;
- SLURM: srun's variables (SLURM_JOB_ID, SLURM_NTASKS, SLURM_PROCID, ...);
  jax derives the coordinator from the node list. With one task per node,
  all of the node's GPUs belong to that task (jax would otherwise give each
  task the GPU numbered by its SLURM_LOCALID);
- TPU: a Cloud TPU VM (TPU chips on the PCI bus, or GKE's
  TPU_WORKER_HOSTNAMES); jax reads the workers from the TPU metadata;
- otherwise: one process, nothing to initialise.
"""

import dataclasses
import glob
import os
from typing import Mapping, Sequence

from absl import logging


@dataclasses.dataclass(frozen=True)
class Plan:
  """How to start: `source` names where the settings came from."""
  source: str  # "explicit" | "slurm" | "tpu" | "single"
  kwargs: dict  # arguments for jax.distributed.initialize


def _tpu_chips_attached() -> bool:
  try:  # jax's own PCI scan (the ids of TPU chips), private but cheap.
    from jax._src import hardware_utils
    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
  except Exception:  # pylint: disable=broad-except
    return bool(glob.glob("/dev/accel*"))


def _slurm_gpus_per_task(environ: Mapping[str, str]) -> int:
  """GPUs of this node when SLURM runs one task per node, else 0."""
  tasks_per_node = environ.get("SLURM_NTASKS_PER_NODE",
                               environ.get("SLURM_TASKS_PER_NODE", ""))
  if tasks_per_node.split("(")[0] != "1":
    return 0
  gpus = environ.get("SLURM_GPUS_ON_NODE", "")
  if gpus.isdigit():
    return int(gpus)
  visible = environ.get("CUDA_VISIBLE_DEVICES", "")
  return len([d for d in visible.split(",") if d.strip()])


def plan(coordinator_address: str = "", num_processes: int = 0,
         process_id: int = -1, local_device_ids: Sequence[int] = (),
         environ: Mapping[str, str] | None = None,
         tpu_chips_attached: bool | None = None) -> Plan:
  """Decides how to initialise; pure apart from reading the environment.

  Raises ValueError for incomplete explicit settings, naming the missing flag.
  """
  environ = os.environ if environ is None else environ
  ids = list(local_device_ids)
  explicit = {"--coordinator_address": bool(coordinator_address),
              "--num_processes": num_processes > 0,
              "--process_id": process_id >= 0}
  if any(explicit.values()):
    missing = [name for name, given in explicit.items() if not given]
    if missing:
      raise ValueError(
          f"Multi-process flags are incomplete: {', '.join(missing)} missing. "
          "Pass all of --coordinator_address=HOST:PORT, --num_processes=N and "
          "--process_id=I (0..N-1), or none of them to detect SLURM / TPU.")
    if process_id >= num_processes:
      raise ValueError(f"--process_id={process_id} must be below "
                       f"--num_processes={num_processes}.")
    kwargs = dict(coordinator_address=coordinator_address,
                  num_processes=num_processes, process_id=process_id)
    if ids:
      kwargs["local_device_ids"] = ids
    return Plan("explicit", kwargs)
  if environ.get("JAX_COORDINATOR_ADDRESS"):
    return Plan("explicit", {})  # jax reads the JAX_* variables itself.
  kwargs = {"local_device_ids": ids} if ids else {}
  slurm_vars = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                "SLURM_PROCID", "SLURM_LOCALID")
  if all(v in environ for v in slurm_vars):
    if int(environ["SLURM_NTASKS"]) <= 1:
      return Plan("single", {})
    per_task = _slurm_gpus_per_task(environ)
    if not ids and per_task > 1:
      kwargs["local_device_ids"] = list(range(per_task))
    return Plan("slurm", kwargs)
  if tpu_chips_attached is None:
    tpu_chips_attached = _tpu_chips_attached()
  if (tpu_chips_attached or environ.get("TPU_WORKER_HOSTNAMES")
      or environ.get("TPU_PROCESS_ADDRESSES")):
    return Plan("tpu", kwargs)
  return Plan("single", {})


def define_flags() -> dict:
  """The multi-process flags of a command (elm_jax.main, elm_jax.sample):
  all three of the first, or none to detect SLURM / TPU."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  return dict(
      coordinator=flags.DEFINE_string(
          "coordinator_address", "", "HOST:PORT of process 0's coordinator."),
      num_processes=flags.DEFINE_integer("num_processes", 0,
                                         "Processes in the run."),
      process_id=flags.DEFINE_integer("process_id", -1, "This process, 0..N-1."),
      local_devices=flags.DEFINE_string(
          "local_device_ids", "", "Comma-separated local devices of this process."))


def initialize_from_flags(f: dict) -> Plan:
  """`initialize` with the values of the flags `define_flags` made."""
  return initialize(f["coordinator"].value, f["num_processes"].value,
                    f["process_id"].value, parse_device_ids(f["local_devices"].value))


def initialize(coordinator_address: str = "", num_processes: int = 0,
               process_id: int = -1, local_device_ids: Sequence[int] = ()
               ) -> Plan:
  """Connects this process to the others (if there are any); call it first."""
  p = plan(coordinator_address, num_processes, process_id, local_device_ids)
  if p.source == "single":
    return p
  import jax  # pylint: disable=import-outside-toplevel
  logging.info("jax.distributed.initialize from %s: %s", p.source, p.kwargs)
  jax.distributed.initialize(**p.kwargs)
  logging.info("Process %d of %d, %d local devices of %d", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return p


def parse_device_ids(text: str) -> list[int]:
  """"0,1,2,3" -> [0, 1, 2, 3]; "" -> []."""
  try:
    return [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"--local_device_ids={text!r}: expected comma-separated "
                     "integers such as 0,1,2,3.") from None


def process_0_says(answer: bool) -> bool:
  """Process 0's `answer`, on every process (others pass anything): for a
  decision only process 0 can make, such as one read from its files."""
  import jax  # noqa: PLC0415 (this module runs before jax is configured)
  if jax.process_count() == 1:
    return bool(answer)
  import numpy as np  # noqa: PLC0415
  from jax.experimental import multihost_utils  # noqa: PLC0415
  return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(answer))))
