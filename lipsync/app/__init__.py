"""The Diff2Lip Studio web app (the repository's ``app.py``, ``lipsync-app`` and ``python -m lipsync.app`` start it).

    launch.py     the command line and ``main()``: one engine, one page

    layout.py     the page: steps, result area, examples, the typed API; ``build_demo(engine)``
    handlers.py   what each control does (thin calls into ``lipsync.engine.LipSyncEngine``); Generate, Stop
    messages.py   problems in words: engine errors in the user's terms, the notes beside the inputs
    api.py        the typed API endpoints (``/lipsync``, ``/preview_first_frame``)
    estimates.py  how long a job will take (measured on this machine), the time left of a running one,
                  and the ZeroGPU durations
    jobs.py       one folder per job, Stop, and the progress bar with stage, step and time left
    report.py     a job's report as a small table and as JSON
    texts.py      the words on the page (header, step tips, consent notice, one wording per problem)

Importing any of these loads no model. May import: the engine, ``lipsync.job``, ``lipsync.media``,
``lipsync.model.presets``, ``lipsync.model.loading.check_weights`` (inside a function: it imports torch) and the
base modules; nothing imports the app.
"""
