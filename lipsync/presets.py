"""Step presets: named trade-offs between speed and fidelity (CLI ``--preset``, the app's preset menu).

A preset fixes the scheduler, the number of steps and the DeepCache interval (how often the deep UNet
features are recomputed; 1 = every step, i.e. off). ``relative_cost`` is the number of full UNet
evaluations per frame relative to the paper's DDIM 25 (measured figures live in README / benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class StepPreset:
    name: str
    scheduler: str  # one of lipsync.engine.SCHEDULERS
    steps: int
    deepcache_interval: int = 1  # 1 = off; k = deep features recomputed every k-th step
    description: str = ""

    @property
    def full_evaluations(self) -> float:
        """Full-UNet-equivalent evaluations per frame (a cached step is counted as ~1/3 of a full one)."""
        cached = self.steps - -(-self.steps // self.deepcache_interval)
        return self.steps - cached * (2.0 / 3.0)

    @property
    def relative_cost(self) -> float:
        """Cost relative to the paper's DDIM 25 (1.0 = paper)."""
        return self.full_evaluations / 25.0


PRESETS: Dict[str, StepPreset] = {
    "paper": StepPreset("paper", "ddim", 25, 1, "DDIM 25 steps, as in the paper (the reference)"),
    "fast": StepPreset("fast", "dpm", 10, 1, "DPM-Solver++ 10 steps"),
    "draft": StepPreset("draft", "dpm", 6, 2, "DPM-Solver++ 6 steps with DeepCache every 2nd step"),
}
DEFAULT_PRESET = "paper"


def get_preset(name: str) -> StepPreset:
    """The preset called ``name``; a ValueError lists the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
