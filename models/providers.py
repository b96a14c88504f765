"""Which inference providers can run here: ``colorize devices``.

    colorize devices [--json]

For each provider the pipeline knows (``models.runtime.PROVIDERS``: cpu, cuda, npu, openvino) the check
is real, not a guess from installed packages: the installed onnxruntime must offer the execution
provider, and a tiny one-convolution session must then open on it and run. A provider failing either
step is reported unavailable with the reason in one line (the pip extra to install, or onnxruntime's own
first error line when the device or driver is missing). Nothing falls back to another provider.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass

import numpy as np

from models.runtime import PROVIDERS, import_onnxruntime

RUNTIME_PACKAGES = {"cpu": "onnxruntime", "cuda": "onnxruntime-gpu", "npu": "onnxruntime-cann",
                    "openvino": "onnxruntime-openvino"}
"""The onnxruntime build each provider needs. All of them install the same module, ``onnxruntime``,
so exactly one may be installed: two side by side overwrite each other's files."""


def install_command(package: str) -> str:
    """The commands that leave ``package`` as the only onnxruntime build installed."""
    others = " ".join(sorted(set(RUNTIME_PACKAGES.values()) - {package}))
    return f"pip uninstall -y {others}; pip install {package}"


PIP_EXTRAS = {name: install_command(package) for name, package in RUNTIME_PACKAGES.items()}


def installed_runtimes() -> list[str]:
    """The onnxruntime builds (distribution names, sorted) installed in this environment."""
    from importlib import metadata

    found = set()
    for package in RUNTIME_PACKAGES.values():
        try:
            metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
        found.add(package)
    return sorted(found)


def runtime_conflict(installed: list[str]) -> str | None:
    """One line when more than one onnxruntime build is installed (they overwrite one module), else None."""
    if len(installed) < 2:
        return None
    return (f"{' and '.join(installed)} are installed side by side; they share the module 'onnxruntime', so "
            f"whichever was installed last is what runs. Keep one: e.g. {install_command(installed[-1])}")


@dataclass(frozen=True)
class DeviceInfo:
    """One provider: our name, onnxruntime's name, whether a session runs on it, and one line saying
    what it runs on (available) or why it cannot run (unavailable)."""

    name: str
    ort_provider: str
    available: bool
    detail: str


def _first_line(text: str, limit: int = 200) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def _probe_model_bytes() -> bytes:
    """A one-Conv float model (1×1×8×8 → 1×1×8×8), serialised; every provider can run a Conv."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((1, 1, 3, 3), 1.0 / 9.0, np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "weight"], ["y"], pads=[1, 1, 1, 1])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _cpu_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            text = cpuinfo.read()
        names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
        model = names[0] if names else model
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
        if "avx512_vnni" in flags:
            model += ", AVX-512 VNNI"
        elif "avx_vnni" in flags:
            model += ", AVX-VNNI"
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores"


def probe_provider(name: str, device_id: int = 0) -> DeviceInfo:
    """Check one of our providers (a key of PROVIDERS) by opening and running a tiny session on it."""
    ort_name, needs = PROVIDERS[name]
    try:
        ort = import_onnxruntime()
    except ImportError:
        return DeviceInfo(name, ort_name, False, f"onnxruntime is not installed: {PIP_EXTRAS[name]}")
    offered = ort.get_available_providers()
    if ort_name not in offered:
        return DeviceInfo(name, ort_name, False,
                          f"package missing: onnxruntime {ort.__version__} here has no {ort_name}; "
                          f"{PIP_EXTRAS[name]}")
    options = ort.SessionOptions()
    options.log_severity_level = 4
    provider_options = {"device_id": device_id} if name in ("cuda", "npu") else {}
    printed = io.StringIO()
    try:
        # enable_fallback=0: onnxruntime would otherwise retry on CPU and only print the error
        with contextlib.redirect_stdout(printed):
            session = ort.InferenceSession(_probe_model_bytes(), options, providers=[(ort_name, provider_options)],
                                           enable_fallback=0)
            session.run(None, {"x": np.ones((1, 1, 8, 8), np.float32)})
    except Exception as exc:
        reason = _first_line(exc) or type(exc).__name__
        return DeviceInfo(name, ort_name, False, f"{ort_name} is installed but no session opens on it: {reason}")
    if ort_name not in session.get_providers():
        reason = _first_line(printed.getvalue()) or f"onnxruntime dropped it (needs {needs})"
        return DeviceInfo(name, ort_name, False, f"{ort_name} is installed but did not initialise: {reason}")
    where = _cpu_description() if name == "cpu" else f"device {device_id}"
    return DeviceInfo(name, ort_name, True, f"{where} (onnxruntime {ort.__version__})")


def available_devices() -> list[DeviceInfo]:
    """Every provider in PROVIDERS order (cpu, cuda, npu, openvino), each probed for real."""
    return [probe_provider(name) for name in PROVIDERS]


def format_table(devices: list[DeviceInfo]) -> str:
    """A fixed-width table: provider, onnxruntime provider, status, detail."""
    rows = [("provider", "onnxruntime provider", "status", "detail")]
    rows += [(d.name, d.ort_provider, "available" if d.available else "unavailable", d.detail) for d in devices]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colorize devices",
        description="List the inference providers (cpu, cuda, npu, openvino) and whether a session runs on each here.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry: prints the table (or JSON); returns 0 (an unavailable provider is information, not an error)."""
    args = build_parser().parse_args(argv)
    devices = available_devices()
    conflict = runtime_conflict(installed_runtimes())
    if args.json:
        print(json.dumps({"devices": [asdict(d) for d in devices], "runtime_conflict": conflict}, indent=2))
    else:
        print(format_table(devices))
        if conflict:
            print(f"warning: {conflict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
