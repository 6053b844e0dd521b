"""A job's report: a small table for people and the same facts as JSON for programs."""

from __future__ import annotations

from typing import Any, Dict, Optional

from lipsync.app.estimates import ClipPlan
from lipsync.job import JobOptions, JobReport


def report_data(report: JobReport, options: JobOptions, plan: Optional[ClipPlan] = None) -> Dict[str, Any]:
    """The facts of a finished job as a JSON-ready dict.

    Keys: frames, fps, duration_s, size, length (how the video covered the speech), faces (found /
    interpolated / missing in the source frames used, with an explanation), seconds (total and per
    stage), settings, scores (LSE-D / LSE-C per video, when scored), warnings (e.g. damaged frames).
    """
    used = len(report.valid) if report.valid is not None else report.faces_found + report.faces_missing
    total = round(sum(report.seconds.values()), 2)
    scheduler, steps, deepcache = options.sampling()
    explanation = (f"faces are looked for once in each of the {used} source frames the result uses "
                   f"(the result has {report.frames} frames); found in {report.faces_found}")
    if report.faces_interpolated:
        explanation += f", filled in from the neighbouring frames in {report.faces_interpolated}"
    if report.faces_missing:
        explanation += f"; {report.faces_missing} frames without a face are left as they were"
    return {
        "frames": report.frames,
        "fps": round(report.fps, 3),
        "duration_s": round(report.duration, 2),
        "size": f"{report.width}x{report.height}",
        "length": {"policy": options.length_policy, "how": plan.how if plan else ""},
        "faces": {"source_frames": used, "found": report.faces_found, "interpolated": report.faces_interpolated,
                  "missing": report.faces_missing, "explanation": explanation},
        "seconds": {"total": total, **{stage: round(v, 2) for stage, v in report.seconds.items()}},
        "settings": {"preset": options.preset or "custom", "scheduler": scheduler, "steps": steps,
                     "deepcache_interval": deepcache, "seed": options.seed,
                     "reference_frame": options.reference_frame, "batch_size": options.batch_size,
                     "paste": options.paste, "pads": list(options.pads), "audio_offset": options.audio_offset,
                     "detector": options.detector, "compare_wav2lip": options.with_wav2lip,
                     "score": options.score, "mouth_zoom": options.mouth_zoom, "face_choice": options.face_choice,
                     "face_point": None if options.face_point is None else [round(float(v), 1)
                                                                            for v in options.face_point]},
        "scores": report.scores,
        "warnings": list(report.warnings),  # e.g. frames that could not be decoded cleanly
    }


def report_markdown(data: Dict[str, Any]) -> str:
    """A two-column Markdown table of ``report_data``'s main facts."""
    faces = data["faces"]
    seconds = data["seconds"]
    settings = data["settings"]
    stages = ", ".join(f"{k} {v:.1f}" for k, v in seconds.items() if k != "total" and v >= 0.05)
    reference = "each frame its own" if settings["reference_frame"] is None else f"frame {settings['reference_frame']}"
    rows = [
        ("Frames", f"{data['frames']} at {data['fps']:g} fps ({data['duration_s']:.2f} s, {data['size']})"),
        ("Length", data["length"]["how"] or data["length"]["policy"]),
        ("Faces", f"found {faces['found']}, interpolated {faces['interpolated']}, missing {faces['missing']} "
                  f"of {faces['source_frames']} source frames"),
        ("Time", f"{seconds['total']:.1f} s ({stages})"),
        ("Settings", f"{settings['preset']}: {settings['scheduler']} {settings['steps']} steps, seed "
                     f"{settings['seed']}, reference {reference}, paste {settings['paste']}"
                     + (", face at {:g},{:g}".format(*settings["face_point"]) if settings.get("face_point") else "")),
    ]
    rows += [("Warning", warning) for warning in data.get("warnings", [])]
    table = "| Item | Value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    return table + f"\n\n<small>{faces['explanation']}.</small>"
