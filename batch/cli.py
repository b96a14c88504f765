"""``colorize batch``: colorize many files, resumably, on this machine or a Ray cluster.

    colorize batch INPUT... -o OUTDIR [--config FILE] [--cluster ADDRESS] [--jobs N] [--overwrite]

Bad arguments are one ``error:`` line and exit code 2 before any work starts. Afterwards one
progress bar covers the whole job (frames of all files, fps, ETA; files done in its label), and a
summary table ends it. Exit code 0 when every input is done or was already complete, 1 when any
failed (the others are finished regardless), 130/143/129 when interrupted: running the same
command again continues where it stopped.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from batch.inputs import expand_inputs
from batch.job import CORES_PER_PIPELINE, BatchJob, BatchSettings, default_jobs, describe, exit_code, report
from stream.errors import InputError

DEFAULT_SEGMENT_S = 120.0


def build_parser() -> argparse.ArgumentParser:
    from stream.cli import add_map_argument, add_setting_arguments

    parser = argparse.ArgumentParser(
        prog="colorize batch", usage="colorize batch INPUT... -o OUTDIR [options]",
        description="Colorize files, folders (searched recursively) and lists of paths (.txt/.lst, one per "
                    "line) into OUTDIR, mirroring their layout. Complete outputs are skipped; an interrupted "
                    "job continues where it stopped when run again.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="a video or image file, a folder, or a .txt/.lst list")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the outputs (created)")
    add_setting_arguments(parser)
    add_map_argument(parser)
    parser.add_argument("--jobs", type=int, metavar="N",
                        help=f"segment pipelines side by side on this machine (default: cores ÷ {CORES_PER_PIPELINE}, "
                             "at least 1)")
    parser.add_argument("--cluster", metavar="ADDRESS",
                        help="run on this Ray cluster ('auto': the one this machine belongs to; default: the "
                             "RAY_ADDRESS variable, else this machine without Ray)")
    parser.add_argument("--segment-s", type=float, default=DEFAULT_SEGMENT_S, metavar="S",
                        help=f"cut videos at keyframes into segments of about S seconds (default {DEFAULT_SEGMENT_S:g})")
    parser.add_argument("--keyframe", action="append", metavar="POSITION=IMAGE",
                        help="not for batch jobs: a keyframe belongs to one film (use colorize FILM --keyframe)")
    parser.add_argument("-y", "--overwrite", action="store_true", help="redo outputs that are already complete")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar; the summary lists failures only")
    return parser


def validate(args: argparse.Namespace) -> BatchSettings:
    from models.runtime import model_to_run
    from stream.cli import parse_maps
    from stream.options import run_config

    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"-o must be a folder: {outdir} is a file")
    for folder in (outdir, *outdir.parents):  # the nearest that exists must take new files and folders
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"-o {outdir}: {folder} is a file, not a folder")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise InputError(f"-o {outdir}: {folder} is not writable (permissions or a read-only file system)")
            break
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be 1 or more, got {args.jobs}")
    if not args.segment_s > 0:
        raise InputError(f"--segment-s must be more than 0, got {args.segment_s:g}")
    config = run_config(args)
    if config.guidance.keyframes or args.keyframe:
        raise InputError("guidance.keyframes: keyframes belong to one film; colorize batch takes references only")
    model = model_to_run(args.model, config.inference.provider, config.inference.precision)
    jobs = args.jobs or default_jobs(len(os.sched_getaffinity(0)))
    return BatchSettings(outdir, Path(model), config, jobs, args.overwrite, args.segment_s, args.cluster, args.quiet,
                         parse_maps(args.map))


def executor_for(settings: BatchSettings):
    from batch.executors import LocalPool, RayCluster, cluster_address

    address = cluster_address(settings.cluster)
    if address is None:
        return LocalPool(settings.jobs)
    gpus = 1 if settings.config.inference.provider == "cuda" else 0
    return RayCluster(address, CORES_PER_PIPELINE, gpus)


class JobProgress:
    """One tqdm bar for the whole job: frames of all files, fps and ETA; files done in its label."""

    def __init__(self, enabled: bool, files: int):
        self.bar, self.files, self.finished = None, files, 0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=None, unit="frame", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
            self._label()

    def _label(self) -> None:
        self.bar.set_description(f"{self.finished}/{self.files} files")

    def frames(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = max(total, done)
            self.bar.update(done - self.bar.n)

    def file(self, outcome) -> None:
        self.finished += 1
        if self.bar is not None:
            self._label()
            if outcome.status == "failed":
                self.bar.write(f"failed: {outcome.item.source}: {outcome.reason}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str]) -> int:
    from stream.cli import negative_maps_joined, reporting_errors
    from stream.stop_signals import interrupted_exit_code, stop_on_signals

    args = build_parser().parse_args(negative_maps_joined(argv))
    stop_on_signals()

    def run() -> int:
        settings = validate(args)
        items = expand_inputs(args.inputs, settings.outdir)
        settings.outdir.mkdir(parents=True, exist_ok=True)
        executor = executor_for(settings)
        progress = JobProgress(not settings.quiet and sys.stderr.isatty(), len(items))
        job = BatchJob(items, settings, executor, on_frames=progress.frames, on_file=progress.file)
        try:
            outcomes = job.run()
        except KeyboardInterrupt:
            progress.close()
            lines = describe(job.outcomes)
            report(lines if not settings.quiet else lines[-1:])
            print("interrupted: the pieces finished so far are kept; run the same command again to continue",
                  file=sys.stderr)
            return interrupted_exit_code()
        progress.close()
        lines = describe(outcomes)
        if settings.quiet:
            lines = [line for line in lines if line.lstrip().startswith(("failed", "busy"))] + lines[-1:]
        report(lines)
        return exit_code(outcomes)

    return reporting_errors(run)
