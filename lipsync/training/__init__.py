"""Training and fine-tuning Diff2Lip (issue 8): data, losses, trainer.

Modules (imported on use, so ``import lipsync.training`` loads nothing heavy):
    data          Diff2LipDataset over a folder made by ``python -m lipsync.prepare``
    diffusion     the training diffusion schedule
    losses        L_simple, VLB, L2, LPIPS, SyncNet and sequential-GAN losses
    trainer       the Accelerate training loop (``python -m lipsync.train``)
"""
