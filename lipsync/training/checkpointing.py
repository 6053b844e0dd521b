"""Training checkpoints: everything an exact resume needs, in one folder per step.

Layout of ``RUN/checkpoints/step_000200/``::

    training_state.json        step, samples seen, global batch, seed, model config, EMA update count,
                               LR schedule state, the run's options
    unet/                      the trained weights (save_pretrained: config.json + safetensors)
    ema/                       the EMA weights, same layout: what inference uses
                               (``load_pipeline`` and ``--init`` accept the step folder itself)
    optimizer.pt               AdamW state (tensors only; loaded with weights_only=True)
    discriminator.safetensors  the sequential discriminator, when the GAN term is on
    disc_optimizer.pt          its AdamW state
    scaler.pt                  the fp16 loss scaler, when fp16 is on
    rng_state_<rank>.pt        torch / CUDA / numpy / Python RNG states of each process

A checkpoint is written to ``step_N.tmp`` and renamed when complete, so a crash never leaves a partial one.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

STATE_FILE = "training_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    """``step_000200`` for step 200."""
    return f"step_{int(step):06d}"


def list_checkpoints(run_dir: Path) -> List[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def is_training_checkpoint(path: Path) -> bool:
    """True for a folder written by :func:`save_checkpoint`."""
    return Path(path).is_dir() and (Path(path) / STATE_FILE).is_file()


def read_state(path: Path) -> Dict[str, Any]:
    """The ``training_state.json`` of a checkpoint folder."""
    return json.loads((Path(path) / STATE_FILE).read_text())


# -- RNG states ---------------------------------------------------------------------------------------


def capture_rng_state() -> Dict[str, Any]:
    """Torch CPU/CUDA, numpy and Python RNG states as tensors and plain values (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


# -- save / load ----------------------------------------------------------------------------------------


def save_checkpoint(run_dir: Path, step: int, *, unet, ema_unet, optimizer, state: Dict[str, Any],
                    discriminator=None, disc_optimizer=None, scaler=None, keep: int = 2) -> Path:
    """Write the main process's part of checkpoint ``step`` (atomically) and prune to the ``keep`` newest.

    ``unet``/``ema_unet``: unwrapped ``Diff2LipUNetModel``s (the EMA one holding the averaged weights).
    Returns the final folder. RNG states are written separately per process (:func:`save_rng_state`).
    """
    from safetensors.torch import save_file

    root = Path(run_dir) / "checkpoints"
    final = root / step_dir_name(step)
    tmp = root / (step_dir_name(step) + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    unet.save_pretrained(tmp / "unet", safe_serialization=True)
    ema_unet.save_pretrained(tmp / "ema", safe_serialization=True)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if discriminator is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in discriminator.state_dict().items()},
                  str(tmp / "discriminator.safetensors"))
        torch.save(disc_optimizer.state_dict(), tmp / "disc_optimizer.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
    for rng_file in root.glob(f"{step_dir_name(step)}.rng_state_*.pt"):  # other processes' RNG, written first
        rng_file.rename(tmp / rng_file.name.split(".", 1)[1])
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def save_rng_state(run_dir: Path, step: int, rank: int) -> None:
    """Write this process's RNG state beside the checkpoint being assembled (call before the main save)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    torch.save(capture_rng_state(), root / f"{step_dir_name(step)}.rng_state_{rank}.pt")


def load_rng_state(path: Path, rank: int) -> Optional[Dict[str, Any]]:
    """This process's RNG state in checkpoint ``path`` (None when the run had fewer processes)."""
    file = Path(path) / f"rng_state_{rank}.pt"
    return torch.load(file, map_location="cpu", weights_only=True) if file.is_file() else None


def load_tensor_file(path: Path) -> Any:
    """A ``.pt`` state written by :func:`save_checkpoint` (tensors and plain values only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    """A safetensors file as a name -> tensor dict on the CPU."""
    from safetensors.torch import load_file

    return load_file(str(path))


def load_unet_weights(folder: Path) -> Dict[str, torch.Tensor]:
    """The weights of a ``save_pretrained`` UNet folder."""
    return load_safetensors(Path(folder) / "diffusion_pytorch_model.safetensors")
