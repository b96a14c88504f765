"""The training set decoded once into one memory-mapped array, so training never decodes a JPEG.

    python -m models.training_pack ../shared/data/train runs/pack --side 256
    python -m models.training_pack ../shared/data/train ../extra_photos runs/pack_plus   # several folders

Writes ``OUT/photos.npy``: uint8 N×S×S×3 RGB, each photo's centred square (the shorter side)
resized to S×S (area interpolation when shrinking, cubic when enlarging), in sorted path order, folder by folder;
and ``OUT/manifest.json``: the source folders, S, and each photo's path (relative to its folder, or
to that folder's parent when there are several). 7,969 photos at
S = 256 take 1.6 GB; at S = 192 (the size to carry to another machine) 0.9 GB before compression.
Files that OpenCV cannot read are skipped and listed in the manifest.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def square_photo(bgr: np.ndarray, side: int) -> np.ndarray:
    """BGR uint8 H×W×3 → RGB uint8 side×side×3: the centred square of the shorter side, resized."""
    h, w = bgr.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = bgr[top:top + s, left:left + s]
    interpolation = cv2.INTER_AREA if s >= side else cv2.INTER_CUBIC
    return cv2.cvtColor(cv2.resize(crop, (side, side), interpolation=interpolation), cv2.COLOR_BGR2RGB)


def build_pack(sources: Path | list[Path], out_dir: Path, side: int) -> Path:
    """Decode every photo under ``sources`` (one folder or several) into ``out_dir/photos.npy``;
    returns that path.

    Raises SystemExit with one line when the folders hold no readable photo.
    """
    folders = [sources] if isinstance(sources, Path) else list(sources)
    paths, names = [], []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES):
            paths.append(path)
            names.append(str(path.relative_to(folder if len(folders) == 1 else folder.parent)))
    out_dir.mkdir(parents=True, exist_ok=True)
    photos = np.lib.format.open_memmap(out_dir / "photos.tmp.npy", mode="w+", dtype=np.uint8,
                                       shape=(len(paths), side, side, 3))
    kept, skipped = [], []
    for path, name in zip(paths, names):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            skipped.append(name)
            continue
        photos[len(kept)] = square_photo(bgr, side)
        kept.append(name)
    if not kept:
        raise SystemExit(f"error: no readable photos (*.jpg, *.png, *.webp) under {', '.join(map(str, folders))}")
    photos.flush()
    del photos
    final = out_dir / "photos.npy"
    if len(kept) == len(paths):
        (out_dir / "photos.tmp.npy").replace(final)
    else:
        whole = np.load(out_dir / "photos.tmp.npy", mmap_mode="r")
        np.save(final, whole[:len(kept)])
        (out_dir / "photos.tmp.npy").unlink()
    manifest = {"sources": [str(f) for f in folders], "side": side, "count": len(kept), "photos": kept, "skipped": skipped}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return final


def load_pack(pack_dir: Path) -> np.ndarray:
    """The packed photos (uint8 N×S×S×3, memory-mapped read-only)."""
    return np.load(Path(pack_dir) / "photos.npy", mmap_mode="r")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", type=Path, nargs="+", help="folders of colour photos, searched recursively")
    ap.add_argument("out", type=Path, help="folder to write photos.npy and manifest.json into")
    ap.add_argument("--side", type=int, default=256, help="side of the stored squares in pixels (default 256)")
    args = ap.parse_args(argv)
    path = build_pack(args.sources, args.out, args.side)
    print(f"{path}: {np.load(path, mmap_mode='r').shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
