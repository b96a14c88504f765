"""Every stream accounted for: audio tracks, subtitles and the timecode reach the output with their
language and disposition, ``--map`` chooses among them, and whatever is left out is named."""
from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest

from tests.conftest import run_cli

CUES = "1\n00:00:00,500 --> 00:00:01,500\nHello there\n\n2\n00:00:02,000 --> 00:00:03,000\nSecond line\n"


@pytest.fixture(scope="module")
def reel(tmp_path_factory) -> Path:
    """A 4 s grey MKV as restorers get them: English and French audio, English SubRip subtitles
    (forced), a second video stream, and a start timecode of 01:00:00:00."""
    folder = tmp_path_factory.mktemp("reel")
    (folder / "cues.srt").write_text(CUES)
    path = folder / "reel.mkv"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4,hue=s=0",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=4",
                    "-f", "lavfi", "-i", "sine=frequency=660:duration=4",
                    "-i", folder / "cues.srt",
                    "-f", "lavfi", "-i", "color=c=gray:size=160x120:rate=25:duration=4",
                    "-map", "0", "-map", "1", "-map", "2", "-map", "3", "-map", "4",
                    "-c:v", "libx264", "-c:a", "aac", "-c:s", "srt",
                    "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
                    "-metadata:s:s:0", "language=eng", "-disposition:s:0", "forced",
                    "-timecode", "01:00:00:00", path], check=True)
    return path


def streams(path: Path) -> list[tuple[str, str, str]]:
    """(type, codec, language) of every stream, in order."""
    with av.open(str(path)) as container:
        return [(s.type, s.codec_context.name if s.codec_context else "", s.metadata.get("language", ""))
                for s in container.streams]


def timecode(path: Path) -> str:
    with av.open(str(path)) as container:
        for tags in [*(s.metadata for s in container.streams), container.metadata]:
            for key, value in tags.items():
                if key.lower() == "timecode":
                    return value
    return ""


def cues(path: Path) -> list[tuple[float, str]]:
    """(start s on the video's clock, text) of every subtitle cue, as FFmpeg reads them back."""
    with av.open(str(path)) as container:
        start = float(container.streams.video[0].start_time * container.streams.video[0].time_base)
        stream = container.streams.subtitles[0]
        found = []
        for packet in container.demux(stream):
            if packet.size:
                for cue in stream.decode(packet):
                    text = getattr(cue, "dialogue", b"") or getattr(cue, "ass", b"")
                    found.append((round(float(packet.pts * packet.time_base) - start, 2),
                                  text.decode() if isinstance(text, bytes) else str(text)))
        return found


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_every_audio_and_subtitle_track_and_the_timecode_reach_an_mp4(reel, tmp_path):
    result = run_cli(reel, "-o", tmp_path / "out.mp4")
    assert result.returncode == 0, result.stderr
    assert streams(tmp_path / "out.mp4")[:4] == [("video", "h264", "und"), ("audio", "aac", "eng"),
                                                 ("audio", "aac", "fra"), ("subtitle", "mov_text", "eng")]
    assert timecode(tmp_path / "out.mp4") == "01:00:00:00"
    found = cues(tmp_path / "out.mp4")
    assert [start for start, _ in found] == [0.5, 2.0] and "Hello there" in found[0][1]
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.streams.subtitles[0].disposition & av.stream.Disposition.forced
    assert warnings(result.stderr) == ["warning: not carried into the output: video #4 (another video: "
                                       "colorize it with --stream 1)"]
    assert "audio copied, +1 audio, 1 subtitle" in result.stderr


def test_matroska_keeps_subrip_as_it_is(reel, tmp_path):
    result = run_cli(reel, "-o", tmp_path / "out.mkv", "-q")
    assert result.returncode == 0, result.stderr
    assert streams(tmp_path / "out.mkv")[:4] == [("video", "h264", ""), ("audio", "aac", "eng"),
                                                 ("audio", "aac", "fra"), ("subtitle", "srt", "eng")]
    assert timecode(tmp_path / "out.mkv") == "01:00:00:00"


def test_map_chooses_tracks_ffmpeg_style_and_the_rest_is_named_once(reel, tmp_path):
    result = run_cli(reel, "-o", tmp_path / "out.mp4", "--map", "0:a:1", "--map", "s:m:language:eng", "-q")
    assert result.returncode == 0, result.stderr
    assert streams(tmp_path / "out.mp4") == [("video", "h264", "und"), ("audio", "aac", "fra"),
                                             ("subtitle", "mov_text", "eng")]
    assert warnings(result.stderr) == ["warning: not carried into the output: audio #1 (eng) (not mapped); "
                                       "video #4 (not mapped); timecode 01:00:00:00 (not mapped)"]
    without_subtitles = run_cli(reel, "-o", tmp_path / "no_subs.mp4", "--map", "0:a", "--map", "d", "-q")
    assert without_subtitles.returncode == 0, without_subtitles.stderr
    assert [kind for kind, _, _ in streams(tmp_path / "no_subs.mp4")] == ["video", "audio", "audio", "data"]


@pytest.mark.parametrize("maps", [["--map", "-0:s"], ["--map=-0:s"], ["--map", "0", "--map", "-0:s"]])
def test_a_negative_map_removes_only_what_it_names(reel, tmp_path, maps):
    result = run_cli(reel, "-o", tmp_path / "out.mp4", *maps, "-q")
    assert result.returncode == 0, result.stderr
    assert [kind for kind, _, _ in streams(tmp_path / "out.mp4")] == ["video", "audio", "audio", "data"]
    assert timecode(tmp_path / "out.mp4") == "01:00:00:00"


def test_a_cue_on_screen_at_the_start_keeps_only_its_part_after_it(reel, tmp_path):
    result = run_cli(reel, "-o", tmp_path / "part.mkv", "--start", "1", "-q")
    assert result.returncode == 0, result.stderr
    with av.open(str(tmp_path / "part.mkv")) as container:
        stream = container.streams.subtitles[0]
        shown = [(round(float(p.pts * p.time_base), 2), round(float(p.duration * p.time_base), 2))
                 for p in container.demux(stream) if p.size]
    assert shown == [(0.0, 0.5), (1.0, 1.0)]  # 0.5–1.5 s and 2–3 s of the input, from 1 s on


def test_start_moves_subtitles_and_timecode_with_the_picture(reel, tmp_path):
    result = run_cli(reel, "-o", tmp_path / "part.mp4", "--start", "2", "-q")
    assert result.returncode == 0, result.stderr
    assert timecode(tmp_path / "part.mp4") == "01:00:02:00"
    found = cues(tmp_path / "part.mp4")
    assert [start for start, _ in found] == [0.0] and "Second line" in found[0][1]


@pytest.mark.parametrize("spec, message", [
    ("a:5", "error: --map a:5 matches no stream of {reel}"),
    ("0:v", "error: --map 0:v: the video colorized is chosen with --stream N"),
    ("audio", "error: --map audio: expected [-][0:]a|s|d[:N|:m:language:LANG] or [-][0:]INDEX"),
])
def test_a_bad_map_is_one_line_and_exit_code_2(reel, tmp_path, spec, message):
    result = run_cli(reel, "-o", tmp_path / "out.mp4", "--map", spec)
    assert (result.returncode, result.stderr.strip()) == (2, message.format(reel=reel))
    assert not (tmp_path / "out.mp4").exists()
