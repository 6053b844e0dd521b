"""Step presets: named trade-offs between speed and fidelity (CLI ``--preset``, the app's preset menu).

A preset fixes the scheduler, the number of steps and the DeepCache interval (how often the deep UNet
features are recomputed; 1 = every step, i.e. off). ``relative_cost`` is the number of full UNet
evaluations per frame relative to the paper's DDIM 25 (measured figures live in README / benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

# FLOPs of a cached DeepCache step (depth 2: the first two input and last two output blocks) relative to a
# full UNet call, counted with torch.utils.flop_counter on the paper model (0.26; the tiny fixture model: 0.35)
CACHED_STEP_COST = 0.26


@dataclass(frozen=True)
class StepPreset:
    name: str
    scheduler: str  # one of lipsync.engine.SCHEDULERS
    steps: int
    deepcache_interval: int = 1  # 1 = off; k = deep features recomputed every k-th step
    description: str = ""

    @property
    def full_evaluations(self) -> float:
        """Full-UNet-equivalent evaluations per frame (a DeepCache step costs CACHED_STEP_COST of a full one)."""
        cached = self.steps - -(-self.steps // self.deepcache_interval)
        return self.steps - cached * (1.0 - CACHED_STEP_COST)

    @property
    def relative_cost(self) -> float:
        """Cost relative to the paper's DDIM 25 (1.0 = paper)."""
        return self.full_evaluations / 25.0


PRESETS: Dict[str, StepPreset] = {
    "paper": StepPreset("paper", "ddim", 25, 1, "DDIM 25 steps, as in the paper (the reference)"),
    # DDIM keeps the paper's x0 clipping, so fewer DDIM steps stay close to the paper's result (DPM-Solver++
    # does not clip and drifts further: ~16 dB vs ~33 dB for DDIM 10 on the fixture model)
    "fast": StepPreset("fast", "ddim", 10, 1, "DDIM 10 steps"),
    # judged on a trained model (benchmarks/presets.py on small64_h200): DeepCache at 6 steps left visible colour
    # noise in the mouth (high-frequency energy 1.4-1.5x paper's, 30.4-30.9 dB from paper); plain DDIM 6 did not
    # (0.97-1.00x, 33-35 dB), so draft has no DeepCache
    "draft": StepPreset("draft", "ddim", 6, 1, "DDIM 6 steps (previews)"),
}
DEFAULT_PRESET = "paper"


def get_preset(name: str) -> StepPreset:
    """The preset called ``name``; a ValueError lists the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
