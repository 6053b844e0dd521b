"""Training and fine-tuning Diff2Lip: dataset preparation, data, losses, experts, the trainer.

Modules (imported on use, so ``import lipsync.training`` loads nothing heavy):
    prepare       the engine's face crops, audio and mels of every clip, in tar shards (``python -m lipsync.prepare``)
    data          Diff2LipDataset over a prepared folder
    sampling      batches, per-sample noise and the global sample order (exact resume)
    diffusion     the training diffusion schedule
    losses        L_simple, VLB, L2, LPIPS, SyncNet and sequential-GAN losses; presets
    lpips, sync_expert, discriminator, weights   the networks the losses use, and fetching their weights
    config        TrainConfig, its checks, and building the UNet (``--init``)
    trainer       the Accelerate training loop (``python -m lipsync.train``)
    step          one optimiser step, shared with benchmarks/train_speed.py; logs read back at intervals
    ema, checkpointing, reporting                EMA weights, exact checkpoints, logs, progress and grids

May import: ``lipsync.model``, ``lipsync.media``, ``lipsync.scoring``, ``lipsync.job`` and the base modules;
never the engine or the app.
"""
