"""How many frames may wait on a link, given the frames' size and the link's memory budget.

A link holds up to its high-water mark on each side (the producer's send queue and the
consumer's receive queue), so ``depth`` frames per side is about ``2 × depth × frame_bytes`` of
memory. The depth a stage is configured with is lowered until that fits ``queue_memory_mb``,
never below one frame per side: an 8K RGB frame is 100 MB, and eight of them on each side of
three links would be almost 5 GB.
"""
from __future__ import annotations

MB = 1 << 20


def rgb_frame_bytes(width: int, height: int) -> int:
    """Bytes of one RGB24 frame as it travels between the stages (0 if the size is unknown)."""
    return max(0, width) * max(0, height) * 3


def link_depth(queue_depth: int, frame_bytes: int, queue_memory_mb: int) -> int:
    """The high-water mark for one side of a link: ``queue_depth``, lowered so that both sides'
    frames fit in ``queue_memory_mb``; at least 1. ``frame_bytes`` 0 (unknown) keeps ``queue_depth``."""
    if frame_bytes <= 0:
        return queue_depth
    fitting = (queue_memory_mb * MB) // (2 * frame_bytes)
    return max(1, min(queue_depth, fitting))


def queue_depth(config, link: str, frame_bytes: int = 0) -> int:
    """The high-water mark of ``link`` ('frames', 'tensors', 'colour') under ``config`` (a
    :class:`stream.config.PipelineConfig`): its consumer's ``queue_depth`` through :func:`link_depth`."""
    consumer = {"frames": config.preprocessor, "tensors": config.inference, "colour": config.encoder}[link]
    return link_depth(consumer.queue_depth, frame_bytes, config.queue_memory_mb)
