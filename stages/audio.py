"""An audio track of the input, carried into the output beside the colorized video (one per track: :mod:`stages.tracks`).

The encoder opens the input a second time, audio only, and interleaves audio packets with the
video it writes (everything up to the time of the last video frame written). Packets are copied
without re-encoding where the output container takes the codec; otherwise they are transcoded
to AAC.

Damaged audio never costs the video: packets that do not decode (also when they are copied: each is
decoded first, so damage is never copied into the output), or whose timestamps go backwards (the
muxer would refuse them), are skipped; if the input cannot be read any further, the audio
stops there. Either way :meth:`AudioTrack.warnings` says so.
"""
from __future__ import annotations

from fractions import Fraction

import av

from stream.accounting import clock

PART_TOLERANCE_S = 0.001
"""With --start, audio packets starting this much before the cut still count as after it."""

COPYABLE = {
    "mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    "matroska": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac", "vorbis", "pcm_s16le",
                 "pcm_s24le", "pcm_f32le", "dts", "truehd", "mp2"},
}


ORDERED_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def aac_layout(layout) -> str:
    """The AAC channel layout for a source's ``av.AudioLayout`` (or None): its own, except that a
    layout without channel order ('1 channels': PCM in AVI, say), which the encoder refuses, becomes
    the usual one for that many channels; stereo when unknown."""
    if layout is None or not layout.nb_channels:
        return "stereo"
    if layout.name.endswith("channels"):
        return ORDERED_LAYOUTS.get(layout.nb_channels, "7.1")
    return layout.name


def keep_track_tags(source_stream, output_stream) -> None:
    """Give ``output_stream`` the language, title and disposition (default, forced, hearing
    impaired, ...) of the input stream it carries."""
    for key in ("language", "title"):
        value = source_stream.metadata.get(key)
        if value:
            output_stream.metadata[key] = value
    output_stream.disposition = source_stream.disposition


def exact_seconds(seconds: float) -> Fraction:
    """Seconds as a fraction (to a microsecond), to compare with timestamps × time base exactly."""
    return Fraction(seconds).limit_denominator(1_000_000)


class AudioTrack:
    """Copies or transcodes one audio stream of ``input_path`` into ``output``.

    ``mode``: 'auto' (copy if the container takes the codec, else AAC), 'copy', 'aac' or 'none'.
    ``stream_index``: the input stream (absolute index) to carry; None: the first audio stream.
    Inactive (``stream is None``) when the input has no audio or ``mode`` is 'none'. ``start_s``:
    where the output begins on the input's clock (``--start``): audio before it is left out and
    the rest moved to start there, to within one audio packet (about 20 ms).
    """

    def __init__(self, input_path: str, output, container_kind: str, mode: str, bitrate_kbps: int,
                 start_s: float = 0.0, stream_index: int | None = None):
        self.stream = None
        self.start_s = start_s
        self._start = exact_seconds(start_s)
        self.packets_written = 0
        self.packets_skipped = 0
        self.stopped_at_s: float | None = None
        self._position_s = 0.0
        self._last_dts = None
        self._flushed = False
        self._started = False
        if mode == "none":
            return
        self.source = av.open(input_path)
        audio = self.source.streams.audio
        if not audio:
            self.source.close()
            return
        self.input_stream = audio[0] if stream_index is None else self.source.streams[stream_index]
        codec = self.input_stream.codec_context.codec.canonical_name
        self.copy = mode == "copy" or (mode == "auto" and codec in COPYABLE.get(container_kind, set()))
        self.output = output
        if self.copy:
            self.stream = output.add_stream_from_template(self.input_stream)
        else:
            ctx = self.input_stream.codec_context
            self.stream = output.add_stream("aac", rate=ctx.sample_rate or 48000)
            self.stream.codec_context.layout = aac_layout(ctx.layout)
            self.stream.bit_rate = bitrate_kbps * 1000
        keep_track_tags(self.input_stream, self.stream)
        self.codec_name = codec
        if start_s:
            self.source.seek(round(start_s / self.input_stream.time_base), stream=self.input_stream, backward=True)
        self._packets = self.source.demux(self.input_stream)
        self._held = None

    def write_until(self, seconds: float | None) -> None:
        """Mux every audio packet that starts before ``seconds`` (all remaining if None)."""
        if self.stream is None:
            return
        limit = None if seconds is None else exact_seconds(seconds)
        while True:
            packet = self._held if self._held is not None else self._next_packet()
            self._held = None
            if packet is None:
                self.flush()
                return
            if packet.dts is None and packet.pts is None:
                continue
            start = packet.pts if packet.pts is not None else packet.dts
            self._position_s = float(start * packet.time_base)
            if self.start_s and self._position_s < self.start_s - PART_TOLERANCE_S:
                continue  # before --start (the seek lands on the packet before it)
            if limit is not None and start * packet.time_base - self._start > limit:
                self._held = packet
                return
            if self.copy:
                if packet.dts is not None and self._last_dts is not None and packet.dts <= self._last_dts:
                    self.packets_skipped += 1
                    continue
                if not self._decodes(packet):  # copied damaged, it would be damaged in the output too
                    self.packets_skipped += 1
                    continue
                self._last_dts = packet.dts if packet.dts is not None else self._last_dts
                if self.start_s:  # --start is the output's time 0
                    shift = round(self.start_s / packet.time_base)
                    packet.pts = None if packet.pts is None else max(0, packet.pts - shift)
                    packet.dts = None if packet.dts is None else max(0, packet.dts - shift)
                packet.stream = self.stream
                self.output.mux(packet)
                self.packets_written += 1
            else:
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    self.packets_skipped += 1
                    continue
                for frame in frames:
                    self._mux(self._encode(self._on_encoder_clock(frame)))

    def flush(self) -> None:
        """Write what the AAC encoder still holds (transcoding only; once): at the input's end, or
        where the output stops early."""
        if self.stream is not None and not self.copy and not self._flushed:
            self._flushed = True
            self._mux(self._encode(None))

    @staticmethod
    def _decodes(packet) -> bool:
        """Whether FFmpeg's decoder takes the packet without an error (audio decoding is cheap)."""
        try:
            packet.decode()
        except (av.error.FFmpegError, ValueError):
            return False
        return True

    def _on_encoder_clock(self, frame):
        """The decoded frame as the AAC encoder takes it: the first one with its pts in the
        encoder's time base (1/sample rate), so the transcoded audio keeps the input's start
        relative to the video (a track that starts 0.5 s after the picture still does); the
        others without (they follow it sample by sample: input timestamps rounded to a millisecond
        would otherwise break the encoder's sample-exact continuity and cost frames)."""
        if self._started or frame.pts is None or frame.time_base is None:
            frame.pts = None
        else:
            rate = self.stream.codec_context.sample_rate
            frame.pts = max(0, round((frame.pts * frame.time_base - self._start) * rate))
            frame.time_base = Fraction(1, rate)
        self._started = True
        return frame

    def _encode(self, frame) -> list:
        """AAC packets for a decoded frame (None: the encoder's last ones); none for a frame that
        cannot be encoded (damage gave it an impossible layout or rate), which is counted."""
        try:
            return self.stream.encode(frame)
        except (ValueError, av.error.FFmpegError):
            self.packets_skipped += 1
            return []

    def _next_packet(self):
        """The next audio packet of the input; None at its end, or where it cannot be read further."""
        if self.stopped_at_s is not None:
            return None
        try:
            return next(self._packets, None)
        except av.error.FFmpegError:
            self.stopped_at_s = self._position_s
            return None

    def warnings(self, source: str) -> list[str]:
        """Lines for the user about damaged audio (none for a clean input)."""
        lines = []
        if self.packets_skipped:
            lines.append(f"{self.packets_skipped} damaged audio packet{'s' * (self.packets_skipped != 1)} "
                         f"of {source} skipped")
        if self.stopped_at_s is not None:
            lines.append(f"the audio of {source} could not be read past {clock(self.stopped_at_s)} "
                         "(damaged input?); the output's audio stops there")
        return lines

    def _mux(self, packets) -> None:
        for packet in packets:
            self.output.mux(packet)
            self.packets_written += 1

    def close(self) -> None:
        source = getattr(self, "source", None)
        if source is not None:
            source.close()
