"""Frames cross real ZeroMQ sockets between real processes intact, and queues stay bounded."""
from __future__ import annotations

import multiprocessing

import numpy as np
import zmq

from stream.messages import FRAME, FrameHeader, Message, decode, encode, end_of_stream
from stream.transport import Link, make_endpoints, poll_timeout_ms


def echo_until_eos(inbound: str, outbound: str) -> None:
    """Child process: relay every message from ``inbound`` to ``outbound``, EOS included, then wait for
    one more message (the parent has everything) before closing."""
    context = zmq.Context()
    source = Link.receiver(context, inbound, 4)
    sink = Link.sender(context, [outbound], 4)
    while True:
        message = source.receive()
        sink.send(message)
        if message.is_eos:
            break
    source.receive()  # as stages wait for "stop": a PUSH socket closed with frames queued may lose them
    source.close()
    sink.close()
    context.term()


def frame(seq: int, rng) -> Message:
    header = FrameHeader(kind=FRAME, seq=seq, pts=seq * 512, time_base=(1, 12800), flags=1, rotation=90)
    return Message(header, {"frame": rng.integers(0, 256, (36, 64, 3), dtype=np.uint8),
                            "ab": rng.normal(size=(2, 14, 16)).astype(np.float32)})


def test_header_and_arrays_survive_the_multipart_framing():
    rng = np.random.default_rng(0)
    sent = frame(7, rng)
    parts = encode(sent)
    assert isinstance(parts[0], bytes) and len(parts) == 3
    got = decode([bytes(p) for p in parts])
    assert got.header == sent.header
    for name in sent.arrays:
        np.testing.assert_array_equal(got.arrays[name], sent.arrays[name])
        assert got.arrays[name].dtype == sent.arrays[name].dtype


def test_frames_cross_a_real_process_in_order_and_bit_exact(tmp_path):
    endpoints = make_endpoints("ipc", str(tmp_path), {"frames": 1, "tensors": 1, "colour": 1})
    to_child, from_child = endpoints.links["frames"][0], endpoints.links["colour"][0]
    context = zmq.Context()
    results = Link.receiver(context, from_child, 4)
    child = multiprocessing.get_context("spawn").Process(target=echo_until_eos, args=(to_child, from_child),
                                                         daemon=True)
    child.start()
    try:
        out = Link.sender(context, [to_child], 4)
        rng = np.random.default_rng(1)
        sent = [frame(i, rng) for i in range(30)]
        received = []
        for message in sent + [end_of_stream(len(sent))]:
            while not out.socket.poll(10, zmq.POLLOUT):  # never block on a send while the echo waits on us
                while results.socket.poll(0):
                    received.append(results.receive())
            out.send(message)
        while not received or not received[-1].is_eos:
            assert results.socket.poll(60_000), f"echo process stopped answering (exit code {child.exitcode})"
            received.append(results.receive())
        out.send(end_of_stream(len(sent)))  # everything arrived: the echo may close
        child.join(30)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    assert [m.header.seq for m in received] == list(range(30)) + [30]
    assert received[-1].is_eos
    for a, b in zip(sent, received):
        np.testing.assert_array_equal(a.arrays["frame"], b.arrays["frame"])
        np.testing.assert_array_equal(a.arrays["ab"], b.arrays["ab"])
    out.close()
    results.close()
    context.term()


def test_a_full_queue_blocks_the_sender_instead_of_growing(tmp_path):
    endpoints = make_endpoints("ipc", str(tmp_path), {"frames": 1, "tensors": 1, "colour": 1})
    context = zmq.Context()
    receiver = Link.receiver(context, endpoints.links["frames"][0], 2)
    sender = Link.sender(context, endpoints.links["frames"], 2)
    rng = np.random.default_rng(2)
    accepted = 0
    for i in range(50):
        try:
            sender.socket.send_multipart(encode(frame(i, rng)), flags=zmq.NOBLOCK, copy=False)
            accepted += 1
        except zmq.Again:
            break
    assert 2 <= accepted < 20
    sender.socket.close(linger=0)
    receiver.close()
    context.term()


def test_tcp_endpoints_are_loopback_and_distinct(tmp_path):
    endpoints = make_endpoints("tcp", str(tmp_path), {"frames": 2, "tensors": 1, "colour": 1})
    frame_links = [e for link in endpoints.links.values() for e in link]
    assert all(e.startswith("tcp://127.0.0.1:") for e in frame_links)
    assert len(set(frame_links)) == len(frame_links) == 4


def test_poll_waits_shorter_than_a_millisecond_round_up_instead_of_spinning():
    assert poll_timeout_ms(0.0004) == 1
    assert poll_timeout_ms(0.0101) == 11
    assert poll_timeout_ms(0.0) == 0
    assert poll_timeout_ms(-0.5) == 0


def test_with_tcp_transport_control_commands_and_local_leases_stay_in_the_private_run_folder(tmp_path):
    """Only the frame links use loopback ports: any local process could reach a port and end the run
    with a forged 'done', or join a broker as a worker; the run folder is the user's alone (0700)."""
    from stream.transport import make_endpoints

    endpoints = make_endpoints("tcp", str(tmp_path), {"frames": 1, "tensors": 2, "colour": 1},
                               leased={"inference": "tensors"})
    private = f"ipc://{tmp_path}/"
    assert endpoints.control.startswith(private) and endpoints.commands.startswith(private)
    assert endpoints.leases["inference"].startswith(private)
    assert all(address.startswith("tcp://127.0.0.1:") for addresses in endpoints.links.values()
               for address in addresses)
