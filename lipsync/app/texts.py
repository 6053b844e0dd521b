"""The words on the page: header, links, consent notice, step titles and tips, and one wording per problem.

Problems are said in the user's terms (the photo, the video, the speech), once, in one place: the note beside
the input they concern, or the status line above the results.
"""

CODE_URL = "https://github.com/soumik-kanad/diff2lip"
PAPER_URL = "https://arxiv.org/abs/2308.09716"
MODEL_URL = "https://huggingface.co/ameerazam08/diff2lip"

HEADER = f"""\
# Diff2Lip Studio
Make a face video (or a still photo) speak any speech with **Diff2Lip**, a diffusion model that repaints
the lower half of the face to match the audio.
[Code]({CODE_URL}) · [Paper (arXiv 2308.09716)]({PAPER_URL}) · [Model card]({MODEL_URL})
"""

CONSENT = ("**Consent:** only lip-sync people who agreed to it, and never to impersonate anyone or to "
           "mislead. Say that the result is generated when you share it.")

STEPS = {
    "face": ("1 · Face", "A video or a photo of one person facing the camera."),
    "speech": ("2 · Speech", "Upload a recording or use the microphone; clear speech works best."),
    "check": ("3 · Check", ("Green box: the face found (with several faces, click one to choose it). Shaded: "
                            "the region the model repaints.")),
    "generate": ("4 · Generate", "Choose how carefully to sample, then press Generate."),
}

EXAMPLES_TITLE = "Examples: click one to load it"

WAV2LIP_UNAVAILABLE = "Wav2Lip weights are not available on this server, so the comparison is off."
SYNCNET_UNAVAILABLE = "SyncNet weights are not available on this server, so the lip-sync score is off."

READY = "Ready. Results appear here."
STARTING = "Starting the job…"
STOPPING = "Stopping…"
STOPPED = "Stopped. Nothing was kept; change what you like and press Generate again."
CHECK_NOTES = "⚠️ Something is missing or wrong above: see the note beside it."
PREVIEWING = "Lip-syncing the first frame…"
PREVIEW_DONE = "The first frame, lip-synced, is in the First frame tab."
FACE_SELECTED = "Face {face} selected; click another face to change."

# the Diff2Lip weights: the header's note when they cannot be had (``message`` is the command line's)
WEIGHTS_MISSING = ("⚠️ **Generate is off: this server has no Diff2Lip weights.** {message} Then start the app "
                   "again.")

# one wording per problem
NEED_FACE = "Upload a face video or a face photo first."
NEED_SPEECH = "Upload or record some speech first."
NO_FACE_PHOTO = "No face was found in this photo. Use a photo where one face is clearly visible and facing the camera."
NO_FACE_VIDEO = ("No face was found in this video. Use a video where the face is clearly visible and facing the "
                 "camera, or choose another face detector under Advanced.")
NO_FACE_IN_FRAME = ("No face was found in frame {index} of this video. Choose another reference frame, or a video "
                    "where the face is clearly visible.")
MOUTH_OUT_PHOTO = "The mouth is outside the picture in this photo. Use a photo where the whole mouth is visible."
MOUTH_OUT_VIDEO = ("The mouth is outside the picture in this video. Use a video where the whole mouth is "
                   "visible.")
MOUTH_OUT_IN_FRAME = ("The mouth is outside the picture in frame {index} of this video. Choose another reference "
                      "frame.")
NO_FACE_AT_CLICK = "There is no face where you clicked in the Check image. Click inside a face's box."
SPEECH_TOO_SHORT = ("This speech is {seconds:.2f} s long; at least {minimum:g} s is needed. Upload or record a "
                    "longer one.")
SPEECH_TOO_LONG = ("This speech is {seconds:.1f} s long; this server takes at most {maximum:g} s. Trim it and "
                   "upload it again.")
UNEXPECTED = "⚠️ {what} failed unexpectedly ({error}). Please try again; the details are in the server log."


def step_title(key: str) -> str:
    """'### 1 · Face' plus its one-line tip, as Markdown."""
    title, tip = STEPS[key]
    return f"### {title}\n<span class='step-tip'>{tip}</span>"
