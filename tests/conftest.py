"""Shared fixtures: the shared data folder, small ONNX models built here, and running the real CLI."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (read ../shared/data/README.md)")
    return path


def save_colour_model(path: Path, name: str, nodes: list, initialisers: list, *, size: int = 224,
                      output: str = "ab", channels: int = 2, input_name: str = "l_minus_50",
                      opset: int = 17) -> Path:
    """Check and save a test model with the runtime's contract: float ``input_name`` N×1×size×size
    (L − 50) → ``output`` N×channels×size/4×size/4 (``channels`` 2 for ab, 313 for bin scores);
    ``nodes`` and ``initialisers`` are onnx.helper nodes and tensors."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 1, size, size])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", channels, size // 4, size // 4])],
        initialisers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_ab_model(path: Path, weights=(0.3, -0.2), bias=(20.0, 35.0), size=224) -> Path:
    """A tiny model with the pipeline's contract: l_minus_50 N×1×size×size → ab N×2×size/4×size/4.

    ab = 4×4 average of (L − 50) × weight + bias, per channel: colour that depends on lightness.
    """
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.array(weights, np.float32).reshape(2, 1, 1, 1), "w")
    b = numpy_helper.from_array(np.array(bias, np.float32), "b")
    return save_colour_model(
        path, "tiny_ab",
        [helper.make_node("AveragePool", ["l_minus_50"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
         helper.make_node("Conv", ["pooled", "w", "b"], ["ab"])], [w, b], size=size)


def build_bins_model(path: Path, size=224) -> Path:
    """A tiny model that outputs 313 bin scores N×313×size/4×size/4 (favouring bins by lightness)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.05, (313, 1, 1, 1)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 1.0, 313).astype(np.float32), "b")
    return save_colour_model(
        path, "tiny_bins",
        [helper.make_node("AveragePool", ["l_minus_50"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
         helper.make_node("Conv", ["pooled", "w", "b"], ["scores"])], [w, b],
        size=size, output="scores", channels=313)


@pytest.fixture
def run_tmp(tmp_path) -> Path:
    """An empty TMPDIR for a run, to show it leaves nothing behind there."""
    path = tmp_path / "run-tmp"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def ab_model(tmp_path_factory) -> Path:
    return build_ab_model(tmp_path_factory.mktemp("models") / "tiny_ab.onnx")


@pytest.fixture(scope="session")
def bins_model(tmp_path_factory) -> Path:
    return build_bins_model(tmp_path_factory.mktemp("models") / "tiny_bins.onnx")


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def last_error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def cli_env(tmpdir: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env


def run_cli(*args: str, timeout: float = 300, tmpdir: Path | None = None,
            env_extra: dict[str, str] | None = None) -> CliResult:
    """Run ``colorize ARGS`` as a real process (python -m stream.cli), capturing its output;
    ``env_extra``: environment variables to set for it."""
    done = subprocess.run([sys.executable, "-m", "stream.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env={**cli_env(tmpdir), **(env_extra or {})},
                          stdin=subprocess.DEVNULL)
    return CliResult(done.returncode, done.stdout, done.stderr)


@dataclass
class VideoFacts:
    """What a user sees of a video file."""

    frames: int
    codec: str
    pix_fmt: str
    width: int
    height: int
    pts: list[int]
    time_base: float
    duration_s: float
    audio_codecs: list[str]
    mean_chroma: float


def video_facts(path: Path) -> VideoFacts:
    """Decode every frame with PyAV; mean_chroma is the mean |ab| (Lab units) of every 10th frame."""
    import av
    import cv2

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts, chroma = [], []
        for i, frame in enumerate(container.decode(stream)):
            pts.append(frame.pts)
            if i % 10 == 0:
                rgb = frame.to_ndarray(format="rgb24").astype(np.float32) / 255
                lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
                chroma.append(float(np.hypot(lab[..., 1], lab[..., 2]).mean()))
        tb = float(stream.time_base)
        step = (pts[-1] - pts[0]) / max(1, len(pts) - 1) if len(pts) > 1 else 0
        return VideoFacts(frames=len(pts), codec=stream.codec_context.name, pix_fmt=stream.codec_context.pix_fmt,
                          width=stream.codec_context.width, height=stream.codec_context.height, pts=pts,
                          time_base=tb, duration_s=(pts[-1] - pts[0] + step) * tb if pts else 0.0,
                          audio_codecs=[a.codec_context.codec.canonical_name for a in container.streams.audio],
                          mean_chroma=float(np.mean(chroma)) if chroma else 0.0)


class BackgroundCli:
    """``colorize ARGS`` running in the background; its stderr lines are collected as they come,
    so a test can wait for a line, signal the process and then collect its exit code. Whatever
    is still running when its test ends is killed (``stop_background_clis``), failed test or not."""

    started: list["BackgroundCli"] = []

    def __init__(self, *args, tmpdir: Path | None = None, own_group: bool = False):
        """``own_group``: in a process group of its own, as a shell job is, for signals sent to all of it."""
        self.process = subprocess.Popen([sys.executable, "-m", "stream.cli", *map(str, args)], cwd=REPO,
                                        env=cli_env(tmpdir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, stdin=subprocess.DEVNULL, start_new_session=own_group)
        BackgroundCli.started.append(self)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        """The first stderr line matching ``pattern``; fails once the process has ended without one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.process.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; stderr so far: {self.lines}")

    def finish(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout)
        self.reader.join(5)
        return code

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(autouse=True)
def stop_background_clis():
    """A test that fails half-way must not leave its pipelines and workers running (a pipeline with
    no local replica would wait for workers forever)."""
    yield
    while BackgroundCli.started:
        BackgroundCli.started.pop().kill()


@pytest.fixture(scope="session", autouse=True)
def pipeline_keys(tmp_path_factory) -> Path:
    """The CURVE keys folder every colorize process of the test session uses (created on first use),
    instead of the user's own ~/.config/colorize/keys."""
    folder = tmp_path_factory.mktemp("keys")
    os.environ["COLORIZE_KEYS"] = str(folder)
    return folder
