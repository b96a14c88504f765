"""Inference stage: batches of L − 50 inputs → ab predictions with onnxruntime.

Frames are collected up to ``batch_size`` or until ``batch_timeout_ms`` after the first one of a
batch arrived, whichever comes first, so live latency stays bounded. Models that output 313 bin
scores are decoded to ab here (annealed mean), so downstream only ever sees ab (float32 2×h×w,
a few KB per frame instead of the 313-channel distribution). Frames without a model input (sparse
inference, ``inference.every_nth_frame``) pass through without ab.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

import numpy as np

from models.runtime import ColorModel, SessionSettings
from stream.messages import Message
from stream.stage import Stage


class Inference(Stage):
    name = "inference"
    input_link = "tensors"
    output_link = "colour"
    reads = ("l_input",)
    consumes = ("l_input",)

    def open(self) -> None:
        cfg = self.config.inference
        self.model = ColorModel(Path(self.job.model), SessionSettings(
            provider=cfg.provider, intra_op_threads=cfg.intra_op_threads,
            inter_op_threads=cfg.inter_op_threads, device_id=cfg.device_id))
        self.pending: list[Message] = []
        self.batch_due: float | None = None
        self.batches = 0

    def handle(self, message: Message) -> Iterable[Message]:
        if "l_input" not in message.arrays:  # a frame the model skips (sparse inference): on to the encoder
            return (message,)
        self.pending.append(message)
        if len(self.pending) == 1:
            self.batch_due = time.monotonic() + self.config.inference.batch_timeout_ms / 1000.0
        if len(self.pending) >= self.config.inference.batch_size:
            return self.flush()
        return ()

    def deadline(self) -> float | None:
        return self.batch_due if self.pending else None

    def flush(self) -> Iterable[Message]:
        if not self.pending:
            return ()
        batch, self.pending, self.batch_due = self.pending, [], None
        inputs = np.stack([m.arrays["l_input"] for m in batch])
        ab = self.model.predict_ab(inputs)
        self.batches += 1
        for message, frame_ab in zip(batch, ab):
            del message.arrays["l_input"]
            message.arrays["ab"] = frame_ab
        return batch

    def stats(self) -> dict:
        return {"batches": getattr(self, "batches", 0)}


STAGE = Inference
