"""Batch jobs over a list, split across processes and GPUs with HF Accelerate; resumable.

    accelerate launch -m lipsync.batch --filelist LIST --output DIR [job options]
    python -m lipsync.batch --filelist LIST --output DIR                 (one process, e.g. on one CPU)

LIST holds one job per line: ``video audio output`` (shell-style quoting for paths with spaces; blank
lines and lines starting with ``#`` are ignored). Relative video/audio paths are relative to the list's
folder, relative outputs to DIR. Each process takes its own share of the list (Accelerate's
``split_between_processes``), so no job runs twice; jobs whose output already exists are skipped, so
an interrupted batch resumes where it stopped. A job that fails is recorded and the batch goes on.

Results: DIR/results.csv (job, video, audio, output, status, error, seconds, frames, process), one line
per job of the list, written atomically when all processes are done; each process also keeps
DIR/results.rank<k>.csv up to date after every job (what survives an interruption).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

from lipsync.console import command_name
from lipsync.errors import LipSyncError

logger = logging.getLogger(__name__)

FIELDS = ("job", "video", "audio", "output", "status", "error", "seconds", "frames", "process")
RESULTS = "results.csv"


@dataclass(frozen=True)
class BatchJob:
    """One line of the list: ``index`` is its 0-based position among the jobs (the CSV's ``job``)."""

    index: int
    video: Path
    audio: Path
    output: Path


def read_filelist(path, output_dir) -> List[BatchJob]:
    """Parse LIST into jobs. Raises ValueError naming the line that is not ``video audio output``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the file list {path}: {exc.strerror or exc}") from exc
    jobs: List[BatchJob] = []
    base = path.resolve().parent
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            fields = shlex.split(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}; quote paths with spaces") from exc
        if len(fields) != 3:
            raise ValueError(f"{path}:{number}: expected 'video audio output', got {len(fields)} fields: {line!r}")
        video, audio, output = (Path(f).expanduser() for f in fields)
        jobs.append(BatchJob(len(jobs), video if video.is_absolute() else base / video,
                             audio if audio.is_absolute() else base / audio,
                             output if output.is_absolute() else Path(output_dir) / output))
    outputs = [job.output.resolve() for job in jobs]
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"{path}: two jobs write the same output; give every line its own output path")
    return jobs


def write_csv_atomic(path: Path, rows: Sequence[Dict[str, object]]) -> None:
    """Write rows (dicts with FIELDS) to ``path`` via a temporary file and a rename: never half a file."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in FIELDS})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)


def read_csv(path: Path) -> List[Dict[str, str]]:
    """Rows of a results CSV ([] when it does not exist)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def run_job(engine, job: BatchJob, options, process: int) -> Dict[str, object]:
    """Run one job; never raises for a bad clip (the row says ``failed`` and why)."""
    row: Dict[str, object] = {"job": job.index, "video": str(job.video), "audio": str(job.audio),
                              "output": str(job.output), "process": process, "error": "", "frames": ""}
    if job.output.exists():
        row.update(status="skipped", error="output exists", seconds=0.0)
        return row
    start = time.perf_counter()
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        report = engine.run(job.video, job.audio, job.output, options)
    except (LipSyncError, ValueError, OSError, RuntimeError) as exc:  # a bad clip, a full disk, a model error
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        logger.error("job %d (%s) failed: %s", job.index, job.video, row["error"])
    else:
        row.update(status="done", frames=report.frames)
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def merge_results(output_dir: Path, jobs: Sequence[BatchJob], world_size: int) -> List[Dict[str, object]]:
    """results.csv from every process's rows; a job skipped now keeps the row of the run that made it."""
    previous = {row["job"]: row for row in read_csv(output_dir / RESULTS)}
    current: Dict[str, Dict[str, object]] = {}
    for rank in range(world_size):
        for row in read_csv(output_dir / f"results.rank{rank}.csv"):
            current[row["job"]] = row
    rows = []
    for job in jobs:
        key = str(job.index)
        row = current.get(key) or previous.get(key)
        if row is None:
            continue
        if row.get("status") == "skipped" and previous.get(key, {}).get("status") == "done":
            row = previous[key]
        rows.append(row)
    write_csv_atomic(output_dir / RESULTS, rows)
    return rows


def build_parser() -> argparse.ArgumentParser:
    from lipsync.cli import build_parser as job_parser

    p = argparse.ArgumentParser(prog=command_name("python -m lipsync.batch"), description=__doc__.split("\n\n")[0],
                                parents=[job_parser(batch=True)], conflict_handler="resolve")
    p.add_argument("--filelist", required=True, help="text file: one 'video audio output' job per line")
    p.add_argument("--output", required=True, help="folder for relative outputs and results.csv")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from accelerate import PartialState
    from diffusers.utils import logging as diffusers_logging

    from lipsync.cli import job_options
    from lipsync.engine import LipSyncEngine

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    output_dir = Path(args.output)
    try:
        jobs = read_filelist(args.filelist, output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        options = job_options(args)
        options.validate()
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    state = PartialState(cpu=args.device == "cpu")
    device = args.device or str(state.device)
    if device.startswith("cpu") and state.num_processes > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // state.num_processes))
    engine = LipSyncEngine(checkpoint=args.checkpoint, device=device, dtype=args.dtype, detector=args.detector,
                           compile=args.compile)
    rank_csv = output_dir / f"results.rank{state.process_index}.csv"
    rows: List[Dict[str, object]] = []
    write_csv_atomic(rank_csv, rows)
    with state.split_between_processes(jobs) as mine:
        for job in mine:
            row = run_job(engine, job, options, state.process_index)
            rows.append(row)
            write_csv_atomic(rank_csv, rows)
            print(f"[{state.process_index}] job {job.index}: {row['status']} {row['error']}".rstrip(), flush=True)
    state.wait_for_everyone()
    failed = 0
    if state.is_main_process:
        merged = merge_results(output_dir, jobs, state.num_processes)
        counts = {s: sum(r["status"] == s for r in merged) for s in ("done", "skipped", "failed")}
        failed = counts["failed"]
        print(f"{len(jobs)} jobs: {counts['done']} done, {counts['skipped']} skipped, {failed} failed "
              f"-> {output_dir / RESULTS}")
    state.wait_for_everyone()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
