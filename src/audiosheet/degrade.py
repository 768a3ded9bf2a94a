"""Degrade: a seeded print-and-scan simulation for clean engraved pages.

Rotation, paper brightness and texture, ink that is not quite black, a little blur, sensor noise
and a JPEG re-encode — what a phone photo or office scan does to a page. Used to test page
ingestion on pages that look scanned and, later, for a "scanned" training variant.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .pages import rotate_page


@dataclass(frozen=True)
class ScanStyle:
    """One draw of the simulation (all ranges are sampled by ``ScanStyle.sample``)."""

    angle: float = 0.0  # degrees, as ``PageLayout.angle``: lines fall to the right when > 0
    paper: float = 245.0  # paper gray level
    ink: float = 25.0  # ink gray level
    texture: float = 0.04  # relative amplitude of smooth paper brightness variation
    blur: float = 0.5  # Gaussian blur sigma, px
    noise: float = 6.0  # Gaussian noise sigma, gray levels
    quality: int = 50  # JPEG quality

    @classmethod
    def sample(cls, rng: np.random.Generator, max_angle: float = 3.0) -> "ScanStyle":
        return cls(
            angle=float(rng.uniform(-max_angle, max_angle)),
            paper=float(rng.uniform(215, 252)),
            ink=float(rng.uniform(5, 60)),
            texture=float(rng.uniform(0.0, 0.06)),
            blur=float(rng.uniform(0.3, 0.9)),
            noise=float(rng.uniform(2, 10)),
            quality=int(rng.integers(30, 71)),
        )


def apply(page: np.ndarray, style: ScanStyle, rng: np.random.Generator) -> np.ndarray:
    """Degrade a uint8 grayscale page (paper = 255) with a given style; same size out."""
    from PIL import Image
    from scipy import ndimage

    h, w = page.shape
    # rotate_page undoes a skew; a skew of -angle undone is a skew of angle made
    img = rotate_page(page, -style.angle, fill=255).astype(np.float32) / 255.0  # 1 = paper
    if style.blur > 0:
        img = ndimage.gaussian_filter(img, style.blur)
    # smooth paper texture: coarse random field, upsampled
    field = rng.normal(0.0, 1.0, (max(h // 64, 2), max(w // 64, 2))).astype(np.float32)
    field = ndimage.zoom(field, (h / field.shape[0], w / field.shape[1]), order=1)[:h, :w]
    paper = style.paper * (1.0 + style.texture * field)
    out = style.ink + (paper - style.ink) * img
    out += rng.normal(0.0, style.noise, out.shape).astype(np.float32)
    im = Image.fromarray(np.clip(out, 0, 255).round().astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=style.quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def degrade(page: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ScanStyle]:
    """A randomly scanned-looking copy of a page and the style drawn for it."""
    style = ScanStyle.sample(rng)
    return apply(page, style, rng), style


def scan(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly scanned-looking copy of a page (rotation up to ±3°, blur, noise, JPEG 30–70)."""
    return degrade(page, rng)[0]
