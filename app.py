"""Diff2Lip Studio: the Gradio app (Hugging Face Spaces runs this file; so does ``python app.py --help``).

The page lives in ``lipsync/app/``, all the work in ``lipsync.engine``; this file only starts it.
"""

from lipsync.app.launch import main

if __name__ == "__main__":
    main()
