"""Training a lip-sync expert (Wav2Lip's ``SyncNet_color``) from scratch, on Accelerate, resumable.

The recipe follows Wav2Lip's expert: the cosine similarity of the face and audio embeddings (both unit length
and ≥ 0, so it lies in [0, 1]) is read as the probability of "in sync" and trained with binary cross-entropy
on balanced in-sync / off-sync pairs (:class:`lipsync.training.sync_data.SyncPairs`). Adam, fixed learning rate.

Output folder::

    expert.safetensors     the weights (what --sync-expert, --score and lipsync.evaluate take)
    expert.json            architecture, data, steps, and the held-out balanced accuracy
    log.csv, val.csv       training loss/accuracy per logged step; held-out loss and balanced accuracy
    checkpoint/            weights + optimizer + step + RNG (resume), replaced atomically
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from lipsync.errors import LipSyncError
from lipsync.scoring.syncnet_color import OWN_EXPERT_WEIGHTS, SyncNetColor
from lipsync.training import checkpointing as ckpt
from lipsync.training.reporting import CSVLog, Progress
from lipsync.training.sync_data import SyncPairs

logger = logging.getLogger(__name__)


@dataclass
class ExpertConfig:
    """Every option of ``python -m lipsync.train_syncnet``."""

    data: str
    output: str
    val_data: Optional[str] = None  # None: the "val" split of ``data``
    batch_size: int = 32
    width: float = 1.0  # channels relative to Wav2Lip's expert (0.5: a quarter of the compute)
    lr: float = 1e-4
    max_steps: int = 100_000
    max_minutes: Optional[float] = None
    validate_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 20
    val_pairs: int = 512
    seed: int = 0
    num_workers: int = 0
    threads: Optional[int] = None
    cpu: bool = False
    augment: bool = True
    same_clip_negatives: float = 0.9  # off-sync pairs from the same clip (timing only); the rest other clips
    progress: bool = True


class ExpertTrainingError(LipSyncError):
    """An expert training run cannot start or continue; the message says why and what to do."""


def sync_probability(expert: SyncNetColor, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(N,) cosine similarity of the audio and face embeddings, in [0, 1]: the expert's P(in sync)."""
    audio_emb, face_emb = expert(mel, faces)
    return (audio_emb * face_emb).sum(dim=1)


def sync_bce(prob: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Wav2Lip's expert loss: BCE of the similarity read as a probability (clamped away from 0 and 1)."""
    return F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), label)


def balanced_accuracy(prob: np.ndarray, label: np.ndarray, threshold: float = 0.5) -> float:
    """Mean of the in-sync and off-sync recalls at ``threshold`` (0.5 for a random guess)."""
    pred = prob >= threshold
    pos, neg = label > 0.5, label <= 0.5
    recalls = [float((pred[m] == (label[m] > 0.5)).mean()) for m in (pos, neg) if m.any()]
    return float(np.mean(recalls)) if recalls else float("nan")


@torch.no_grad()
def evaluate_pairs(expert: SyncNetColor, pairs: SyncPairs, count: int, device, batch_size: int = 64) -> Dict:
    """Loss and balanced accuracy on ``count`` evenly spaced pairs of ``pairs`` (deterministic: epoch 0)."""
    was_training = expert.training
    expert.eval()
    pairs.set_epoch(0)
    picks = np.linspace(0, len(pairs) - 1, min(count, len(pairs))).round().astype(int)
    picks = np.unique(np.concatenate([picks, np.minimum(picks + 1, len(pairs) - 1)]))  # both labels per window
    probs, labels = [], []
    for i in range(0, len(picks), batch_size):
        batch = [pairs[int(j)] for j in picks[i:i + batch_size]]
        faces = torch.stack([b["faces"] for b in batch]).to(device)
        mel = torch.stack([b["mel"] for b in batch]).to(device)
        probs.append(sync_probability(expert, mel, faces).float().cpu())
        labels.append(torch.stack([b["label"] for b in batch]))
    expert.train(was_training)
    prob, label = torch.cat(probs), torch.cat(labels)
    return {"loss": float(sync_bce(prob, label)), "balanced_accuracy": balanced_accuracy(prob.numpy(), label.numpy()),
            "pairs": len(label)}


class ExpertTrainer:
    """Runs one expert training described by an :class:`ExpertConfig` (``run()`` returns the output folder)."""

    def __init__(self, config: ExpertConfig):
        self.config = config

    def _datasets(self):
        cfg = self.config
        train = SyncPairs(cfg.data, "train", seed=cfg.seed, augment=cfg.augment,
                          same_clip_negatives=cfg.same_clip_negatives)
        val_root = cfg.val_data or cfg.data
        try:
            val = SyncPairs(val_root, "val", seed=cfg.seed + 1)
        except LipSyncError as exc:
            raise ExpertTrainingError(
                f"no held-out clips for validation in {val_root} ({exc}); hold clips out by clip: prepare with "
                "--val-fraction or --val-clips, or pass --val-data with a dataset prepared with --val-fraction 1"
            ) from exc
        overlap = set(train.clip_ids()) & set(val.clip_ids()) if val_root != cfg.data else set()
        if overlap:
            raise ExpertTrainingError(f"clips {sorted(overlap)[:3]} are in both the training and the validation "
                                      "data; validation must hold out whole clips")
        return train, val

    def run(self) -> Path:
        from accelerate import Accelerator

        cfg = self.config
        if cfg.batch_size < 2 or cfg.max_steps < 1 or not cfg.lr > 0:
            raise ExpertTrainingError("--batch-size must be at least 2, --max-steps at least 1 and --lr above 0")
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        output = Path(cfg.output)
        output.mkdir(parents=True, exist_ok=True)
        accelerator = Accelerator(cpu=cfg.cpu)
        train, val = self._datasets()
        torch.manual_seed(cfg.seed)
        expert = SyncNetColor(width=cfg.width)
        optimizer = torch.optim.Adam(expert.parameters(), lr=cfg.lr)
        step = self._restore(output / "checkpoint", expert, optimizer)
        expert, optimizer = accelerator.prepare(expert, optimizer)
        device = accelerator.device
        progress = Progress(cfg.max_steps, step, enabled=cfg.progress and accelerator.is_main_process,
                            every=cfg.log_every)
        log = CSVLog(output / "log.csv", ("step", "loss", "accuracy", "steps_per_s", "seconds"), resume_step=step)
        val_log = CSVLog(output / "val.csv", ("step", "loss", "balanced_accuracy", "pairs"), resume_step=step)
        started = time.perf_counter()
        deadline = started + cfg.max_minutes * 60 if cfg.max_minutes else None
        per_epoch = max(1, len(train) // cfg.batch_size)
        last_val: Dict = {}
        expert.train()
        while step < cfg.max_steps and (deadline is None or time.perf_counter() < deadline):
            epoch, position = divmod(step, per_epoch)
            train.set_epoch(epoch)
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train))
            rows = order[position * cfg.batch_size:(position + 1) * cfg.batch_size]
            rows = rows[accelerator.process_index::accelerator.num_processes]
            batch = [train[int(r)] for r in rows]
            faces = torch.stack([b["faces"] for b in batch]).to(device)
            mel = torch.stack([b["mel"] for b in batch]).to(device)
            label = torch.stack([b["label"] for b in batch]).to(device)
            prob = sync_probability(expert, mel, faces)
            loss = sync_bce(prob, label)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            step += 1
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                accuracy = float(((prob.detach() >= 0.5).float() == label).float().mean())
                values = {"loss": float(loss.detach()), "accuracy": accuracy}
                if accelerator.is_main_process:
                    log.write({"step": step, **values, "steps_per_s": progress.steps_per_second(step),
                               "seconds": time.perf_counter() - started})
                progress.update(step, values)
            if step % cfg.validate_every == 0 and accelerator.is_main_process:
                last_val = evaluate_pairs(accelerator.unwrap_model(expert), val, cfg.val_pairs, device)
                val_log.write({"step": step, **last_val})
                progress.write(f"step {step}: held-out loss {last_val['loss']:.4f}, balanced accuracy "
                               f"{last_val['balanced_accuracy']:.3f} ({last_val['pairs']} pairs)")
            if step % cfg.checkpoint_every == 0 and accelerator.is_main_process:
                self._save(output / "checkpoint", accelerator.unwrap_model(expert), optimizer, step)
        progress.close()
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(expert)
            self._save(output / "checkpoint", model, optimizer, step)
            last_val = evaluate_pairs(model, val, cfg.val_pairs, device)
            val_log.write({"step": step, **last_val})
            self._write_expert(output, model, step, train, val, last_val, time.perf_counter() - started)
        accelerator.wait_for_everyone()
        return output

    # -- saving and resuming --------------------------------------------------------------------------------
    def _save(self, folder: Path, expert, optimizer, step: int) -> None:
        from safetensors.torch import save_file

        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in expert.state_dict().items()},
                  str(tmp / OWN_EXPERT_WEIGHTS))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(ckpt.capture_rng_state(), tmp / "rng_state.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "config": asdict(self.config)}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    def _restore(self, folder: Path, expert, optimizer) -> int:
        if not (folder / "state.json").is_file():
            return 0
        from safetensors.torch import load_file

        state = json.loads((folder / "state.json").read_text())
        expert.load_state_dict(load_file(str(folder / OWN_EXPERT_WEIGHTS)))
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
        ckpt.restore_rng_state(torch.load(folder / "rng_state.pt", map_location="cpu", weights_only=True))
        logger.info("resuming the expert from step %d", state["step"])
        return int(state["step"])

    def _write_expert(self, output: Path, expert, step: int, train: SyncPairs, val: SyncPairs, val_result: Dict,
                      seconds: float) -> None:
        from safetensors.torch import save_file

        tmp = output / (OWN_EXPERT_WEIGHTS + ".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in expert.state_dict().items()}, str(tmp))
        os.replace(tmp, output / OWN_EXPERT_WEIGHTS)
        info = {"architecture": "SyncNet_color (Wav2Lip's lip-sync expert), trained from scratch",
                "width": self.config.width, "parameters": sum(p.numel() for p in expert.parameters()),
                "label": "own expert", "steps": step, "batch_size": self.config.batch_size,
                "train_clips": train.clip_ids(), "val_clips": val.clip_ids(), "held_out": val_result,
                "train_seconds_this_run": round(seconds, 1)}
        (output / "expert.json").write_text(json.dumps(info, indent=1))
