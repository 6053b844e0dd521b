"""Scoring and comparison: SyncNet v2 and LSE-D/LSE-C (``syncnet``), Wav2Lip (``wav2lip``), the comparison
and score stages of a job (``compare``) and image metrics (``metrics``).

May import: ``lipsync.media`` and the base modules (``errors``, ``console``, ``hub``, ``checkpoints``); never the
engine, jobs, training or the app.
"""
