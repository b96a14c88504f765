"""Pack the training and validation photos small enough to travel to the device machine.

    python -m models.device_carry runs/pack ../shared/data/val/cbsd68 carry     # then: models/device_train.sh

The device machine receives a copy of the repository (at most 64 MiB in all, the repository itself
included) and not ``../shared``; a decoded pack (1.6 GB) cannot travel, so each packed photo is
re-encoded as a ``--side``-pixel WebP (lossy, ``--quality``) in ``OUT/train/`` and each validation
photo as a WebP at its own size in ``OUT/val/`` (quality 90). There ``python -m
models.training_pack OUT/train runs/pack --side S`` rebuilds the pack. The validation copies are
lossy, so their figures only rank checkpoints; report figures measured here on the originals.

Prints the carry's size and the repository's; exits 1 with one line when together they exceed
the device's 64 MiB, so a smaller ``--side`` or ``--quality`` can be chosen before any device time
is spent. ``OUT`` must be ignored by git (``/carry/`` is) and named in the device call's ``carry``.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from models.training_pack import PHOTO_SUFFIXES, load_pack

DEVICE_TREE_LIMIT = 64 * 2 ** 20
VAL_QUALITY = 90


def write_carry(pack_dir: Path, val_dir: Path, out_dir: Path, side: int, quality: int) -> int:
    """Write ``out_dir/train/*.webp`` (the pack at side×side) and ``out_dir/val/*.webp``; returns
    the bytes written. Raises SystemExit with one line when the pack or the validation folder is missing."""
    if not (pack_dir / "photos.npy").is_file():
        raise SystemExit(f"error: no decoded pack at {pack_dir} (build it with python -m models.training_pack)")
    val_paths = sorted(p for p in val_dir.glob("*") if p.suffix.lower() in PHOTO_SUFFIXES) if val_dir.is_dir() else []
    if not val_paths:
        raise SystemExit(f"error: no validation photos in {val_dir}")
    photos = load_pack(pack_dir)
    total = 0
    for folder in ("train", "val"):
        shutil.rmtree(out_dir / folder, ignore_errors=True)  # nothing from an earlier carry may travel
        (out_dir / folder).mkdir(parents=True)
    for i in range(len(photos)):
        square = cv2.resize(np.asarray(photos[i]), (side, side), interpolation=cv2.INTER_AREA)
        total += _write_webp(out_dir / "train" / f"{i:05d}.webp", cv2.cvtColor(square, cv2.COLOR_RGB2BGR), quality)
    for path in val_paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is not None:  # unreadable files are skipped, as validation skips them
            total += _write_webp(out_dir / "val" / f"{path.stem}.webp", bgr, VAL_QUALITY)
    return total


def _write_webp(path: Path, bgr: np.ndarray, quality: int) -> int:
    ok, data = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:
        raise SystemExit(f"error: OpenCV could not encode {path.name} as WebP")
    path.write_bytes(data.tobytes())
    return len(data)


def repository_bytes(repo: Path) -> int:
    """Bytes of the files git tracks or would add (what every device call sends)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, check=True).stdout.split(b"\0")
    return sum((repo / name.decode()).stat().st_size for name in listed if name and (repo / name.decode()).is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pack", type=Path, help="decoded training pack (models.training_pack)")
    ap.add_argument("val", type=Path, help="validation photos")
    ap.add_argument("out", type=Path, help="folder to write, inside the repository and ignored by git")
    ap.add_argument("--side", type=int, default=176, help="side of the training squares in pixels (default 176)")
    ap.add_argument("--quality", type=int, default=75, help="WebP quality of the training squares, 1-100 (default 75)")
    args = ap.parse_args(argv)
    carried = write_carry(args.pack, args.val, args.out, args.side, args.quality)
    repo = Path(__file__).resolve().parents[1]
    tracked = repository_bytes(repo)
    print(f"{args.out}: {carried / 2 ** 20:.1f} MiB; repository {tracked / 2 ** 20:.1f} MiB; "
          f"device limit {DEVICE_TREE_LIMIT / 2 ** 20:.0f} MiB")
    if carried + tracked > DEVICE_TREE_LIMIT:
        print(f"error: {args.out} and the repository exceed the device's {DEVICE_TREE_LIMIT // 2 ** 20} MiB; "
              "choose a smaller --side or --quality", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
