"""Joining a video's pieces into its output: a remux, no re-encoding, with the source's audio.

Each piece is H.264 from an IDR frame on, with the input's own timestamps (:mod:`batch.piece`), so
the packets of the pieces, copied one after the other, are the whole film's video track: the same
frame count, timestamps and duration as a one-piece run. x264 gives each packet a decoding time
equal to an earlier frame's presentation time, so decoding times also rise across a join. The
source's other tracks (audio, subtitles, timecode: :mod:`stages.tracks`) are written once here,
interleaved with the video as the single-file encoder does.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

from stages.tracks import SidePlan, SideTracks
from stages.output_errors import writing_output


def source_rotation(path: str, stream_index: int) -> int:
    """The display rotation (degrees) of the source's video, as its first frame carries it."""
    with av.open(path) as container:
        stream = container.streams.video[stream_index]
        for frame in container.decode(stream):
            return int(frame.rotation or 0)
    return 0


def join_pieces(pieces: list[Path], source: str, output_tmp: Path, output_format: str, config,
                time_base: tuple[int, int], side: SidePlan, stream_index: int = 0) -> int:
    """Write ``pieces`` (in order) and the other tracks of ``source`` that ``side`` names into
    ``output_tmp``; the number of video frames written. ``output_format``: FFmpeg's muxer name
    ('mp4', 'mov', 'matroska'); ``config``: the run's :class:`stream.config.PipelineConfig` (its
    encoder's audio settings); ``time_base``: the source video's, which the one-piece encoder also
    gives its stream."""
    encoder = config.encoder
    frames = 0
    options = {"write_tmcd": "1"} if side.timecode and output_format == "mp4" else {}
    with writing_output(str(output_tmp)), av.open(str(output_tmp), mode="w", format=output_format,
                                                  options=options) as output:
        video = audio = None
        try:
            for piece in pieces:
                with av.open(str(piece)) as container:
                    template = container.streams.video[0]
                    if video is None:
                        video = output.add_stream_from_template(template)
                        video.time_base = Fraction(*time_base)
                        rotation = source_rotation(source, stream_index)
                        if rotation:
                            video.set_display_rotation(rotation)
                        if side.timecode:
                            video.metadata["timecode"] = side.timecode
                        audio = SideTracks(source, output, output_format, side, encoder.audio,
                                           encoder.audio_bitrate_kbps)
                    for packet in container.demux(template):
                        if packet.dts is None and packet.pts is None:
                            continue  # the demuxer's end-of-stream packet
                        at = float(packet.pts * packet.time_base) if packet.pts is not None else None
                        packet.stream = video
                        output.mux(packet)
                        frames += 1
                        if audio is not None and at is not None:
                            audio.write_until(at)
            if audio is not None:
                audio.write_until(None)
        finally:
            if audio is not None:
                audio.close()
    return frames
