"""Side links of a live run, beside the frame links (ZeroMQ PUSH → PULL, one host):

    decoder --audio-->   encoder   decoded audio (float planar) stamped on the output clock
    encoder --acks-->    decoder   the seq of each frame written, for the decoder's in-flight window
    encoder --preview--> CLI       JPEG bytes of colorized frames for the ``--preview`` page

Why a side link for audio: a live source cannot be opened a second time by the encoder (that would be
a second connection with its own timing), so the decoder, which demuxes the source anyway, decodes
the first audio track and forwards the samples; the encoder encodes them to AAC (every live output
takes AAC) and interleaves them with the video on the same output clock.

Endpoints are Linux abstract-namespace sockets ``ipc://@colorize-<channel>-<link>``: nothing on disk
to clean up, private to this host. ``channel`` is made once per run by :func:`new_channel`.
"""
from __future__ import annotations

import os
import uuid

import numpy as np
import zmq

from stream.messages import FrameHeader, Message, decode, encode

AUDIO_FORMAT = "audio_format"
AUDIO = "audio"
AUDIO_END = "audio_end"
AUDIO_HWM = 2000
PREVIEW_HWM = 2


def new_channel() -> str:
    """A name no other run on this host uses."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def side_endpoint(channel: str, link: str) -> str:
    return f"ipc://@colorize-{channel}-{link}"


def push_socket(context: zmq.Context, endpoint: str, hwm: int, bind: bool = False) -> zmq.Socket:
    sock = context.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.LINGER, 500)
    sock.bind(endpoint) if bind else sock.connect(endpoint)
    return sock


def pull_socket(context: zmq.Context, endpoint: str, hwm: int, bind: bool = True) -> zmq.Socket:
    sock = context.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint) if bind else sock.connect(endpoint)
    return sock


def send_nowait(sock: zmq.Socket, message: Message) -> bool:
    """Send unless the link is full; False means the message was not sent."""
    try:
        sock.send_multipart(encode(message), flags=zmq.NOBLOCK, copy=False)
        return True
    except zmq.Again:
        return False


def receive_nowait(sock: zmq.Socket) -> Message | None:
    try:
        return decode(sock.recv_multipart(flags=zmq.NOBLOCK, copy=False))
    except zmq.Again:
        return None


def audio_format_message(sample_rate: int, channels: int) -> Message:
    """Sent once before any audio: the rate and channel count of what follows (channels 0: no audio)."""
    return Message(FrameHeader(kind=AUDIO_FORMAT, seq=channels, time_base=(1, max(1, sample_rate))))


def audio_message(samples: np.ndarray, start_sample: int, sample_rate: int) -> Message:
    """``samples``: float32 channels × n; ``start_sample``: its position on the output clock (samples)."""
    return Message(FrameHeader(kind=AUDIO, seq=0, pts=start_sample, time_base=(1, sample_rate)),
                   {"samples": samples})


def audio_end_message() -> Message:
    return Message(FrameHeader(kind=AUDIO_END, seq=0))
