"""The model: the Diff2Lip UNet (``unet``), the sampling pipeline (``pipeline``), loading any checkpoint
(``loading``), reading the original checkpoint (``original``), fast paths (``acceleration``) and presets.

May import: ``lipsync.errors``, ``console``, ``hub``, ``checkpoints``; never media, jobs, scoring or training.
"""
