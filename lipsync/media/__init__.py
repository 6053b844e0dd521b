"""Media in and out: probing (``probe``), decoding (``reader``), encoding (``writer``), the side-by-side
(``sidebyside``), audio and mel windows (``audio``), faces (``detectors`` -> ``tracking`` -> ``crop``, box
geometry in ``boxes``; hard cuts in ``shots``, who a face is in ``identity``, whether it talks in ``talking``, which
face each shot gets in ``speaker``), a clip as the engine reads it (``source``) and the overlapped stages (``stages``).

May import: ``lipsync.errors``, ``console``, ``hub``, ``checkpoints``; never the model, jobs, scoring or training.
"""
