"""What makes a colorized scan the same photo to a photo manager: its EXIF (date taken,
description, camera, ...), ICC profile and XMP, carried from the input to the output.

Read and written with Pillow, the standard Python imaging library, rather than our own JPEG/PNG/
WebP/TIFF chunk code: it knows where each format keeps each kind of metadata. OpenCV still decodes
the pixels (and applies the EXIF orientation), so the output's orientation tag is set to 1 (as
shown): the picture stays upright in every viewer. An output format that holds none of it (BMP)
gets a warning instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ORIENTATION = 0x0112
XMP_TIFF_TAG = 700
SUB_IFDS = (0x8769, 0x8825, 0xA005)  # Exif, GPS, Interoperability
TIFF_LAYOUT = {256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 338, 339,
               XMP_TIFF_TAG, 34675}
"""Tags of a TIFF source that describe its own pixel layout (or hold its XMP and ICC, carried apart):
not photo metadata, so not copied into another file's EXIF."""
EXIF_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"}
JPEG_QUALITY = 95
"""OpenCV's default, which outputs without metadata keep."""


@dataclass(frozen=True)
class PhotoMetadata:
    """A photo's metadata: ``exif`` (a Pillow ``Image.Exif``, orientation normalised to 1, or
    None), ``icc`` (ICC profile bytes) and ``xmp`` (XMP packet bytes); empty fields are None."""

    exif: object = None
    icc: bytes | None = None
    xmp: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.exif) or bool(self.icc) or bool(self.xmp)

    def names(self) -> str:
        return ", ".join(name for name, value in (("EXIF", self.exif), ("ICC profile", self.icc), ("XMP", self.xmp))
                         if value)


def read_metadata(source: Path) -> PhotoMetadata:
    """The metadata of an image file (empty when it has none or Pillow cannot read the file)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            exif = image.getexif()
            for sub_ifd in SUB_IFDS:  # read now: Pillow reads them lazily, from the file closed below
                if sub_ifd in exif:
                    exif.get_ifd(sub_ifd)
            xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
            if xmp is None and hasattr(image, "tag_v2"):
                xmp = image.tag_v2.get(XMP_TIFF_TAG)
            icc = image.info.get("icc_profile")
    except (OSError, UnidentifiedImageError, ValueError):
        return PhotoMetadata()
    if ORIENTATION in exif:
        exif[ORIENTATION] = 1  # OpenCV has turned the pixels upright
    for tag in TIFF_LAYOUT & set(exif):
        del exif[tag]
    if isinstance(xmp, str):
        xmp = xmp.encode()
    return PhotoMetadata(exif if len(exif) else None, icc or None, bytes(xmp) if xmp else None)


def write_with_metadata(path: Path, suffix: str, pixels: np.ndarray, metadata: PhotoMetadata) -> None:
    """Write ``pixels`` (uint8 H×W×3 BGR or H×W×4 BGRA, OpenCV's order) to ``path`` as format
    ``suffix`` with ``metadata`` (JPEG at quality 95, as OpenCV writes; PNG, WebP and TIFF lossless,
    TIFF uncompressed).
    Raises OSError when the file cannot be written."""
    from PIL import Image, PngImagePlugin

    code = cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB
    image = Image.fromarray(cv2.cvtColor(pixels, code))
    options: dict = {}
    if metadata.exif:
        options["exif"] = metadata.exif
    if metadata.icc:
        options["icc_profile"] = metadata.icc
    suffix = suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        options.update(format="JPEG", quality=JPEG_QUALITY, subsampling=2)
        if metadata.xmp:
            options["xmp"] = metadata.xmp
    elif suffix == ".png":
        options["format"] = "PNG"
        if metadata.xmp:
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", metadata.xmp.decode("utf-8", "replace"))
            options["pnginfo"] = info
    elif suffix == ".webp":
        options.update(format="WEBP", lossless=True)
        if metadata.xmp:
            options["xmp"] = metadata.xmp
    else:
        options["format"] = "TIFF"  # uncompressed: Pillow's own writer, which keeps the EXIF sub-IFD (libtiff's does not)
        if metadata.xmp:  # TIFF keeps XMP as a tag of its first IFD, beside the EXIF ones
            tags = metadata.exif if metadata.exif is not None else Image.Exif()
            tags[XMP_TIFF_TAG] = metadata.xmp
            options["exif"] = tags
    image.save(path, **options)
