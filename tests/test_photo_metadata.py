"""Stills keep what makes them the same photo: EXIF (date taken, description), ICC profile and XMP
reach every output format that holds them, upright; a format that cannot is named in a warning."""
from __future__ import annotations


import numpy as np
import pytest

from tests.conftest import run_cli, shared_file

DESCRIPTION, TAKEN = "Grandma at the fair", "1952:07:14 10:00:00"
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:source="scan 17"/></rdf:RDF></x:xmpmeta>')


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A grey scan as a photo manager files it: EXIF description and date taken, turned by the EXIF
    orientation (6: shown rotated 90° clockwise), an sRGB ICC profile and an XMP packet."""
    from PIL import Image, ImageCms

    grey = Image.open(shared_file("val", "cbsd68", "101085.png")).convert("L").convert("RGB")
    exif = Image.Exif()
    exif[0x010E], exif[0x0112] = DESCRIPTION, 6
    exif.get_ifd(0x8769)[0x9003] = TAKEN
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path_factory.mktemp("scan") / "scan.jpg"
    grey.save(path, exif=exif.tobytes(), icc_profile=icc, xmp=XMP, quality=95)
    return path, grey.size, icc


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_exif_icc_and_xmp_reach_the_output_and_the_photo_stays_upright(scan, tmp_path, suffix):
    from PIL import Image

    from stream.photo_metadata import read_metadata

    source, (width, height), icc = scan
    output = tmp_path / f"out{suffix}"
    result = run_cli(source, "-o", output)
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    kept = read_metadata(output)
    assert kept.exif[0x010E] == DESCRIPTION and kept.exif.get_ifd(0x8769)[0x9003] == TAKEN
    assert kept.exif.get(0x0112, 1) == 1
    assert kept.icc == icc
    assert b'dc:source="scan 17"' in kept.xmp
    with Image.open(output) as image:
        assert image.size == (height, width)  # turned as the orientation said, then tagged upright
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 2, "no colour added"


def test_a_format_without_metadata_says_what_it_drops(scan, tmp_path):
    source = scan[0]
    result = run_cli(source, "-o", tmp_path / "out.bmp")
    assert result.returncode == 0, result.stderr
    assert f"warning: .bmp holds no photo metadata: the EXIF, ICC profile, XMP of {source} are dropped " \
           "(use .jpg, .png, .webp or .tif to keep them)" in result.stderr.splitlines()
