"""Rebuild the extra training photos (skies, sea, mountains) listed in ``models/extra_photos.tsv``.

    git clone https://github.com/gabiroz/landscape-recognition-modell CLONES/landscape-recognition-modell
    git clone https://github.com/GiovTemp/ml-landscape-weather-classification CLONES/ml-landscape-weather-classification
    python -m models.extra_photos CLONES ../extra_photos
    python -m models.training_pack ../shared/data/train ../extra_photos runs/pack_plus

Validation showed the shared training set thin on skies and water (cloudy skies painted green,
MODEL_CARD.md), so 1,547 photos were added from two public sets: the Intel Image Classification
set (classes sea, mountain, glacier; 150×150) and the Multi-class Weather Dataset (Ajayi 2018;
classes cloudy and shine). Each row of the list names the file's repository, commit and path; the
selection dropped files under 100 px on the shorter side, near-grey files (mean Lab chroma < 5),
duplicates, and the weather set's sunrise class (heavily processed wallpapers). Research use only:
neither set states an open licence for every image, so the photos are never committed.

Each listed file is read from ``CLONES/<repository name>/<path>``, shrunk to a longer side of at
most 320 px (area interpolation) and written as JPEG (quality 90) to ``OUT/<folder>/<name>``.
Exits 1 with one line naming the first file that is missing or unreadable.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2

LIST_PATH = Path(__file__).with_name("extra_photos.tsv")
LONGER_SIDE = 320


def rebuild(clones: Path, out: Path, listing: Path = LIST_PATH) -> int:
    """Write every photo of ``listing`` under ``out``; returns how many were written.

    Raises SystemExit(1) with one line when a listed file is missing or OpenCV cannot read it.
    """
    with listing.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for row in rows:
        source = clones / row["repository"].split("/")[1] / row["path"]
        bgr = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"error: cannot read {source} (clone {row['repository']} at {row['commit'][:12]})")
        h, w = bgr.shape[:2]
        scale = LONGER_SIDE / max(h, w)
        if scale < 1:
            bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        target = out / row["folder/name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.extra_photos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clones", type=Path, help="folder holding a clone of each listed repository")
    ap.add_argument("out", type=Path, help="folder to write the photos into")
    args = ap.parse_args(argv)
    print(f"{rebuild(args.clones, args.out)} photos written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
