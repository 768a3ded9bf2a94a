"""Degrade: a seeded print-and-scan simulation for clean engraved pages.

Rotation, paper brightness and texture, ink that is not quite black, a little blur, sensor noise
and a JPEG re-encode — what a phone photo or office scan does to a page. Used to test page
ingestion on pages that look scanned and for the "scanned" test variant of a corpus
(``variants``).

``ScanStyle.sample`` draws the original simulation (``scan``, ``degrade``). ``ScanStyle.sample_print``
draws a fuller print-and-scan: besides the above a small perspective (keystone) distortion, ink that
bled or thinned in printing (grey-level dilation or erosion), uneven illumination and fine paper
grain. Its extra fields default to "off", so a style without them degrades exactly as before.
Geometry is one homography (``ScanStyle.homography``): ``ScanStyle.map_points`` moves points of the
clean page (notehead centres, system boxes) to where their ink lands on the degraded page.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from audiosheet.frontend.ink import rotate_page

PRINT_SCAN = {
    "max_angle": 1.5,  # degrees of skew, either way
    "keystone": 0.012,  # corners move by up to about this fraction of the page size
    "paper": (218, 250), "ink": (8, 45),  # gray levels
    "texture": (0.0, 0.025), "grain": (0.0, 0.02),  # relative paper brightness variation
    "blur": (0.3, 0.7),  # px
    "noise": (2, 8),  # gray levels
    "quality": (40, 85),  # JPEG
    "bleed": (-0.15, 0.5),  # thinned … spread ink
    "shading": (0.0, 0.08),  # illumination fall-off across the page
}
"""Ranges of ``ScanStyle.sample_print`` (uniform)."""


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
    # print-and-scan extras (``sample_print``); the defaults leave the page as ``sample`` would
    corners: tuple = ()  # perspective: 8 numbers, (dx, dy) of the top-left, top-right,
    #                      bottom-right, bottom-left page corners as fractions of width, height
    bleed: float = 0.0  # ink spread in printing (> 0) or thinned (< 0): fraction of a 1-px
    #                     grey-level dilation (erosion) of the ink blended in
    shading: float = 0.0  # uneven illumination: the darkest part of the page is this much darker
    shade_angle: float = 0.0  # direction the light falls off towards, radians
    grain: float = 0.0  # fine paper grain, relative amplitude

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

    @classmethod
    def sample_print(cls, rng: np.random.Generator, **ranges) -> "ScanStyle":
        """A moderate print-and-scan (ranges: ``PRINT_SCAN``, overridable by keyword): a page laid
        on a scanner or photographed square-on, still comfortably readable."""
        r = {**PRINT_SCAN, **ranges}

        def u(name):
            return float(rng.uniform(*r[name]))

        k = r["keystone"]
        kx = rng.uniform(-k, k)  # top edge narrower (> 0) or wider than the bottom one
        ky = rng.uniform(-k, k) / 2  # left edge shorter (> 0) or longer than the right one
        corners = np.array([kx, ky, -kx, 0.0, 0.0, 0.0, 0.0, -ky]) + rng.normal(0.0, k / 6, 8)
        return cls(
            angle=round(float(rng.uniform(-r["max_angle"], r["max_angle"])), 4),
            paper=round(u("paper"), 2), ink=round(u("ink"), 2), texture=round(u("texture"), 4),
            blur=round(u("blur"), 3), noise=round(u("noise"), 2),
            quality=int(rng.integers(r["quality"][0], r["quality"][1] + 1)),
            corners=tuple(round(float(c), 5) for c in corners),
            bleed=round(u("bleed"), 3), shading=round(u("shading"), 3),
            shade_angle=round(float(rng.uniform(0, 2 * np.pi)), 4), grain=round(u("grain"), 4),
        )

    def homography(self, width: int, height: int) -> np.ndarray:
        """3 × 3 map of clean page points (continuous px, homogeneous) to degraded page points:
        the rotation about the page centre, then the corner displacements."""
        cx, cy = width / 2.0, height / 2.0
        t = np.deg2rad(self.angle)
        c, s = np.cos(t), np.sin(t)
        # as rotate_page(page, -angle): clean point p lands at centre + R(angle) (p - centre)
        rot = np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0, 0, 1.0]])
        if not self.corners:
            return rot
        src = np.array([[0, 0], [width, 0], [width, height], [0, height]], float)
        d = np.asarray(self.corners, float).reshape(4, 2) * [width, height]
        return _four_point(src, src + d) @ rot

    def map_points(self, x, y, shape) -> tuple[np.ndarray, np.ndarray]:
        """Clean page point(s) → degraded page point(s); ``shape``: (height, width) of the page."""
        hm = self.homography(shape[1], shape[0])
        x, y = np.asarray(x, float), np.asarray(y, float)
        w = hm[2, 0] * x + hm[2, 1] * y + hm[2, 2]
        return ((hm[0, 0] * x + hm[0, 1] * y + hm[0, 2]) / w,
                (hm[1, 0] * x + hm[1, 1] * y + hm[1, 2]) / w)


def _four_point(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The homography taking four points ``src`` to ``dst`` (each (4, 2))."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return np.append(np.linalg.solve(np.asarray(a, float), np.asarray(b, float)), 1.0).reshape(3, 3)


def _warp(page: np.ndarray, hm: np.ndarray) -> np.ndarray:
    """Resample a page so that its point p lands at ``hm`` p (bilinear, paper outside)."""
    from PIL import Image

    inv = np.linalg.inv(hm)
    inv /= inv[2, 2]
    # Pillow's perspective maps output to input points in continuous pixel coordinates
    im = Image.fromarray(page).transform((page.shape[1], page.shape[0]), Image.Transform.PERSPECTIVE,
                                         tuple(inv.ravel()[:8]), Image.Resampling.BILINEAR,
                                         fillcolor=255)
    return np.asarray(im)


def _bleed(img: np.ndarray, amount: float) -> np.ndarray:
    """Ink spread (amount > 0) or thinned (< 0) by a fraction of a 1-px grey-level dilation
    (erosion) of the ink; ``img``: float, 1 = paper."""
    from scipy import ndimage

    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    # ink is dark: spreading it is a grey erosion of the image, thinning a grey dilation
    moved = (ndimage.grey_erosion if amount > 0 else ndimage.grey_dilation)(img, footprint=cross)
    return img + abs(amount) * (moved - img)


def _illumination(style: ScanStyle, h: int, w: int) -> np.ndarray:
    """Multiplicative light level: a linear fall-off towards ``shade_angle`` and a soft vignette,
    1 at the brightest point, 1 - shading at the darkest."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xs + 0.5) / w - 0.5, (ys + 0.5) / h - 0.5
    lin = u * np.cos(style.shade_angle) + v * np.sin(style.shade_angle)
    lin = (lin - lin.min()) / max(float(lin.max() - lin.min()), 1e-6)
    rad = (u ** 2 + v ** 2) / 0.5
    fall = 0.7 * lin + 0.3 * rad
    fall /= max(float(fall.max()), 1e-6)
    return (1.0 - style.shading * fall).astype(np.float32)


def apply(page: np.ndarray, style: ScanStyle, rng: np.random.Generator) -> np.ndarray:
    """Degrade a uint8 grayscale page (paper = 255) with a given style; same size out."""
    from PIL import Image
    from scipy import ndimage

    h, w = page.shape
    printed = page
    if style.bleed:
        printed = np.clip(_bleed(page.astype(np.float32) / 255.0, style.bleed) * 255.0, 0, 255
                          ).round().astype(np.uint8)
    if style.corners:
        img = _warp(printed, style.homography(w, h)).astype(np.float32) / 255.0  # 1 = paper
    else:
        # rotate_page undoes a skew; a skew of -angle undone is a skew of angle made
        img = rotate_page(printed, -style.angle, fill=255).astype(np.float32) / 255.0
    if style.blur > 0:
        img = ndimage.gaussian_filter(img, style.blur)
    # smooth paper texture: coarse random field, upsampled
    field = rng.normal(0.0, 1.0, (max(h // 64, 2), max(w // 64, 2))).astype(np.float32)
    field = ndimage.zoom(field, (h / field.shape[0], w / field.shape[1]), order=1)[:h, :w]
    paper = style.paper * (1.0 + style.texture * field)
    if style.grain:  # fibres: fine noise correlated over a pixel or two
        grain = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (h, w)).astype(np.float32), 1.2)
        paper = paper * (1.0 + style.grain * grain / max(float(grain.std()), 1e-6))
    out = style.ink + (paper - style.ink) * img
    if style.shading:
        out = out * _illumination(style, h, w)
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


def print_scan(page: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ScanStyle]:
    """A printed-and-scanned copy of a page (``ScanStyle.sample_print``) and its style; points of
    the page move to ``style.map_points(x, y, page.shape)``."""
    style = ScanStyle.sample_print(rng)
    return apply(page, style, rng), style
