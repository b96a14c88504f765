"""The input's streams besides the colorized video: which go into the output, and writing them.

By default a file run keeps every audio track, every subtitle track the output container can hold
and the timecode; ``--map`` (FFmpeg's vocabulary, see :func:`parse_map`) chooses instead. Audio is
copied where the container takes the codec, else transcoded to AAC (:class:`stages.audio.AudioTrack`);
subtitles are copied where the container takes the codec, text subtitles are converted to the
container's text format (MP4/MOV: mov_text; Matroska: SubRip) by FFmpeg's own decoders and
encoders; language, title and disposition (default, forced, ...) go with each track. The timecode
(a QuickTime ``tmcd`` track, or a video/container ``timecode`` tag) is written as a ``tmcd`` track
in MP4/MOV and a tag in Matroska, moved by ``--start``. Whatever is left out is named, with why,
in one ``warning:`` line (:attr:`SidePlan.dropped`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

import av

from stages.audio import AudioTrack, exact_seconds, keep_track_tags
from stream.errors import InputError

TEXT_SUBTITLES = {"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"}
SUBTITLES_KEPT = {
    "mp4": {"mov_text", "dvd_subtitle"},
    "mov": {"mov_text"},
    "matroska": {"subrip", "srt", "ass", "ssa", "webvtt", "dvd_subtitle", "hdmv_pgs_subtitle", "dvb_subtitle"},
}
TEXT_FORMAT = {"mp4": "mov_text", "mov": "mov_text", "matroska": "subrip"}
KINDS = {"a": "audio", "s": "subtitle", "d": "data", "v": "video", "t": "attachment"}
MAP_PATTERN = re.compile(r"^(?P<negative>-)?(?:0:)?(?:(?P<index>\d+)|(?P<kind>[asdvt])"
                         r"(?::(?:(?P<number>\d+)|m:language:(?P<language>[A-Za-z-]+)))?)$")


@dataclass(frozen=True)
class MapRule:
    """One ``--map``: streams it matches (by absolute ``index``, or ``kind`` with the n-th of that
    kind or a language) are added, or removed when ``negative``."""

    text: str
    negative: bool
    index: int | None = None
    kind: str | None = None
    number: int | None = None
    language: str | None = None
    everything: bool = False

    def matches(self, stream, number_of_kind: int) -> bool:
        if self.everything:
            return True
        if self.index is not None:
            return stream.index == self.index
        if stream.type != self.kind:
            return False
        if self.number is not None:
            return number_of_kind == self.number
        if self.language is not None:
            return (stream.metadata.get("language") or "").lower() == self.language.lower()
        return True


def parse_map(text: str) -> MapRule:
    """A ``--map`` as users write it for FFmpeg's single input: ``0`` (every stream), ``0:a`` (all
    audio), ``a:1`` (the second audio track), ``s:m:language:eng``, ``0:3`` (stream 3), ``-0:s``
    (remove all subtitles); ``d`` is the timecode. The ``0:`` is optional. Raises InputError otherwise."""
    if text.strip() in ("0", "-0"):
        return MapRule(text, text.strip().startswith("-"), everything=True)
    match = MAP_PATTERN.match(text.strip())
    if not match:
        raise InputError(f"--map {text}: expected [-][0:]a|s|d[:N|:m:language:LANG] or [-][0:]INDEX")
    kind = KINDS[match["kind"]] if match["kind"] else None
    if kind == "video":
        raise InputError(f"--map {text}: the video colorized is chosen with --stream N")
    return MapRule(text, bool(match["negative"]), int(match["index"]) if match["index"] else None, kind,
                   int(match["number"]) if match["number"] else None, match["language"])


@dataclass(frozen=True)
class SidePlan:
    """What goes into the output besides the video: ``tracks`` (absolute stream indices of the audio
    and subtitle tracks, in input order), ``timecode`` ('' = none) and ``dropped`` (each stream left
    out, described with why)."""

    tracks: tuple[int, ...] = ()
    timecode: str = ""
    dropped: tuple[str, ...] = ()

    def warning(self) -> str:
        """The one ``warning:`` line naming what is left out ('' when nothing is)."""
        return f"not carried into the output: {'; '.join(self.dropped)}" if self.dropped else ""


def describe(stream) -> str:
    """'audio #2 (fra)', 'subtitle #3 hdmv_pgs_subtitle (eng)': a stream as users know it."""
    language = stream.metadata.get("language")
    name = f"{stream.type} #{stream.index}"
    if stream.type in ("subtitle", "data", "attachment") and stream.codec_context is not None:
        name += f" {stream.codec_context.name}"
    return f"{name} ({language})" if language and language != "und" else name


def source_timecode(container, video) -> str:
    """The input's start timecode ('HH:MM:SS:FF', ';' before FF when drop-frame), '' when none:
    from the video stream's tags, a timecode (tmcd) data stream's, or the container's."""
    for tags in [video.metadata, *(s.metadata for s in container.streams if s.type == "data"), container.metadata]:
        for key, value in tags.items():
            if key.lower() == "timecode" and value:
                return value
    return ""


def moved_timecode(timecode: str, start_s: float, rate: Fraction) -> str:
    """``timecode`` moved forward by ``start_s`` seconds at frame rate ``rate`` (non-drop-frame);
    '' when it cannot be moved exactly (drop-frame, or a rate that is not a whole number)."""
    if not start_s:
        return timecode
    fields = re.fullmatch(r"(\d+):(\d\d):(\d\d):(\d\d)", timecode)
    fps = rate.numerator / rate.denominator if rate else 0
    if not fields or fps != int(fps) or fps <= 0:
        return ""
    fps = int(fps)
    hours, minutes, seconds, frames = map(int, fields.groups())
    total = ((hours * 60 + minutes) * 60 + seconds) * fps + frames + round(start_s * fps)
    frames, total = total % fps, total // fps
    seconds, total = total % 60, total // 60
    return f"{total // 60 % 24:02d}:{total % 60:02d}:{seconds:02d}:{frames:02d}"


def plan_side_tracks(container, video, output_kind: str, audio_mode: str, maps: tuple[MapRule, ...] = (),
                     start_s: float = 0.0) -> SidePlan:
    """Which streams of an open input ``container`` go into an output of ``output_kind`` ('mp4',
    'mov', 'matroska') besides its colorized ``video`` stream (see the module's docstring).
    Raises InputError for a ``--map`` that matches no stream."""
    others = [stream for stream in container.streams if stream.index != video.index]
    counts: dict[str, int] = {}
    numbered = []
    for stream in others:
        numbered.append((stream, counts.get(stream.type, 0)))
        counts[stream.type] = counts.get(stream.type, 0) + 1
    timecode = source_timecode(container, video)
    timecode_streams = [s for s in others if s.type == "data" and s.metadata.get("timecode")]
    chosen = {s.index for s in others if s.type in ("audio", "subtitle")}  # the default
    timecode_chosen = bool(timecode)
    if maps:
        if any(not rule.negative for rule in maps):  # as FFmpeg: given any map, only what is mapped
            chosen, timecode_chosen = set(), False
        for rule in maps:  # in order, so '0' then '-0:s' is everything but the subtitles
            matched = {stream.index for stream, n in numbered if rule.matches(stream, n)}
            if (rule.kind == "data" and rule.index is None or rule.everything) and timecode:
                timecode_chosen = not rule.negative
            elif not matched and not rule.negative and rule.index != video.index:
                raise InputError(f"--map {rule.text} matches no stream of {container.name}")
            chosen = chosen - matched if rule.negative else chosen | matched
        timecode_chosen = timecode_chosen or any(s.index in chosen for s in timecode_streams)
    tracks, dropped = [], []
    for stream in others:
        why = ""
        if stream in timecode_streams:
            continue  # said below, with the timecode
        if stream.index not in chosen:
            why = "not mapped" if maps else ""
            if not why and stream.type == "video":
                why = f"another video: colorize it with --stream {_video_number(container, stream)}"
            elif not why:
                why = "cannot be carried"
        elif stream.type == "audio" and audio_mode == "none":
            why = "encoder.audio: none"
        elif stream.type == "subtitle" and not subtitle_kept(stream, output_kind):
            why = f"{'MP4' if output_kind == 'mp4' else output_kind.upper()} cannot hold it"
        elif stream.type not in ("audio", "subtitle"):
            why = "cannot be carried"
        if why:
            dropped.append(f"{describe(stream)} ({why})")
        else:
            tracks.append(stream.index)
    if timecode and not timecode_chosen:
        dropped.append(f"timecode {timecode} (not mapped)")
        timecode = ""
    elif timecode:
        moved = moved_timecode(timecode, start_s, video.average_rate or video.guessed_rate)
        if not moved:
            dropped.append(f"timecode {timecode} (cannot be moved by --start: drop-frame or a fractional rate)")
        timecode = moved
    return SidePlan(tuple(tracks), timecode, tuple(dropped))


def _video_number(container, stream) -> int:
    return [s.index for s in container.streams.video].index(stream.index)


def subtitle_kept(stream, output_kind: str) -> bool:
    """Whether a subtitle stream can go into ``output_kind``: as it is, or as converted text."""
    name = stream.codec_context.name if stream.codec_context is not None else ""
    return name in SUBTITLES_KEPT.get(output_kind, set()) or name in TEXT_SUBTITLES


class SubtitleTrack:
    """One subtitle stream of the input, copied or converted into ``output``; moved by ``start_s``
    (cues that end before it are left out). The same interface as :class:`stages.audio.AudioTrack`."""

    def __init__(self, input_path: str, output, output_kind: str, stream_index: int, start_s: float = 0.0):
        self.source = av.open(input_path)
        self.input_stream = self.source.streams[stream_index]
        context = self.input_stream.codec_context
        self.convert = context.name not in SUBTITLES_KEPT.get(output_kind, set())
        if self.convert:
            context.open()
            self.stream = output.add_stream(TEXT_FORMAT[output_kind])
            self.stream.codec_context.subtitle_header = context.subtitle_header
            self.stream.time_base = self.input_stream.time_base
        else:
            self.stream = output.add_stream_from_template(self.input_stream)
        keep_track_tags(self.input_stream, self.stream)
        self.output = output
        self.start = exact_seconds(start_s)
        self.packets_written = self.packets_skipped = 0
        self._packets = self.source.demux(self.input_stream)
        self._held = None

    def write_until(self, seconds: float | None) -> None:
        limit = None if seconds is None else exact_seconds(seconds)
        while True:
            packet = self._held if self._held is not None else next(self._packets, None)
            self._held = None
            if packet is None:
                return
            if packet.pts is None or not packet.size:
                continue
            at = packet.pts * packet.time_base - self.start
            if limit is not None and at > limit:
                self._held = packet
                return
            if at + (packet.duration or 0) * packet.time_base <= 0:
                continue  # over before --start
            shift = round(self.start / packet.time_base)
            if packet.pts < shift and packet.duration:  # on screen at the cut: the part after it
                packet.duration -= shift - packet.pts
            self._mux(packet, max(0, packet.pts - shift))

    def _mux(self, packet, pts: int) -> None:
        if self.convert:
            try:
                cues = self.input_stream.codec_context.decode2(packet)
                out = self.stream.codec_context.encode_subtitle(cues) if cues is not None else None
            except (av.error.FFmpegError, ValueError, TypeError):
                out = None
            if out is None:
                self.packets_skipped += 1
                return
            out.duration, out.time_base = packet.duration, packet.time_base
            packet = out
        packet.pts = packet.dts = pts
        packet.stream = self.stream
        self.output.mux(packet)
        self.packets_written += 1

    def flush(self) -> None:
        pass

    def warnings(self, source: str) -> list[str]:
        if not self.packets_skipped:
            return []
        return [f"{self.packets_skipped} subtitle cue(s) of {describe(self.input_stream)} of {source} could not be "
                "converted and were left out"]

    def close(self) -> None:
        self.source.close()


class SideTracks:
    """Every track of a :class:`SidePlan`, written into ``output`` beside the video and interleaved
    with it: :meth:`write_until` after each video frame, ``None`` at the end."""

    def __init__(self, input_path: str, output, output_kind: str, plan: SidePlan, audio_mode: str,
                 audio_bitrate_kbps: int, start_s: float = 0.0):
        kind = "matroska" if output_kind == "matroska" else "mp4"
        with av.open(input_path) as probe:
            types = {index: probe.streams[index].type for index in plan.tracks}
        self.tracks = [AudioTrack(input_path, output, kind, audio_mode, audio_bitrate_kbps, start_s=start_s,
                                  stream_index=index) if types[index] == "audio"
                       else SubtitleTrack(input_path, output, output_kind, index, start_s)
                       for index in plan.tracks]
        self.audio = [track for track in self.tracks if isinstance(track, AudioTrack)]

    def write_until(self, seconds: float | None) -> None:
        for track in self.tracks:
            track.write_until(seconds)

    def flush(self) -> None:
        for track in self.tracks:
            track.flush()

    def close(self) -> None:
        for track in self.tracks:
            track.close()

    def warnings(self, source: str) -> list[str]:
        return [line for track in self.tracks for line in track.warnings(source)]

    def summary(self) -> str | None:
        """For the run's summary line: 'aac', 'copied', 'copied, +1 audio, 1 subtitle'; None when
        nothing but the video was written."""
        written = [t for t in self.tracks if t.packets_written]
        if not written:
            return None
        first = next((t for t in self.audio if t.packets_written), None)
        parts = ["copied" if first.copy else "aac"] if first else []
        audio_more = sum(1 for t in self.audio if t.packets_written) - (1 if first else 0)
        subtitles = sum(1 for t in written if isinstance(t, SubtitleTrack))
        parts += [f"+{audio_more} audio"] if audio_more else []
        parts += [f"{subtitles} subtitle{'s' * (subtitles > 1)}"] if subtitles else []
        return ", ".join(parts)
