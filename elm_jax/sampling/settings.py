"""Sampler settings: hashable, so a jitted sampler is compiled once per setting."""

import dataclasses

from elm_jax.sampling.schedules import check_schedule


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  """What both samplers read; the MaskGIT fields only matter for MLM.

  cfg_scale 1.0 turns guidance off (no unconditional half is run).
  """
  cfg_scale: float = 1.0
  cfg_schedule: str = "constant"
  temperature: float = 1.0
  top_k: int = 0  # per sub-code head; 0 = all entries
  top_p: float = 1.0
  iterations: int = 10  # MaskGIT decoding iterations T
  gumbel_scale: float = 9.0  # MaskGIT tau: confidence noise tau * (1 - t/T)

  def __post_init__(self):
    check_schedule(self.cfg_schedule)
    if self.temperature <= 0:
      raise ValueError(f"temperature={self.temperature} must be > 0.")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p={self.top_p} must be in (0, 1].")
    if self.top_k < 0:
      raise ValueError(f"top_k={self.top_k} must be >= 0 (0 = no top-k).")
    if self.iterations < 1:
      raise ValueError(f"iterations={self.iterations} must be >= 1.")

  @property
  def guided(self) -> bool:
    return self.cfg_scale != 1.0
