"""The app's "time left" follows the work left: a job replayed on a fake clock, as the engine reports it."""

import re

import pytest

from lipsync.app.estimates import SpeedMeter, format_time_left
from lipsync.app.jobs import progress_reporter
from lipsync.job import JobOptions, JobReport


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replay(report, clock, *, frames=142, steps=25, batch=8, chunk=32, step_s=0.01, encode_s=0.15, slowdown=1.0,
           detect_s=0.13, first_step_extra_s=0.0, depth=2):
    """Feed ``report(stage, fraction, message)`` what the engine reports for one job, in time order, advancing
    ``clock`` as the job would take: reading and face detection (``detect_s`` per frame; none on a re-run), then the
    model chunk by chunk (``step_s`` per frame and step) while a writer thread pastes and writes the chunks
    done (``encode_s`` per frame; it slows the model by ``slowdown`` x the time they overlap; at most ``depth``
    chunks wait for it), then the last writing. Returns the moment the job ends and the diffusion fractions
    reported with their times."""
    report("audio", 0.0, "reading audio")
    clock.now += 0.3
    report("audio", 1.0, f"{frames / 25:.2f} s of audio -> {frames} frames")
    for done in range(0, frames, chunk):
        clock.now += detect_s * min(chunk, frames - done)
        report("detect", min(done + chunk, frames) / frames, "faces")
    events, written_at, now = [], [], clock.now  # events: (time, stage, fraction)
    writer_free = now
    for k, first in enumerate(range(0, frames, chunk)):
        n = min(chunk, frames - first)
        if k > depth:  # the writer's queue is full until it takes chunk k - depth - 1
            now = max(now, written_at[k - depth - 1] - encode_s * min(chunk, frames))
        base = n * steps * step_s + (first_step_extra_s if k == 0 else 0.0)
        overlap = min(max(writer_free - now, 0.0), base)
        duration = base + slowdown * overlap
        batches = -(-n // batch)
        for done in range(1, batches * steps + 1):
            events.append((now + duration * done / (batches * steps), "diffusion",
                           (first + n * done / (batches * steps)) / frames))
        now += duration
        writer_free = max(writer_free, now) + n * encode_s
        written_at.append(writer_free)
        events.append((writer_free, "paste", (first + n) / frames))
    seen = []
    for at, stage, fraction in sorted(events):
        clock.now = at
        if stage == "diffusion":
            seen.append((at, fraction))
        report(stage, fraction, f"{stage} {fraction:.3f}")
    report("encode", 0.0, "writing MP4")
    clock.now += 0.5
    report("encode", 1.0, "done")
    return clock.now, seen


def seconds_in(text: str):
    """The seconds a "(about 2 min 30 s left)" in ``text`` says, or None."""
    match = re.search(r"\(about (?:(\d+) h )?(?:(\d+) min)? ?(?:(\d+) s)? left\)", text)
    if not match:
        return None
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return 3600 * hours + 60 * minutes + seconds


def said_during(meter, options, clock, **job):
    """Run one job on the fake clock through the app's progress bar: (time said, truth) at every report made
    after the first 10 % of diffusion, and the job's report for the meter."""
    shown = []
    time_left = meter.time_left(job.get("frames", 142), options, clock=clock)
    bar = progress_reporter(lambda value, desc: shown.append((clock.now, desc, value)), time_left=time_left)
    started = clock.now
    end, seen = replay(bar, clock, **job)
    tenth = next(t for t, f in seen if f >= 0.1)
    pairs = [(seconds_in(desc), end - t) for t, desc, _ in shown if t >= tenth and end - t >= 5]
    values = [value for _, _, value in shown]
    assert values == sorted(values) and values[-1] == pytest.approx(1.0, abs=0.05)  # the bar never moves back
    frames = job.get("frames", 142)
    model_seconds = sum(b - a for (a, _), (b, _) in zip([(started, 0)] + seen, seen))
    report = JobReport(output=None, side_by_side=None, frames=frames, fps=25.0, width=8, height=8,
                       faces_found=frames, faces_missing=0, faces_interpolated=0,
                       seconds={"audio": 0.3, "detect": job.get("detect_s", 0.13) * frames, "diffusion": model_seconds,
                                "paste": 2.0, "encode": job.get("encode_s", 0.15) * frames})
    return pairs, report


@pytest.mark.parametrize("profile", [
    dict(),  # a busy 2-core CPU: writing the previous chunk slows the model down
    dict(slowdown=0.0, encode_s=0.01, detect_s=0.02),  # a GPU: the model alone sets the pace
    dict(step_s=0.002, encode_s=0.08, slowdown=0.5, frames=300),  # writing slower than the model
    dict(frames=30, first_step_extra_s=5.0),  # one chunk, a slow first step (the model warming up)
])
def test_time_left_is_never_far_below_the_truth_first_run_and_rerun(profile):
    options = JobOptions(num_inference_steps=25, chunk_frames=32, batch_size=8)
    meter = SpeedMeter()
    meter.step_seconds = 0.5 * profile.get("step_s", 0.01)  # calibration guessed twice too fast
    clock = FakeClock()
    for run in ("first run", "re-run"):
        job = dict(profile) if run == "first run" else {**profile, "detect_s": 0.0}  # faces reused
        pairs, report = said_during(meter, options, clock, **job)
        assert pairs and all(said is not None for said, _ in pairs), f"{run}: no time left shown"
        for said, truth in pairs:
            assert said >= 0.75 * truth, f"{run}: said {said:.0f} s with {truth:.0f} s left ({profile})"
            assert said <= 2.0 * truth + 10, f"{run}: said {said:.0f} s with {truth:.0f} s left ({profile})"
        meter.record(report, options)


def test_a_rerun_with_faces_already_found_is_not_said_to_be_almost_over():
    """The second run of a clip skips detection: at 3.7 s of a long job the time left is not "about 20 s"."""
    options = JobOptions(num_inference_steps=25, chunk_frames=32, batch_size=8)
    meter, clock = SpeedMeter(), FakeClock()
    _, report = said_during(meter, options, clock, step_s=0.05)
    meter.record(report, options)
    shown = []
    bar = progress_reporter(lambda value, desc: shown.append((clock.now, desc)),
                            time_left=meter.time_left(142, options, clock=clock))
    started = clock.now
    end, _ = replay(bar, clock, step_s=0.05, detect_s=0.0)
    early = [(t - started, seconds_in(desc)) for t, desc in shown if 2 < t - started < 10]
    assert early, shown[:5]
    for at, said in early:
        assert said >= 0.75 * (end - started - at), (at, said, end - started)


def test_time_left_wording_rounds_up():
    assert format_time_left(3) == "about 5 s" and format_time_left(41) == "about 45 s"
    assert format_time_left(89) == "about 1 min 30 s" and format_time_left(120) == "about 2 min"
    assert format_time_left(599) == "about 10 min" and format_time_left(601) == "about 11 min"
    assert format_time_left(3700) == "about 1 h 02 min"
