"""A batch job: many inputs, each cut into segments, run anywhere, resumable, verified.

For every input: if its output is already complete (recorded in the job state under the same
fingerprint, and the file on disk still has the recorded SHA-256) it is skipped. Otherwise the
run claims it, plans its segments (:mod:`batch.segments`), reuses each finished piece whose file
still matches its checksum, runs the others (:mod:`batch.executors`), and once every piece is
there joins them (:mod:`batch.join`) into a temporary file that takes the output's name only when
complete. A failure costs its own file only; an interruption costs the pieces in flight only.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import av

from batch.inputs import BatchItem
from batch.piece import PieceResult, PieceTask
from batch.segments import plan_segments, warmup_frames
from batch.state import JobState, fingerprint, input_identity
from stream import __version__
from stream.checksum import file_sha256
from stream.errors import InputError, PipelineError
from stream.options import VIDEO_FORMATS

STATE_FOLDER = ".colorize-batch"
"""Inside OUTDIR: the job state (``job.sqlite``) and the finished pieces of unfinished outputs."""
CORES_PER_PIPELINE = 4
"""Cores one segment pipeline keeps busy (decoder, preprocessor, inference, encoder); sets the
default ``--jobs`` (cores ÷ 4, at least 1) and what a Ray task asks for."""
POLL_S = 0.25
PIECE_SUFFIX = ".mp4"
"""Video pieces are MP4: of FFmpeg's muxers it keeps every packet's presentation and decoding time
exactly (the input's time base, negative decoding times at the start, any first timestamp), which
the join relies on; NUT, Matroska and MPEG-TS shift or round them."""


@dataclass(frozen=True)
class BatchSettings:
    """A validated ``colorize batch`` command line (see :mod:`batch.cli`)."""

    outdir: Path
    model: Path
    config: object
    jobs: int
    overwrite: bool
    segment_s: float
    cluster: str | None = None
    quiet: bool = False
    maps: tuple = ()
    """``--map`` rules (:class:`stages.tracks.MapRule`) for the tracks besides the video."""


@dataclass
class FileOutcome:
    """What the job did with one input: ``status`` 'done', 'skipped', 'failed', 'busy' (another run
    holds it) or 'interrupted'; ``frames`` written; ``reused`` pieces taken from an earlier run."""

    item: BatchItem
    output: Path
    status: str = "interrupted"
    frames: int = 0
    reused: int = 0
    reason: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass
class FileWork:
    """An input being worked on: its fingerprint, its pieces (index → path) and what is missing."""

    outcome: FileOutcome
    key: str
    print_: str
    pieces: dict[int, Path]
    missing: set[int]
    frames: dict[int, int] = field(default_factory=dict)
    time_base: tuple[int, int] = (1, 1)


def piece_folder(state_dir: Path, key: str) -> Path:
    return state_dir / "pieces" / hashlib.sha256(key.encode()).hexdigest()[:16]


class BatchJob:
    """One ``colorize batch`` run over ``items`` (see the module's docstring)."""

    def __init__(self, items: list[BatchItem], settings: BatchSettings, executor, on_frames=None, on_file=None):
        self.items, self.settings, self.executor = items, settings, executor
        self.on_frames = on_frames or (lambda done, total: None)
        self.on_file = on_file or (lambda outcome: None)
        self.state_dir = settings.outdir / STATE_FOLDER
        self.state = JobState(self.state_dir / "job.sqlite")
        self.token = uuid.uuid4().hex
        self.marker = self.state_dir / f"marker-{self.token}"
        self.work: dict[str, FileWork] = {}
        self.outcomes: list[FileOutcome] = []
        self.handles: dict = {}
        self.frames_total = self.frames_done = 0
        self.in_flight: dict[str, int] = {}

    def run(self) -> list[FileOutcome]:
        """Do the job; the outcome of every input, in order. KeyboardInterrupt stops it (the
        pieces finished so far are kept for the next run) and is raised again."""
        self.marker.write_text(self.token)
        try:
            model_sha256 = file_sha256(self.settings.model)
            for item in self.items:
                self.outcomes.append(self._start(item, model_sha256))
            self.on_frames(self.frames_done, self.frames_total)
            while self.handles:
                self._collect(self.executor.wait(list(self.handles), POLL_S))
            return self.outcomes
        except KeyboardInterrupt:
            for work in self.work.values():  # what an interrupted film keeps: its finished pieces
                if work.outcome.status == "interrupted":
                    work.outcome.frames = sum(work.frames.values())
            raise
        finally:
            self.executor.close(cancel=True)
            self.state.close()
            self.marker.unlink(missing_ok=True)

    def _start(self, item: BatchItem, model_sha256: str) -> FileOutcome:
        settings = self.settings
        output = settings.outdir / item.relative
        outcome = FileOutcome(item, output)
        key = item.relative.as_posix()
        plan_info = {"version": __version__} if item.is_image else {
            "version": __version__, "segment_s": settings.segment_s, "warmup_frames": warmup_frames(settings.config),
            "maps": [rule.text for rule in settings.maps]}
        try:
            print_ = fingerprint(input_identity(item.source), model_sha256, settings.config, plan_info)
        except OSError as exc:
            return self._failed(outcome, None, f"cannot read the input: {exc.strerror}")
        record = self.state.record(key)
        if record and record.status == "done" and output.is_file() and not settings.overwrite:
            if record.fingerprint == print_ and file_sha256(output) == record.sha256:
                outcome.status, outcome.frames = "skipped", record.frames
                self.on_file(outcome)
                return outcome
        if output.is_dir():
            return self._failed(outcome, None, f"the output path is a folder: {output}")
        if output.exists() and not settings.overwrite and record is None:
            return self._failed(outcome, None, "the output exists and was not made by this job "
                                               "(--overwrite replaces it)")
        holder = self.state.claim(key, str(item.source), print_)
        if holder:
            outcome.status, outcome.reason = "busy", f"being colorized by another batch run ({holder})"
            self.on_file(outcome)
            return outcome
        try:
            segments = self._segments(item)
        except InputError as exc:
            return self._failed(outcome, key, str(exc))
        folder = piece_folder(self.state_dir, key)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = output.suffix if item.is_image else PIECE_SUFFIX
        work = FileWork(outcome, key, print_, {}, set())
        if segments is not None:
            work.time_base = segments.time_base
        for index, bounds, frames in self._units(segments):
            path = folder / f"{print_[:16]}-{index:05d}{suffix}"
            work.pieces[index] = path
            known = self.state.piece(key, index, print_)
            if known and path.is_file() and file_sha256(path) == known[1]:
                work.frames[index] = known[0]
                outcome.reused += 1
                self.frames_done += known[0]
                self.frames_total += known[0]
                continue
            work.missing.add(index)
            self.frames_total += frames
            task = PieceTask(key=f"{key}#{index}", input=str(item.source), model=str(settings.model),
                             config=settings.config, segment=bounds, destination=str(path), marker=str(self.marker),
                             token=self.token, suffix=suffix, cores=self.executor.cores_per_unit())
            self.handles[self.executor.submit(task)] = (key, index)
        self.work[key] = work
        if not work.missing:
            self._finish(work)
        return outcome

    def _segments(self, item: BatchItem):
        """The segment plan of a video (raises InputError for one FFmpeg cannot read, or with the
        item's refusal); None for a still."""
        if item.refusal:
            raise InputError(item.refusal)
        return None if item.is_image else plan_segments(str(item.source), self.settings.segment_s,
                                                         warmup_frames(self.settings.config))

    @staticmethod
    def _units(plan):
        """(index, bounds, frames) of each unit of a file: its segments, or one still image."""
        if plan is None:
            return [(0, None, 1)]
        return [(segment.index, segment.bounds, segment.frames) for segment in plan.segments]

    def _collect(self, done: list) -> None:
        for key, frames in self.executor.progress():
            self.in_flight[key] = frames
        for handle in done:
            key, index = self.handles.pop(handle)
            self.in_flight.pop(f"{key}#{index}", None)
            work = self.work[key]
            try:
                result = self.executor.result(handle)
            except (InputError, PipelineError) as exc:
                self._failed(work.outcome, key, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                continue
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a worker or node lost for good, a broken pool: this file only
                text = str(exc).strip().splitlines()
                self._failed(work.outcome, key, f"{type(exc).__name__}: {text[-1] if text else 'no details'}")
                continue
            if work.outcome.status == "failed":
                continue
            work.outcome.warnings += [line for line in result.warnings if line not in work.outcome.warnings]
            self._store(work, index, result)
        self.on_frames(self.frames_done + sum(self.in_flight.values()), self.frames_total)

    def _store(self, work: FileWork, index: int, result: PieceResult) -> None:
        path = work.pieces[index]
        if result.data is not None:  # came back through the executor: the worker did not see OUTDIR
            temporary = path.with_name(f".{path.name}.part")
            temporary.write_bytes(result.data)
            temporary.replace(path)
        if file_sha256(path) != result.sha256:
            self._failed(work.outcome, work.key, f"piece {index} does not match its checksum after transfer")
            return
        self.state.add_piece(work.key, index, work.print_, result.frames, result.sha256, str(path))
        work.frames[index] = result.frames
        work.missing.discard(index)
        self.frames_done += result.frames
        if not work.missing:
            self._finish(work)

    def _finish(self, work: FileWork) -> None:
        """Every piece is there: join (videos) or move (stills) into place, then record it done."""
        outcome, output = work.outcome, work.outcome.output
        output.parent.mkdir(parents=True, exist_ok=True)
        temporary = output.with_name(f".{output.stem}.colorize-batch-{self.token[:8]}.part{output.suffix}")
        pieces = [work.pieces[index] for index in sorted(work.pieces)]
        try:
            if outcome.item.is_image:
                shutil.copyfile(pieces[0], temporary)
                frames = 1
            else:
                from batch.join import join_pieces
                from stream.cli import probe_video

                output_format, config = VIDEO_FORMATS[output.suffix.lower()], self.settings.config
                side = probe_video(str(outcome.item.source), 0, output_format, config.encoder.audio,
                                   self.settings.maps).side
                outcome.warnings += [side.warning()] if side.dropped else []
                frames = join_pieces(pieces, str(outcome.item.source), temporary, output_format, config,
                                     work.time_base, side)
                if frames != sum(work.frames.values()):
                    raise PipelineError(f"joined {frames} frames, the pieces hold {sum(work.frames.values())}")
            sha256 = file_sha256(temporary)
            temporary.replace(output)
        except (InputError, PipelineError, OSError, av.error.FFmpegError) as exc:
            temporary.unlink(missing_ok=True)
            self._failed(outcome, work.key, f"joining the pieces failed: {exc}")
            return
        self.state.finish(work.key, frames, sha256)
        shutil.rmtree(piece_folder(self.state_dir, work.key), ignore_errors=True)
        outcome.status, outcome.frames = "done", frames
        self.on_file(outcome)

    def _failed(self, outcome: FileOutcome, key: str | None, reason: str) -> FileOutcome:
        if outcome.status == "failed":
            return outcome
        outcome.status, outcome.reason = "failed", reason
        if key is not None:
            self.state.fail(key, reason)
            folder = piece_folder(self.state_dir, key)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self.on_file(outcome)
        return outcome


def default_jobs(cores: int) -> int:
    """Segment pipelines to run side by side on ``cores`` cores: one per CORES_PER_PIPELINE."""
    return max(1, cores // CORES_PER_PIPELINE)


def describe(outcomes: list[FileOutcome]) -> list[str]:
    """The summary table: one row per input not skipped, then the totals."""
    rows = []
    for outcome in outcomes:
        if outcome.status == "skipped":
            continue
        reused = f" ({outcome.reused} pieces reused)" if outcome.reused else ""
        reason = f": {outcome.reason}" if outcome.reason else ""
        rows.append(f"  {outcome.status:<11} {outcome.frames:>8}  {outcome.output}{reused}{reason}")
        rows += [f"    warning: {line}" for line in outcome.warnings]
    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("done", "skipped", "failed", "busy", "interrupted")}
    totals = ", ".join(f"{count} {status}" for status, count in counts.items() if count)
    header = [f"  {'status':<11} {'frames':>8}  output"] if rows else []
    return header + rows + [f"{len(outcomes)} input{'s' * (len(outcomes) != 1)}: {totals}"]


def exit_code(outcomes: list[FileOutcome]) -> int:
    """0 when every input is done or skipped, else 1."""
    return 0 if all(o.status in ("done", "skipped") for o in outcomes) else 1


def report(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)
