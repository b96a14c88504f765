"""Progress bar while a run goes, and the one summary line at the end.

tqdm draws the bar (frames done / total, fps, ETA) because it already handles terminal width,
rate smoothing and unknown totals well; it is shown only on a terminal and never with --quiet.
"""
from __future__ import annotations

import sys

from stream.accounting import account_of
from stream.supervisor import ProgressEvent, RunReport

STAGES = ("decoder", "preprocessor", "inference", "encoder")


class ProgressBar:
    """Feeds supervisor progress events to a tqdm bar on stderr (a no-op when disabled)."""

    def __init__(self, enabled: bool, label: str):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=None, unit="frame", desc=label, file=sys.stderr, dynamic_ncols=True,
                            smoothing=0.1)

    def __call__(self, event: ProgressEvent) -> None:
        if self.bar is None:
            return
        if event.frames_total and self.bar.total != max(event.frames_total, event.frames_done):
            self.bar.total = max(event.frames_total, event.frames_done)
        self.bar.update(event.frames_done - self.bar.n)

    def notice(self, text: str) -> None:
        """A line on stderr that does not tear the bar (restarts, workers joining or lost)."""
        if self.bar is None:
            print(text, file=sys.stderr, flush=True)
        else:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summary_line(report: RunReport, output: str, replicas: dict[str, int], settings: str = "") -> str:
    """One line: frames, wall time, fps, ``settings`` (the model and what ``auto`` chose), each
    stage's busy share of the wall time, the frame account."""
    shares = ", ".join(f"{stage} {100 * report.busy_share(stage, replicas.get(stage, 1)):.0f}%"
                       for stage in STAGES)
    parts = [f"{report.frames_written} frames in {report.wall_s:.1f} s ({report.fps:.1f} fps) -> {output}",
             settings, f"busy: {shares}", account_of(report).describe()]
    parts = [part for part in parts if part]
    if report.undecodable_packets:
        parts.append(f"{report.undecodable_packets} undecodable packets skipped")
    parts.extend(report.notes)
    if report.audio:
        parts.append(f"audio {report.audio}")
    if report.restarts:
        parts.append(", ".join(f"{stage} restarted {count}×" for stage, count in report.restarts.items()))
    if report.joined_frames:
        count = len(report.joined_frames)
        parts.append(f"{sum(report.joined_frames.values())} frames done by {count} joining worker{'s' * (count != 1)}")
    if report.resent_frames:
        parts.append(f"{report.resent_frames} frames sent again")
    return "; ".join(parts)
