"""Frame accounting: every frame of the input is written, dropped (live) or counted as undecodable.

The decoder reads video packets; each gives a frame or is *undecodable* (FFmpeg rejected it, or it
gave no picture: a damaged packet that error concealment could not use). Every frame decoded is
sent down the pipeline and, at the end of a run, is either written or dropped (live runs only;
file runs drop nothing)::

    packets read  = frames decoded + undecodable packets
    frames decoded = frames written + frames dropped

The summary line shows the second identity; a run where it does not hold has lost frames, which
the CLI reports as a failure (exit code 1) rather than a success.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def clock(seconds: float) -> str:
    """Seconds → ``H:MM:SS.ss`` (how positions in the input are shown to the user)."""
    minutes, secs = divmod(max(0.0, seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:05.2f}"


def parse_clock(text: str, option: str) -> float:
    """A time as users write it for FFmpeg: seconds ('90', '2.5') or [HH:]MM:SS[.frac] ('1:30',
    '00:01:30.5') → seconds (≥ 0). Raises InputError naming ``option`` otherwise."""
    from stream.errors import InputError

    parts = text.strip().split(":")
    try:
        if len(parts) > 3 or any(part == "" for part in parts):
            raise ValueError
        values = [float(part) for part in parts]
        if any(not math.isfinite(v) or v < 0 for v in values) or any(v >= 60 for v in values[1:]):
            raise ValueError
    except ValueError:
        raise InputError(f"{option}: expected seconds or [HH:]MM:SS[.ms], found {text!r}") from None
    seconds = 0.0
    for value in values:
        seconds = seconds * 60 + value
    return seconds


@dataclass
class DecodeAccount:
    """What the decoder made of the input's video packets.

    ``packets``: non-empty video packets read; ``frames``: frames decoded and sent;
    ``rejected``: packets FFmpeg refused with an error; ``first_bad_s``: input time of the packet
    being decoded when the first of those was noticed (with frame threads, a few frames late); ``concealed``: frames FFmpeg decoded despite errors, hiding the damage (they are
    written); ``read_to_end``: the demuxer reached the end of the input (not stopped by a drain).
    """

    packets: int = 0
    frames: int = 0
    rejected: int = 0
    concealed: int = 0
    first_bad_s: float | None = None
    read_to_end: bool = False

    def reject(self, at_s: float | None) -> None:
        self.rejected += 1
        if self.first_bad_s is None and at_s is not None:
            self.first_bad_s = at_s

    @property
    def undecodable(self) -> int:
        """Packets that gave no frame. Until the input was read to the end, packets still inside
        the decoder (frame threading holds a few) are not counted, only the rejected ones."""
        if not self.read_to_end:
            return self.rejected
        return max(self.rejected, self.packets - self.frames)

    def warnings(self, source: str) -> list[str]:
        """Lines for the user about skipped packets and concealed damage (none for a clean input)."""
        lines = []
        count = self.undecodable
        if count:
            where = f", the first noticed at {clock(self.first_bad_s)}" if self.first_bad_s is not None else ""
            plural = "s" if count != 1 else ""
            lines.append(f"{count} video packet{plural} of {source} could not be decoded and "
                         f"{'were' if plural else 'was'} skipped (damaged input?){where}")
        if self.concealed:
            plural = "s" if self.concealed != 1 else ""
            lines.append(f"{self.concealed} frame{plural} of {source} had decoding errors that FFmpeg concealed "
                         "(damaged input?); they were colorized as decoded")
        return lines


def ended_early_warning(source: str, last_frame_end_s: float | None, expected_end_s: float | None,
                        frame_s: float) -> str | None:
    """A line when the frames stop well before the duration the container announces (a truncated or
    damaged file), else None. "Well before": more than one second and more than three frames."""
    if last_frame_end_s is None or expected_end_s is None:
        return None
    if expected_end_s - last_frame_end_s <= max(1.0, 3 * frame_s):
        return None
    return (f"{source} ended at {clock(last_frame_end_s)} of the {clock(expected_end_s)} its header announces "
            "(truncated or damaged file?); the frames up to there were colorized")


@dataclass(frozen=True)
class FrameAccount:
    """The end-of-run identity ``decoded = written + dropped``.

    ``decoded`` is None when the decoder's figures never reached the supervisor (it was killed).
    """

    decoded: int | None
    written: int
    dropped: int

    @property
    def lost(self) -> int:
        """Frames decoded but neither written nor dropped (0 in a correct run; 0 when unknown)."""
        if self.decoded is None:
            return 0
        return self.decoded - self.written - self.dropped

    def describe(self) -> str:
        """The summary line's part, e.g. ``frames: 96 decoded = 96 written + 0 dropped``."""
        decoded = "?" if self.decoded is None else str(self.decoded)
        return f"frames: {decoded} decoded = {self.written} written + {self.dropped} dropped"


def account_of(report) -> FrameAccount:
    """The frame account of a :class:`stream.supervisor.RunReport`."""
    decoded = report.frames_decoded if report.decoder_reported else None
    return FrameAccount(decoded=decoded, written=report.frames_written, dropped=report.frames_dropped)
