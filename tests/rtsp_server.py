#!/usr/bin/python3
"""A real RTSP server for the live tests and the live benchmark: GStreamer's GstRtspServer.

Run with Debian's system python3 (it needs python3-gi and gir1.2-gst-rtsp-server-1.0):

    /usr/bin/python3 tests/rtsp_server.py --file chaplin.mp4 --audio mp3 [--port 0] [--path /live]
                                          [--loop] [--stamps FILE] [--record /in]

Serves an MP4 on rtsp://127.0.0.1:PORT/PATH over TCP and UDP: ``qtdemux ! h264parse ! rtph264pay``
for the video and ``mpegaudioparse ! rtpmpapay`` (``--audio mp3``) or ``aacparse ! rtpmp4apay``
(``--audio aac``) for the first audio track. Every client gets its own playback from the start, paced
in real time. ``--loop`` plays the file again and again (an endless live source).

``--stamps FILE``: the video is paced by an ``identity sync=true`` before the payloader, and one line
``<pts ns> <wall-clock s>`` is appended to FILE for every video frame: when it leaves for the network.

``--record /in``: also accept a stream pushed by a client (RTSP RECORD, H.264 over TCP or UDP) at
that path; it is written to ``--record-file`` (Matroska) as it arrives.

On start it prints ``ready PORT`` on stdout (flushed); SIGTERM or SIGINT stop it.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

AUDIO_BRANCHES = {
    "mp3": "d.audio_0 ! queue ! mpegaudioparse ! rtpmpapay name=pay1 pt=97",
    "aac": "d.audio_0 ! queue ! aacparse ! rtpmp4apay name=pay1 pt=97",
    "none": "",
}


def launch_line(path: str, audio: str, stamped: bool, loop: bool) -> str:
    source = f'filesrc location="{path}" ! qtdemux name=d'
    if loop:
        source = f'multifilesrc location="{path}" loop=true ! qtdemux name=d'
    pace = "identity name=stamp sync=true ! " if stamped else ""
    video = f"d.video_0 ! queue ! h264parse ! {pace}rtph264pay name=pay0 pt=96 config-interval=-1"
    return f"( {source} {video} {AUDIO_BRANCHES[audio]} )"


class StampingFactory(GstRtspServer.RTSPMediaFactory):
    """Logs each video frame's pts and the wall-clock time its packets leave the server.

    ``identity sync=true`` releases a frame at its running time; the network sinks after it send at
    that running time plus the pipeline's latency (or at once, for a frame already late): the
    departure logged is the later of the two. Both synchronise on the decoding timestamp (DTS).
    """

    def __init__(self, stamps_path: str | None):
        super().__init__()
        self.stamps_path = stamps_path

    def do_configure(self, media):
        if not self.stamps_path:
            return
        stamp = media.get_element().get_by_name("stamp")
        log = open(self.stamps_path, "a", buffering=1)

        def probe(pad, info):
            buffer = info.get_buffer()
            now = time.time()
            pipeline = stamp
            while pipeline.get_parent() is not None:
                pipeline = pipeline.get_parent()
            clock = pipeline.get_clock()
            segment = pad.get_sticky_event(Gst.EventType.SEGMENT, 0).parse_segment()
            if clock is not None:
                sync_time = buffer.dts if buffer.dts != Gst.CLOCK_TIME_NONE else buffer.pts  # as GstBaseSink does
                due = pipeline.get_base_time() + segment.to_running_time(Gst.Format.TIME, sync_time) + sink_latency(pipeline)
                now += max(0, due - clock.get_time()) / 1e9
            log.write(f"{buffer.pts} {now:.6f}\n")
            return Gst.PadProbeReturn.OK

        stamp.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)


def sink_latency(pipeline) -> int:
    """The latency (ns) the pipeline's synchronised sinks add to each buffer's running time."""
    latency = 0
    sinks = pipeline.iterate_sinks()
    while True:
        result, sink = sinks.next()
        if result != Gst.IteratorResult.OK:
            return latency
        if sink.get_property("sync"):
            latency = max(latency, sink.get_latency())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True)
    parser.add_argument("--audio", choices=sorted(AUDIO_BRANCHES), default="none")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--path", default="/live")
    parser.add_argument("--loop", action="store_true")
    parser.add_argument("--stamps")
    parser.add_argument("--record", help="mount path that accepts RECORD (a pushed stream)")
    parser.add_argument("--record-file", help="where the pushed stream is written (Matroska)")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()

    factory = StampingFactory(args.stamps)
    factory.set_launch(launch_line(args.file, args.audio, bool(args.stamps), args.loop))
    factory.set_shared(False)
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
    mounts.add_factory(args.path, factory)

    if args.record:
        recorder = GstRtspServer.RTSPMediaFactory()
        recorder.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
        recorder.set_launch('( decodebin name=depay0 ! fakesink )' if not args.record_file else
                            f'( rtph264depay name=depay0 ! h264parse ! matroskamux streamable=true '
                            f'! filesink location="{args.record_file}" )')
        recorder.set_latency(0)
        mounts.add_factory(args.record, recorder)

    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
