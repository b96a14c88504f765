"""Regenerate the before/after gallery in docs/gallery/ from the shared validation photos and film.

    python docs/make_gallery.py [--model models/default.onnx]

Writes two JPEG contact sheets (each well under 200 KB):
  * ``cbsd68.jpg``: six CBSD68 validation photos, evenly spaced in name order (not picked by
    result), as lightness only | colorized | the original colour;
  * ``chaplin.jpg``: four frames of the black-and-white film chaplin.mp4, evenly spaced, as the
    film | colorized.
Stills go through the same colour math as ``colorize photo.png -o out.png`` (no temporal smoothing).
Also prints how red the model paints the film (every frame, the model's 56×56 ab): the mean a* and
the share of pixels above a* 15 and a* 10. The film's lawns and suits are dark grey; the quality
issue rules out painting them red, and a model that does shows here as a share of several percent
(the shipped model: 0.0 % above a* 15, 0.2 % above a* 10).
Exits 2 with one line when the shared data is absent.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import DEFAULT_MODEL_PATH  # noqa: E402
from models.evaluate import contact_sheet, read_rgb, thumbnail  # noqa: E402
from models.runtime import ColorModel  # noqa: E402
from stages.lab import merge_ab, model_input  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
GALLERY = REPO / "docs" / "gallery"
PHOTOS = 6
FILM_FRAMES = 4
JPEG_QUALITY = 82


def grey(rgb: np.ndarray) -> np.ndarray:
    """The picture's own lightness as a grey RGB picture (what the model sees)."""
    return merge_ab(rgb, np.zeros((2, 4, 4), np.float32))


def colorized(model: ColorModel, rgb: np.ndarray) -> np.ndarray:
    return merge_ab(rgb, model.predict_ab(model_input(rgb, model.input_size)[None])[0])


def film_frames(frames: list[np.ndarray], count: int) -> list[tuple[int, np.ndarray]]:
    """``count`` evenly spaced (index, RGB frame) pairs of a film's frames."""
    picks = np.linspace(0, len(frames) - 1, count + 2)[1:-1].round().astype(int)
    return [(int(i), frames[i]) for i in picks]


def film_redness(model: ColorModel, frames: list[np.ndarray]) -> tuple[float, float, float]:
    """(mean a*, % of pixels with a* > 15, % with a* > 10) of the model's ab over every frame of a film."""
    inputs = [model_input(rgb, model.input_size) for rgb in frames]
    a = np.concatenate([model.predict_ab(np.stack(inputs[i:i + 16]))[:, 0] for i in range(0, len(inputs), 16)])
    return float(a.mean()), float(100 * (a > 15).mean()), float(100 * (a > 10).mean())


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise SystemExit(f"error: cannot write {path}")
    print(f"{path.relative_to(REPO)}: {path.stat().st_size // 1024} KB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    args = ap.parse_args(argv)
    photos_dir, film = SHARED / "val" / "cbsd68", SHARED / "video" / "chaplin.mp4"
    if not photos_dir.is_dir() or not film.is_file():
        print(f"error: the shared data is not at {SHARED}", file=sys.stderr)
        return 2
    model = ColorModel(args.model)

    paths = sorted(photos_dir.glob("*.png"))
    rows = []
    for path in [paths[i] for i in np.linspace(0, len(paths) - 1, PHOTOS).round().astype(int)]:
        rgb = read_rgb(path)
        rows.append(([f"{path.name}: lightness only", "colorized", "original"],
                     [thumbnail(grey(rgb)), thumbnail(colorized(model, rgb)), thumbnail(rgb)]))
    write_jpeg(GALLERY / "cbsd68.jpg", contact_sheet(rows))

    with av.open(str(film)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    rows = [([f"chaplin.mp4 frame {index}", "colorized"], [thumbnail(rgb), thumbnail(colorized(model, rgb))])
            for index, rgb in film_frames(frames, FILM_FRAMES)]
    write_jpeg(GALLERY / "chaplin.jpg", contact_sheet(rows))
    mean_a, above_15, above_10 = film_redness(model, frames)
    print(f"chaplin.mp4, every frame: mean a* {mean_a:+.2f}, {above_15:.1f} % of pixels above a* 15, "
          f"{above_10:.1f} % above a* 10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
