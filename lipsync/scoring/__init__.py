"""Scoring and comparison: SyncNet v2 and LSE-D/LSE-C (``syncnet``), Wav2Lip (``wav2lip``), the comparison and
score stages of a job (``compare``), image metrics (``metrics``), and lip-sync measures that need no downloaded
weights: whether a model uses its audio (``audio_dependence``), the mouth opening against the speech loudness
(``mouth_motion``), and an expert of Wav2Lip's architecture trained here (``syncnet_color``, ``own_sync``).

May import: ``lipsync.model``, ``lipsync.media`` and the base modules (``errors``, ``console``, ``hub``,
``checkpoints``); never the engine, jobs, training or the app.
"""
