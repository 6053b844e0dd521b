"""The words on the page: header, links, consent notice, step titles and tips, plain-language notes."""

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
    "check": ("3 · Check", "Green box: the face found. Shaded: the region the model repaints."),
    "generate": ("4 · Generate", "Choose how carefully to sample, then press Generate."),
}

EXAMPLES_TITLE = "Examples: click one to load it"

WAV2LIP_UNAVAILABLE = "Wav2Lip weights are not available on this server, so the comparison is off."
SYNCNET_UNAVAILABLE = "SyncNet weights are not available on this server, so the lip-sync score is off."

READY = "Ready. Results appear here."


def step_title(key: str) -> str:
    """'### 1 · Face' plus its one-line tip, as Markdown."""
    title, tip = STEPS[key]
    return f"### {title}\n<span class='step-tip'>{tip}</span>"
