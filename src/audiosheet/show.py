"""Pictures for people: a page with its noteheads marked above the spectrogram with their onsets.

Each system gets a colour; its noteheads are circled in that colour on the page and its onsets are
drawn in that colour over the spectrogram, so a misalignment shows at a glance.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (128, 128, 0), (0, 128, 128), (170, 110, 40)]


def _spectrogram_image(spec: np.ndarray, width: int, height: int) -> "Image.Image":
    from PIL import Image

    s = np.asarray(spec, dtype=np.float32).T[::-1]  # low frequencies at the bottom
    hi = np.percentile(s, 99.5) if s.size else 1.0
    g = 255 - np.clip(s / max(hi, 1e-6) * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(g).resize((width, height), Image.NEAREST).convert("RGB")


def show_alignment(corpus_dir: str | Path, piece: str | None, out: str | Path, page: int = 1,
                   performance: int = 0) -> Path:
    """Write the alignment picture of ``piece`` (default: the first test piece) to ``out`` (PNG)."""
    from PIL import Image, ImageDraw

    from audiosheet.corpus.reader import Corpus, CorpusError

    c = Corpus(corpus_dir)
    if piece is None:
        ids = c.split("test") or c.piece_ids
        if not ids:
            raise CorpusError(f"{corpus_dir}: the corpus has no pieces")
        piece = ids[0]
    info = c.info(piece)
    if not 1 <= page <= len(info["pages"]):
        raise CorpusError(f"{piece}: no page {page} (it has {len(info['pages'])})")
    if not 0 <= performance < len(info["performances"]):
        raise CorpusError(f"{piece}: no performance {performance} (it has {len(info['performances'])})")
    nh = c.noteheads(piece)
    onsets = c.onsets(piece)[performance]
    spec = c.spectrogram(piece, performance)
    fps = c.manifest["spectrogram"]["fps"]
    sel = np.where(nh["page"] == page - 1)[0]

    img = Image.fromarray(c.page(piece, page - 1)).convert("RGB")
    W = img.width
    draw = ImageDraw.Draw(img)
    systems = sorted(set(nh["system"][sel].tolist()))
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(systems)}
    for i in sel:
        x, y, r = float(nh["x"][i]), float(nh["y"][i]), max(float(nh["w"][i]) * 0.6, 3)
        draw.ellipse([x - r, y - r, x + r, y + r], outline=colour[int(nh["system"][i])], width=2)

    # the part of the performance this page covers
    t0 = max(float(onsets[sel].min()) - 1.0, 0.0) if len(sel) else 0.0
    t1 = float(onsets[sel].max()) + 2.0 if len(sel) else len(spec) / fps
    f0, f1 = int(t0 * fps), min(int(np.ceil(t1 * fps)), len(spec))
    spec_h, tick_h, label_h = 276, 14, 18
    panel = Image.new("RGB", (W, label_h + tick_h + spec_h + 16), "white")
    sp = _spectrogram_image(spec[f0:f1], W, spec_h)
    overlay = sp.copy()
    od = ImageDraw.Draw(overlay)
    pd = ImageDraw.Draw(panel)
    for i in sel:
        x = (float(onsets[i]) * fps - f0) / max(f1 - f0, 1) * W
        col = colour[int(nh["system"][i])]
        pd.line([x, label_h, x, label_h + tick_h - 2], fill=col, width=2)
        od.line([x, 0, x, spec_h], fill=col, width=1)
    panel.paste(Image.blend(sp, overlay, 0.35), (0, label_h + tick_h))
    perf = info["performances"][performance]
    pd.text((4, 2), f"performance {performance}: {perf['soundfont']} program {perf['program']}, "
            f"tempo x{perf['tempo_ratio']}   {t0:.1f}-{t1:.1f} s", fill="black")
    pd.text((4, label_h + tick_h + spec_h + 2), "onsets of the circled noteheads, coloured by system",
            fill="black")

    head = Image.new("RGB", (W, 20), "white")
    ImageDraw.Draw(head).text((4, 4), f"{piece} - page {page}/{len(info['pages'])} - "
                              f"{len(sel)} noteheads - split {info['split']}", fill="black")
    canvas = Image.new("RGB", (W, head.height + img.height + panel.height), "white")
    canvas.paste(head, (0, 0))
    canvas.paste(img, (0, head.height))
    canvas.paste(panel, (0, head.height + img.height))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def show_match(ident, out: str | Path, which: int = 0, max_width: int = 1400) -> Path:
    """Picture of an identification's ``which``-th result.

    Audio query → the matched score page(s) with the passage highlighted, system by system.
    Score query → the query's first page above the spectrogram of the matched recording, the
    matched time span marked.
    """
    from PIL import Image, ImageDraw

    from audiosheet.frontend.pages import iter_pages
    from audiosheet.retrieval.identify import IdentifyError

    if not ident.results:
        raise IdentifyError(f"{ident.query}: no match to show")
    m = ident.results[which]
    q = ident.query_info
    span = f" {q['start_s']:.1f}-{q['end_s']:.1f} s" if "start_s" in q else ""
    title = (f"query {Path(ident.query).name}{span}  ->  {m.piece}   ({ident.method}, score "
             f"{m.score:.3f}, {m.votes} votes)")
    font = _font(22)
    panels = []
    if m.kind == "sheet":
        spans = m.location["spans"]
        want = sorted({s["page"] for s in spans})[:2]
        for no, page in enumerate(iter_pages(m.path), start=1):
            if no > want[-1]:
                break
            if no not in want:
                continue
            im = Image.fromarray(page).convert("RGB")
            layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
            d = ImageDraw.Draw(layer)
            for s in spans:
                if s["page"] == no:
                    pts = [tuple(p) for p in s["corners"]]
                    d.polygon(pts, fill=(255, 200, 0, 90), outline=(230, 80, 0, 255), width=3)
            im = Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")
            ImageDraw.Draw(im).text((10, 8), f"page {no}", fill=(200, 0, 0), font=font)
            panels.append(im)
    else:
        from audiosheet.frontend.audio import load_audio
        from audiosheet.frontend.spectrogram import DEFAULT, spectrogram

        first = next(iter(iter_pages(ident.query)))
        panels.append(Image.fromarray(first).convert("RGB"))
        wave = load_audio(m.path)
        w = panels[0].width
        spec = _spectrogram_image(spectrogram(wave), w, 160)
        d = ImageDraw.Draw(spec, "RGBA")
        total = max(len(wave) / DEFAULT.sample_rate, 1e-6)
        x0, x1 = (m.location["start_s"] / total * w, m.location["end_s"] / total * w)
        d.rectangle([x0, 0, max(x1, x0 + 2), 159], fill=(255, 200, 0, 90), outline=(230, 80, 0, 255), width=3)
        d.text((4, 4), f"{Path(m.path).name}: {m.location['start_s']:.1f}-{m.location['end_s']:.1f} s "
                       f"of {total:.1f} s", fill=(200, 0, 0), font=font)
        panels.append(spec)
    width = sum(p.width for p in panels) if m.kind == "sheet" else max(p.width for p in panels)
    height = max(p.height for p in panels) if m.kind == "sheet" else sum(p.height for p in panels)
    canvas = Image.new("RGB", (width, height + 40), "white")
    ImageDraw.Draw(canvas).text((10, 8), title, fill=(0, 0, 0), font=font)
    x = y = 0
    for p in panels:
        canvas.paste(p, (x, 40 + y))
        if m.kind == "sheet":
            x += p.width
        else:
            y += p.height
    if canvas.width > max_width:
        canvas = canvas.resize((max_width, int(canvas.height * max_width / canvas.width)), Image.LANCZOS)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
