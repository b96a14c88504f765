"""One unit of batch work, run in a worker process (a local pool's or a Ray task's): colorize one
segment of a video into an H.264 piece, or one still image.

A unit is self-contained (:class:`PieceTask` pickles) and deterministic: the same task gives the same
bytes, which is what lets a resumed job mix pieces from different runs. Two settings that could
vary from run to run are pinned: an ``auto`` inference batch size becomes 1 (batched and single
inference differ in the last bits of float arithmetic), and the timing of a run never decides
anything else that reaches the pixels.

Where the piece goes: when the task's ``destination`` folder is visible to the worker (the output
folder is on storage every node sees; checked with the marker file the driver wrote there), the
worker writes it there; otherwise it returns the bytes, which travel back through the executor
(Ray's object store on a cluster).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stream.errors import InputError, PipelineError
from stream.stage import SegmentBounds


@dataclass(frozen=True)
class PieceTask:
    """What a worker needs for one unit.

    ``key``: the unit's name in the job ('OUTPUT#INDEX'); ``input``: the source file (a path every
    worker can read); ``model``: the ONNX model's path; ``config``: the run's
    :class:`stream.config.PipelineConfig`; ``segment``: the part of the video, None for a still
    image; ``destination``: where the finished piece is put on shared storage (video pieces are
    MP4, see :data:`batch.job.PIECE_SUFFIX`); ``marker`` and
    ``token``: a file in the output folder and its content, to tell whether this worker sees that
    folder; ``cores``: the cores this unit may use (0 = all); ``suffix``: the piece's file
    suffix ('.mp4' for video pieces, the output's suffix for stills).
    """

    key: str
    input: str
    model: str
    config: object
    segment: SegmentBounds | None
    destination: str
    marker: str
    token: str
    suffix: str
    stream_index: int = 0
    cores: int = 0


@dataclass(frozen=True)
class PieceResult:
    """A finished unit: frames written, SHA-256 of the piece, and the piece's bytes when the
    worker could not put it at its destination (else None), plus warnings for the user."""

    key: str
    frames: int
    sha256: str
    data: bytes | None
    warnings: tuple[str, ...] = ()


def sees_destination(task: PieceTask) -> bool:
    """Whether the output folder the driver uses is visible here (same file, same content)."""
    try:
        return Path(task.marker).read_text() == task.token
    except OSError:
        return False


def run_piece(task: PieceTask, on_frames: Callable[[str, int], None] | None = None) -> PieceResult:
    """Colorize one unit; raises InputError or PipelineError (one line each) when it fails.
    ``on_frames(key, frames_done)`` is called as the unit's frames are written."""
    from stream.checksum import file_sha256

    if not Path(task.input).is_file():
        raise InputError(f"input not found on this node: {task.input}")
    shared = sees_destination(task)
    folder = Path(task.destination).parent if shared else Path(tempfile.mkdtemp(prefix="colorize-piece-"))
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{Path(task.destination).name}.{os.getpid()}.part{task.suffix}"
    try:
        if task.segment is None:
            frames, warnings = 1, _colorize_still(task, temporary)
        else:
            frames, warnings = _colorize_segment(task, temporary, on_frames)
        sha256 = file_sha256(temporary)
        if shared:
            temporary.replace(task.destination)
            return PieceResult(task.key, frames, sha256, None, tuple(warnings))
        return PieceResult(task.key, frames, sha256, temporary.read_bytes(), tuple(warnings))
    finally:
        temporary.unlink(missing_ok=True)
        if not shared:
            folder.rmdir()


def _colorize_still(task: PieceTask, temporary: Path) -> list[str]:
    from models.runtime import ColorModel, SessionSettings
    from stream.still_image import colorize_image

    inference = task.config.inference
    model = ColorModel(Path(task.model), SessionSettings(provider=inference.provider, device_id=inference.device_id))
    _, _, warnings = colorize_image(Path(task.input), temporary, model, task.config.colour)
    return warnings


def _colorize_segment(task: PieceTask, temporary: Path, on_frames) -> tuple[int, list[str]]:
    from stream.accounting import account_of
    from stream.cli import Request, one_thread_session, probe_video, video_job
    from stream.config import AUTO
    from stream.supervisor import Supervisor
    from stream.observe.tune import fit_to_machine

    config = task.config
    config = dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, audio="none"))
    if config.inference.batch_size == AUTO:
        config = dataclasses.replace(config, inference=dataclasses.replace(config.inference, batch_size=1))
    request = Request(task.input, Path(task.destination), Path(task.model), config, False, task.stream_index, True)
    model = one_thread_session(request)
    probe = probe_video(task.input, task.stream_index)
    config, _ = fit_to_machine(config, model, probe.width, probe.height, live=False, cores=task.cores or None)
    job = video_job(request, probe, model, temporary, output_format="mp4", segment=task.segment)
    progress = (lambda event: on_frames(task.key, event.frames_done)) if on_frames else None
    report = Supervisor(job, config, on_progress=progress).run()
    account = account_of(report)
    if report.interrupted:
        raise PipelineError(f"{task.key}: interrupted")
    if report.frames_written == 0 or not temporary.exists():
        raise InputError(f"no decodable video frames in {task.input} in segment {task.key}")
    if account.lost or account.dropped:
        raise PipelineError(f"{task.key}: {account.lost + account.dropped} frames were lost ({account.describe()})")
    return report.frames_written, list(report.warnings)
