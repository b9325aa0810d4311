"""Drawing the analysis onto the video: per face a box, the smoothed label, probability bars, the attention
map warped back onto the face, and the predicted expression's AU regions with their FACS names; plus
an explanation panel for one face (the app uses it).

Every size (fonts, lines, panels) follows the face's size, within bounds set by the frame's size, so
the overlay reads the same at 640x360 and 1920x1080. Shapes and heatmaps are drawn with OpenCV straight
onto the frame, only over the pixels they cover; text uses Pillow's bundled FreeType font (anti-aliased at
any size), rasterised once per (text, size) and cached, then blended in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from stream_fer.align import crop_map_to_frame, frame_roi, warp_crop
from stream_fer.draw import au_colour, draw_au_regions, outline_au_regions
from stream_fer.face.action_units import ACTION_UNITS, EXPRESSION_AUS, aus_for
from stream_fer.face.alignment import apply_affine
from stream_fer.face.au_maps import expression_map
from stream_fer.face.classes import CLASS_NAMES
from stream_fer.frames import FaceResult, FrameResult

log = logging.getLogger(__name__)

Colour = tuple[int, int, int]

# One colour per class (RGB).
CLASS_COLOURS: dict[str, Colour] = {
    "neutral": (176, 184, 196),
    "happiness": (255, 196, 36),
    "surprise": (64, 214, 232),
    "sadness": (96, 144, 255),
    "anger": (255, 80, 72),
    "disgust": (112, 206, 80),
    "fear": (190, 128, 255),
}
PANEL_BG: Colour = (18, 20, 26)
PANEL_OPACITY = 0.8
TEXT: Colour = (240, 242, 246)
MUTED: Colour = (150, 156, 168)
BAR_TRACK: Colour = (58, 62, 72)  # an empty bar, on the panel
DARK: Colour = (16, 18, 24)
# The trust row's bar: low (< 0.5), middling (< 0.8), high; see stream_fer.trust.
TRUST_COLOURS: tuple[tuple[float, Colour], ...] = ((0.5, (235, 87, 87)), (0.8, (242, 180, 65)), (1.01, (96, 200, 130)))


@dataclass(frozen=True)
class OverlayOptions:
    """Which overlays to draw. `panel` adds the explanation panel of the largest face at the bottom left."""

    box: bool = True
    label: bool = True
    bars: bool = True
    attention: bool = True
    au_regions: bool = True
    panel: bool = False
    attention_opacity: float = 0.6  # peak opacity of the heatmap, where attention is highest


def class_colour(name: str) -> Colour:
    return CLASS_COLOURS.get(name, (255, 255, 255))


# --- low-level drawing --------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _font(size: int):
    from PIL import ImageFont  # on first use: a data-only run never draws text

    return ImageFont.load_default(size=max(6, int(size)))


@lru_cache(maxsize=4096)
def _text_mask(text: str, size: int, stroke: int = 0) -> tuple[np.ndarray, int, int]:
    """(coverage uint8 (h, w), dx, dy): the text rasterised (with an outline `stroke` px wide, if > 0),
    anchored at its left middle ("lm"); dx, dy place the mask's top-left corner relative to the anchor."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text, anchor="lm", stroke_width=stroke)
    w, h = max(1, right - left), max(1, bottom - top)
    from PIL import Image, ImageDraw

    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).text((-left, -top), text, font=font, fill=255, anchor="lm", stroke_width=stroke,
                             stroke_fill=255)
    mask = np.asarray(img)
    mask.setflags(write=False)
    return mask, left, top


@lru_cache(maxsize=4096)
def text_width(text: str, size: int) -> int:  # cached: measuring text is a third of a frame's drawing
    return int(np.ceil(_font(size).getlength(text)))


@dataclass(frozen=True)
class _Layer:
    """A coverage mask in one colour at one opacity, premultiplied for compositing: out = dst * keep + add.
    Cached per (text or shape, colour, opacity), so drawing it costs four array operations."""

    # (h, w, 3) float32: 1 - coverage * opacity, once per channel: numpy multiplies a uint8 (h, w, 3) by an
    # (h, w, 3) array about 7x faster than by an (h, w, 1) one broadcast over the channels
    keep: np.ndarray
    add: np.ndarray  # (h, w, 3) float32: colour * coverage * opacity, plus 0.5 to round on truncation
    dx: int  # the layer's top-left corner relative to where it is drawn
    dy: int
    # Large layers (the side panel's background): rows [solid[0], solid[1]) are fully covered, so one
    # per-pixel affine map (3x4 matrix, cv2.transform) draws them instead of three float passes.
    solid: tuple[int, int] | None = None
    solid_map: np.ndarray | None = None  # (3, 4): out = diag(keep) @ rgb + colour * opacity

    @property
    def shape(self) -> tuple[int, int]:
        return self.keep.shape[:2]

    def rows(self, a: int, b: int) -> _Layer:
        return _Layer(self.keep[a:b], self.add[a:b], self.dx, self.dy + a)


_SOLID_MIN_AREA = 4096  # px; below this the three array operations are cheaper than splitting the layer


def _make_layer(mask: np.ndarray, colour: Colour, opacity: float, dx: int = 0, dy: int = 0) -> _Layer:
    a = mask.astype(np.float32)[..., None] * np.float32(opacity / 255.0)
    keep, add = np.repeat(1.0 - a, 3, axis=2), a * np.asarray(colour, dtype=np.float32) + np.float32(0.5)
    keep.setflags(write=False)
    add.setflags(write=False)
    solid = solid_map = None
    if mask.size >= _SOLID_MIN_AREA:
        full = np.flatnonzero(mask.min(axis=1) == 255)
        if len(full) and full[-1] - full[0] + 1 == len(full) and len(full) >= 8:  # one contiguous band
            solid = (int(full[0]), int(full[-1]) + 1)
            k, c = float(keep[solid[0], 0, 0]), add[solid[0], 0].astype(np.float64) - 0.5
            solid_map = np.hstack([np.eye(3) * k, c[:, None]])
    return _Layer(keep, add, dx, dy, solid, solid_map)


@lru_cache(maxsize=2048)
def _text_layer(text: str, size: int, stroke: int, colour: Colour, opacity: float) -> _Layer:
    mask, dx, dy = _text_mask(text, size, stroke)
    return _make_layer(mask, colour, opacity, dx, dy)


def _make_rounded_layer(w: int, h: int, radius: int, colour: Colour, opacity: float) -> _Layer:
    return _make_layer(_rounded_mask(w, h, radius), colour, opacity)


# Two caches of rounded layers: the many small ones (bars, label pills) in a large one; the large ones (side
# panels' backgrounds, 1-6 MB each, whose size changes with the face's size, label and trust reason) in a small
# one, so that a long video cannot fill memory with them: they are only drawn into a panel's fixed layer
# (_panel_fixed, itself cached), so a few suffice.
_rounded_layer = lru_cache(maxsize=2048)(_make_rounded_layer)
_large_rounded_layer = lru_cache(maxsize=8)(_make_rounded_layer)


def _clipped(x: int, y: int, w: int, h: int, shape) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1): the part of a w x h footprint with its corner at (x, y) that lies on a canvas of `shape`;
    None when none does."""
    H, W = shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


def _composite(canvas: np.ndarray, x: float, y: float, layer: _Layer) -> None:
    """canvas <- canvas * keep + add over the layer's footprint with its corner at (x + dx, y + dy),
    rounded to the pixel, clipped to the canvas."""
    if isinstance(canvas, _LayerStack):
        canvas.stack(int(round(x + layer.dx)), int(round(y + layer.dy)), layer)
        return
    x, y = int(round(x + layer.dx)), int(round(y + layer.dy))
    h, w = layer.keep.shape[:2]
    H, W = canvas.shape[:2]
    if layer.solid is None and x >= 0 and y >= 0 and x + w <= W and y + h <= H:  # the usual case, first
        dst = canvas[y:y + h, x:x + w]
        out = dst * layer.keep  # uint8 * float32 -> float32 in one pass
        out += layer.add
        np.copyto(dst, out, casting="unsafe")  # truncation; `add` carries the +0.5 that makes it rounding
        return
    if layer.solid is not None and canvas.shape[2:] == (3,):
        s0, s1 = layer.solid
        y0, y1, x0, x1 = max(0, y + s0), min(H, y + s1), max(0, x), min(W, x + w)
        if y1 > y0 and x1 > x0:
            band = canvas[y0:y1, x0:x1]
            band[:] = cv2.transform(band, layer.solid_map)  # rounds to nearest, as the float path does
        for a, b in ((0, s0), (s1, h)):  # the rows with partial coverage (rounded corners)
            if b > a:
                _composite(canvas, x - layer.dx, y - layer.dy, layer.rows(a, b))
        return
    box = _clipped(x, y, w, h, canvas.shape)
    if box is None:
        return
    x0, y0, x1, y1 = box
    dst = canvas[y0:y1, x0:x1]
    out = dst * layer.keep[y0 - y:y1 - y, x0 - x:x1 - x]
    out += layer.add[y0 - y:y1 - y, x0 - x:x1 - x]
    np.copyto(dst, out, casting="unsafe")


class _LayerStack:
    """Layers composed off the frame into one (premultiplied: keep and add, as _Layer), so that drawing many of
    them later costs one operation: a layer stacked on top of the others, dst * k1 * k2 + (a1 * k2 + a2), is
    again dst * keep + add. put_text, fill_rounded and _draw_shape draw on it as on a frame."""

    def __init__(self, h: int, w: int):
        self.shape = (h, w, 3)
        self.keep = np.ones(self.shape, np.float32)
        self.add = np.zeros(self.shape, np.float32)

    def stack(self, x: int, y: int, layer: _Layer) -> None:
        h, w = layer.keep.shape[:2]
        box = _clipped(x, y, w, h, self.shape)
        if box is None:
            return
        x0, y0, x1, y1 = box
        k = layer.keep[y0 - y:y1 - y, x0 - x:x1 - x]
        a = layer.add[y0 - y:y1 - y, x0 - x:x1 - x] - np.float32(0.5)  # _Layer's add carries +0.5 for rounding
        self.add[y0:y1, x0:x1] *= k
        self.add[y0:y1, x0:x1] += a
        self.keep[y0:y1, x0:x1] *= k

    def flattened(self) -> _Layer8:
        keep = np.clip(np.rint(self.keep * 255.0), 0, 255).astype(np.uint8)
        add = np.clip(np.rint(self.add), 0, 255).astype(np.uint8)
        keep.setflags(write=False)
        add.setflags(write=False)
        return _Layer8(keep, add)


def _draw_shape(target, colour: Colour, box: tuple[int, int, int, int], draw) -> None:
    """An OpenCV shape drawn anti-aliased in `colour` within box (x0, y0, x1, y1), onto a frame or a _LayerStack:
    draw(mask, ox, oy) paints its coverage (255) into a mask whose corner is at (ox, oy)."""
    box = _clipped(box[0], box[1], box[2] - box[0], box[3] - box[1], target.shape)
    if box is None:
        return
    x0, y0, x1, y1 = box
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    draw(mask, x0, y0)
    _composite(target, x0, y0, _make_layer(mask, colour, 1.0))


@dataclass(frozen=True)
class _Layer8:
    """A premultiplied layer in 8 bits, out = dst * keep / 255 + add: two saturating OpenCV passes (the heatmap, and a
    panel's fixed parts however many layers went into them)."""

    keep: np.ndarray  # (h, w, 3) uint8
    add: np.ndarray  # (h, w, 3) uint8

    def draw(self, canvas: np.ndarray, x: int, y: int) -> None:
        h, w = self.keep.shape[:2]
        box = _clipped(x, y, w, h, canvas.shape)
        if box is None:
            return
        x0, y0, x1, y1 = box
        dst = canvas[y0:y1, x0:x1]
        keep, add = self.keep[y0 - y:y1 - y, x0 - x:x1 - x], self.add[y0 - y:y1 - y, x0 - x:x1 - x]
        dst[:] = cv2.add(cv2.multiply(dst, keep, scale=1 / 255), add)


def put_text(canvas: np.ndarray, text: str, x: float, cy: float, size: int, colour: Colour,
             align: str = "left", opacity: float = 1.0, outline: Colour | None = None) -> None:
    """Text with its left (or right, align="right") edge at x, vertically centred on cy; with a thin
    outline in another colour (legible on any background) when `outline` is given."""
    if not text:
        return
    size = int(size)
    if align == "right":
        x = x - text_width(text, size)
    if outline is not None:
        _composite(canvas, x, cy, _text_layer(text, size, max(1, round(size / 9)), outline, 0.85 * opacity))
    _composite(canvas, x, cy, _text_layer(text, size, 0, colour, opacity))


def text_box(text: str, x: float, cy: float, size: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) that put_text(text, x, cy, size) covers (left aligned)."""
    mask, dx, dy = _text_mask(text, int(size))
    x0, y0 = int(round(x + dx)), int(round(cy + dy))
    return x0, y0, x0 + mask.shape[1], y0 + mask.shape[0]


@lru_cache(maxsize=256)
def _rounded_mask(w: int, h: int, radius: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).rounded_rectangle((0, 0, w - 1, h - 1), radius=max(0, min(radius, h // 2, w // 2)),
                                          fill=255)
    mask = np.asarray(img)
    mask.setflags(write=False)
    return mask


def fill_rounded(canvas: np.ndarray, x: int, y: int, w: int, h: int, radius: int, colour: Colour,
                 opacity: float = 1.0) -> None:
    if w < 1 or h < 1:
        return
    make = _large_rounded_layer if w * h >= _SOLID_MIN_AREA else _rounded_layer
    _composite(canvas, int(x), int(y), make(int(w), int(h), int(radius), tuple(colour), float(opacity)))


@lru_cache(maxsize=4)
def _colormap_rgb(colormap: int) -> np.ndarray:
    """OpenCV's colour map as a (256, 1, 3) RGB table, for applyColorMap as a user colour map: one lookup
    instead of applyColorMap + BGR -> RGB (and 7x faster than numpy's fancy indexing with the table)."""
    table = cv2.cvtColor(cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], colormap), cv2.COLOR_BGR2RGB)
    table = np.ascontiguousarray(table)
    table.setflags(write=False)
    return table


def _heat_rgb(values: np.ndarray, colormap: int = cv2.COLORMAP_TURBO) -> np.ndarray:
    """values in [0, 1] (H, W) -> RGB uint8 (H, W, 3)."""
    u8 = cv2.convertScaleAbs(np.asarray(values, dtype=np.float32), alpha=255.0)  # rounded, saturated to 0..255
    return cv2.applyColorMap(u8, _colormap_rgb(colormap))


def _normalise(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi - lo > 1e-8 else np.zeros_like(a)


# --- per-face layout ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Scale:
    """Sizes for one face, in pixels."""

    font: int  # label text
    small: int  # panel text
    line: int  # box and outline thickness
    pad: int

    @classmethod
    def for_face(cls, face_h: float, frame_h: int) -> _Scale:
        font = float(min(max(0.07 * face_h, max(13.0, frame_h / 56)), max(14.0, frame_h / 30)))  # np.clip
        small = max(12, round(font * 0.82))
        line = max(1, round(font / 10))
        return cls(round(font), small, line, max(3, round(font * 0.35)))


def face_box(face: FaceResult, shape) -> tuple[int, int, int, int]:
    """The drawn box: the mesh bounds, padded (more at the top: the mesh stops at the hairline), clipped."""
    x0, y0, x1, y1 = face.box
    w, h = x1 - x0, y1 - y0
    h_img, w_img = shape[:2]
    return (int(max(0, x0 - 0.06 * w)), int(max(0, y0 - 0.08 * h)),
            int(min(w_img - 1, x1 + 0.06 * w)), int(min(h_img - 1, y1 + 0.04 * h)))


def _blend_attention(canvas: np.ndarray, face: FaceResult, crop_size: int, opacity: float) -> None:
    """The attention map, warped from crop space onto the face, coloured and blended with an opacity that
    grows with attention (low attention leaves the face untouched), limited to the face's outline.
    Computed at up to 96 px across and upsampled: a 12 x 12 heatmap has no fine detail to lose."""
    roi = frame_roi(face.align_matrix, crop_size, canvas.shape)
    if roi is None:
        return
    x0, y0, x1, y1 = roi
    rw, rh = x1 - x0, y1 - y0
    f = min(1.0, 96.0 / max(rw, rh))
    sw, sh = max(2, round(rw * f)), max(2, round(rh * f))
    # Frame -> small patch: scale about the ROI origin (pixel centres).
    kx, ky = sw / rw, sh / rh
    to_small = np.array([[kx, 0, 0.5 * kx - 0.5 - x0 * kx], [0, ky, 0.5 * ky - 0.5 - y0 * ky]])
    from_small = np.array([[1 / kx, 0, -to_small[0, 2] / kx], [0, 1 / ky, -to_small[1, 2] / ky], [0, 0, 1]])
    small_matrix = np.asarray(face.align_matrix, dtype=np.float64) @ from_small
    att = np.asarray(face.attention, dtype=np.float32)
    att = att - att.min()
    att = att / max(float(att.max()), 1e-8)
    heat = crop_map_to_frame(att, small_matrix, crop_size, (sh, sw), (0, 0, sw, sh))
    if heat is None:
        return
    np.clip(heat, 0.0, 1.0, out=heat)
    mask = np.zeros((sh, sw), dtype=np.uint8)
    pts = face.landmarks[:, :2] @ to_small[:2, :2].T + to_small[:2, 2]
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 255, cv2.LINE_AA)
    sigma = max(0.8, 0.025 * (face.box[3] - face.box[1]) * f)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    alpha = mask.astype(np.float32)
    alpha *= heat * np.sqrt(heat) * (opacity / 255.0)  # heat ** 1.5: low attention stays nearly clear
    # Premultiplied in 8 bits, out = dst * keep / 255 + add with keep = 255 (1 - alpha) and add = colour * alpha,
    # upsampled as such: two saturating OpenCV passes over the face instead of a float blend (half the cost,
    # within 3 levels of it). Where alpha rounds to 0, keep is 255 and add 0: the frame's own pixels.
    keep = cv2.convertScaleAbs(alpha, alpha=-255.0, beta=255.0)
    add = cv2.multiply(_heat_rgb(heat), cv2.cvtColor(cv2.subtract(255, keep), cv2.COLOR_GRAY2RGB), scale=1 / 255)
    rows, cols = np.flatnonzero(keep.min(axis=1) < 255), np.flatnonzero(keep.min(axis=0) < 255)
    if not len(rows):
        return
    # Only the rows and columns that the non-clear patch pixels reach after the bilinear upsampling (the face's
    # outline, not the whole crop footprint).
    r0, r1 = _upsampled_span(rows[0], rows[-1] + 1, sh, rh)
    c0, c1 = _upsampled_span(cols[0], cols[-1] + 1, sw, rw)
    if (sw, sh) != (rw, rh):
        keep = cv2.resize(keep, (rw, rh), interpolation=cv2.INTER_LINEAR)
        add = cv2.resize(add, (rw, rh), interpolation=cv2.INTER_LINEAR)
    keep3 = cv2.cvtColor(np.ascontiguousarray(keep[r0:r1, c0:c1]), cv2.COLOR_GRAY2RGB)
    _Layer8(keep3, add[r0:r1, c0:c1]).draw(canvas, x0 + c0, y0 + r0)


def _upsampled_span(a: int, b: int, small: int, full: int) -> tuple[int, int]:
    """The pixels [a', b') of a `full`-long axis that a bilinear resize (half-pixel centres) from a `small`-long
    one computes from pixels [a, b) of it, widened by a pixel on each side."""
    if small == full:
        return a, b
    k = small / full  # full pixel y samples small coordinate (y + 0.5) k - 0.5
    lo = int(np.floor((a - 1 + 0.5) / k - 0.5)) - 1
    hi = int(np.ceil((b + 0.5) / k - 0.5)) + 2
    return max(0, lo), min(full, hi)


def _draw_box(canvas: np.ndarray, box, colour: Colour, scale: _Scale) -> None:
    """A thin frame with heavier corner brackets."""
    x0, y0, x1, y1 = box
    cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, max(1, scale.line // 2), cv2.LINE_AA)
    arm = int(0.16 * min(x1 - x0, y1 - y0))
    t = scale.line + 1
    for cx, cy, dx, dy in ((x0, y0, 1, 1), (x1, y0, -1, 1), (x0, y1, 1, -1), (x1, y1, -1, -1)):
        cv2.line(canvas, (cx, cy), (cx + dx * arm, cy), colour, t, cv2.LINE_AA)
        cv2.line(canvas, (cx, cy), (cx, cy + dy * arm), colour, t, cv2.LINE_AA)


def _boxes_overlap(a, b, margin: int = 1) -> bool:
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


def _draw_au_outlines(canvas: np.ndarray, face: FaceResult, scale: _Scale) -> None:
    """The label's AU regions outlined on the face, each tagged with its AU code where the tag has room
    (the panel beside the face spells out every AU with its FACS name)."""
    aus = aus_for(face.label) if face.label in EXPRESSION_AUS else ()
    if not aus:
        return
    H, W = canvas.shape[:2]
    per_au = outline_au_regions(canvas, face.landmarks, aus, thickness=max(1, scale.line))
    size = max(10, round(scale.small * 0.8))
    placed: list[tuple[int, int, int, int]] = []
    for au, ellipses in zip(aus, per_au):
        # Candidate spots around the first (subject's right, image left) region: above left, above,
        # left of it, below it. The first that overlaps no other tag wins; none: no tag on the face.
        e = ellipses[0]
        cx, cy = e.centre
        a, b = e.semi_axes
        w = text_width(au.code, size)
        for tx, ty in ((cx - a, cy - b - 0.6 * size), (cx - w / 2, cy - b - 0.6 * size),
                       (cx - a - w - 2, cy), (cx - w / 2, cy + b + 0.6 * size)):
            box = text_box(au.code, tx, ty, size)
            inside = box[0] >= 0 and box[1] >= 0 and box[2] <= W and box[3] <= H
            if inside and not any(_boxes_overlap(box, other, margin=max(2, size // 3)) for other in placed):
                put_text(canvas, au.code, tx, ty, size, au_colour(au.number), outline=DARK)
                placed.append(box)
                break


def _draw_label(canvas: np.ndarray, face: FaceResult, box, scale: _Scale) -> tuple[int, int, int, int]:
    """'happiness 92%  #1' on a pill in the class colour, above the box (below when there is no room)."""
    colour = class_colour(face.label)
    pct = f"{100 * face.confidence:.0f}%"
    tid = f"#{face.track_id}"
    fs, ss, gap = scale.font, scale.small, scale.pad
    w_label, w_pct, w_tid = text_width(face.label, fs), text_width(pct, fs), text_width(tid, ss)
    w = gap + w_label + gap + w_pct + 2 * gap + w_tid + gap
    h = round(fs * 1.5)
    H, W = canvas.shape[:2]
    y = box[1] - h - scale.line - 1
    if y < 0:
        y = min(box[3] + scale.line + 1, H - h)
    x = int(min(max(box[0], 0), max(0, W - w)))
    fill_rounded(canvas, x, y, w, h, h // 3, colour, 0.92)
    cy = y + h / 2
    put_text(canvas, face.label, x + gap, cy, fs, DARK)
    put_text(canvas, pct, x + gap + w_label + gap, cy, fs, DARK)
    put_text(canvas, tid, x + w - gap, cy, ss, DARK, align="right", opacity=0.65)
    return x, y, x + w, y + h


@dataclass(frozen=True)
class _PanelLayout:
    width: int
    height: int
    row: int
    pad: int
    name_w: int
    bar_w: int
    au_rows: tuple  # (ActionUnit, text)
    trust_rows: int = 0  # 0: no trust score; 1: its bar; 2: its bar and the reason


def trust_colour(score: float) -> Colour:
    return next(c for limit, c in TRUST_COLOURS if score < limit)


def _panel_layout(face: FaceResult, class_names: tuple[str, ...], scale: _Scale, with_bars: bool,
                  with_aus: bool) -> _PanelLayout | None:
    fs = scale.small
    row = round(fs * 1.5)
    pad = scale.pad + 2
    name_w = max(text_width(n, fs) for n in class_names)
    pct_w = text_width("100%", fs)
    bar_w = round(fs * 5.5)
    width = pad + name_w + pad + bar_w + pad + pct_w + pad if with_bars else 0
    aus = aus_for(face.label) if (with_aus and face.label in EXPRESSION_AUS) else ()
    au_rows = tuple((au, f"{au.code} {au.name}") for au in aus)
    if au_rows:
        head_w = text_width("attention in AUs  cos 0.00", fs)
        width = max(width, pad + row + max(text_width(t, fs) for _, t in au_rows) + 2 * pad + pct_w + pad,
                    pad + head_w + pad)
    height = pad + (len(class_names) * row if with_bars else 0)
    trust_rows = 0
    if with_bars and face.trust is not None:  # below the bars: the trust score and what lowered it
        trust_rows = 2 if face.trust_reason else 1
        height += pad + trust_rows * row
        if face.trust_reason:
            width = max(width, pad + text_width(face.trust_reason, fs) + pad)
    if au_rows:
        height += (pad if with_bars else 0) + row * (1 + len(au_rows))
    if height <= pad:
        return None
    return _PanelLayout(width, height + pad, row, pad, name_w, bar_w, au_rows, trust_rows)


def _draw_panel(canvas: np.ndarray, x: int, y: int, layout: _PanelLayout, face: FaceResult,
                class_names: tuple[str, ...], scale: _Scale, with_bars: bool) -> None:
    """The side panel: a bar per class (smoothed probability), the trust score and its reason, then the
    expression's AUs with their FACS names and attention shares, and the attention-AU cosine. What does not
    change with the numbers is composed once per layout and drawn in one operation (_panel_fixed); the rest,
    about half of the panel's forty-odd pieces, is drawn over it."""
    top = int(np.argmax(face.probs)) if with_bars else -1
    # Composed with its corner at the panel's row parity: Python rounds halves to even, so a row centred half a
    # pixel off the grid lands where it does on the frame only if the parity of the corner's row is the same.
    py = y % 2
    _panel_fixed(layout, scale.small, class_names, top, with_bars, py).draw(canvas, x, y - py)
    _panel_rows(canvas, x, y, layout, scale.small, class_names, with_bars, top, face)


@lru_cache(maxsize=32)  # 0.7 MB each at 720p, 1.5 at 1080p; a face's layout changes with its size, label, reason
def _panel_fixed(layout: _PanelLayout, fs: int, class_names: tuple[str, ...], top: int, with_bars: bool,
                 py: int) -> _Layer8:
    """A side panel's fixed parts: background, class names (the top class's brighter), empty bars, separators,
    the AUs' marks and names; with the panel's corner at row py (0 or 1)."""
    stack = _LayerStack(layout.height + py, layout.width)
    _panel_rows(stack, 0, py, layout, fs, class_names, with_bars, top, None)
    return stack.flattened()


def _panel_rows(target, x: int, y: int, L: _PanelLayout, fs: int, class_names: tuple[str, ...], with_bars: bool,
                top: int, face: FaceResult | None) -> None:
    """The side panel drawn at (x, y): with face None only its fixed parts (onto a _LayerStack), else only
    what shows the face's numbers (onto the frame). One layout for both, so the two always line up (x is a
    whole pixel; see _draw_panel for y)."""
    fixed = face is None
    right = x + L.width - L.pad
    yy = y + L.pad
    bh = max(3, round(L.row * 0.4))
    bx = x + L.pad + L.name_w + L.pad
    if fixed:
        fill_rounded(target, x, y, L.width, L.height, max(3, fs // 2), PANEL_BG, PANEL_OPACITY)

    def separator() -> None:
        ly = int(yy + L.pad / 2)
        x0, x1 = x + L.pad, right
        _draw_shape(target, MUTED, (x0 - 2, ly - 2, x1 + 3, ly + 3),
                    lambda m, ox, oy: cv2.line(m, (x0 - ox, ly - oy), (x1 - ox, ly - oy), 255, 1, cv2.LINE_AA))

    if with_bars:
        probs = None if fixed else np.asarray(face.probs).tolist()  # Python floats: cheaper than numpy scalars
        for k, name in enumerate(class_names):
            cy = yy + L.row / 2
            by = int(round(cy - bh / 2))
            ink = TEXT if k == top else MUTED
            if fixed:
                put_text(target, name, x + L.pad, cy, fs, ink)
                fill_rounded(target, bx, by, L.bar_w, bh, bh // 2, BAR_TRACK)
            else:
                p = min(max(probs[k], 0.0), 1.0)
                fill_w = round(L.bar_w * p)
                if fill_w >= 1:
                    fill_rounded(target, bx, by, max(fill_w, bh), bh, bh // 2, class_colour(name),
                                 1.0 if k == top else 0.6)
                put_text(target, f"{100 * p:.0f}%", right, cy, fs, ink, align="right")
            yy += L.row
    if L.trust_rows:
        if fixed:
            separator()
        yy += L.pad
        cy = yy + L.row / 2
        by = int(round(cy - bh / 2))
        if fixed:
            put_text(target, "trust", x + L.pad, cy, fs, TEXT)
            fill_rounded(target, bx, by, L.bar_w, bh, bh // 2, BAR_TRACK)
        else:
            t = min(max(float(face.trust), 0.0), 1.0)
            if round(L.bar_w * t) >= 1:
                fill_rounded(target, bx, by, max(round(L.bar_w * t), bh), bh, bh // 2, trust_colour(t))
            put_text(target, f"{100 * t:.0f}%", right, cy, fs, TEXT, align="right")
            if L.trust_rows > 1:
                put_text(target, face.trust_reason, x + L.pad, yy + L.row * 1.5, fs, trust_colour(t))
        yy += L.row * L.trust_rows
    if L.au_rows:
        if with_bars:
            if fixed:
                separator()
            yy += L.pad
        if not fixed:
            cos = face.att_au_cosine
            put_text(target, "attention in AUs" + ("" if cos is None else f"  cos {cos:.2f}"), x + L.pad,
                     yy + L.row / 2, fs, MUTED)
        yy += L.row
        r, ring = max(3, round(fs * 0.33)), max(1, fs // 8)  # each AU's mark: radius, line width
        reach = r + ring + 2
        for au, text in L.au_rows:
            cy = yy + L.row / 2
            if fixed:
                colour = au_colour(au.number)
                cx, ccy = int(x + L.pad + r), int(round(cy))
                _draw_shape(target, colour, (cx - reach, ccy - reach, cx + reach + 1, ccy + reach + 1),
                            lambda m, ox, oy, c=(cx, ccy): cv2.circle(m, (c[0] - ox, c[1] - oy), r, 255, ring,
                                                                      cv2.LINE_AA))
                put_text(target, text, x + L.pad + L.row, cy, fs, colour)
            else:
                share = face.au_attention_share.get(au.number)
                if share is not None:
                    put_text(target, f"{100 * share:.0f}%", right, cy, fs, TEXT, align="right")
            yy += L.row


def _place_side(box, w: int, h: int, shape, gap: int) -> tuple[int, int]:
    """Beside the box: right if it fits, else left, else against the frame edge with more room."""
    x0, y0, x1, _ = box
    H, W = shape[:2]
    y = int(np.clip(y0, 0, max(0, H - h)))
    if x1 + gap + w <= W:
        return x1 + gap, y
    if x0 - gap - w >= 0:
        return x0 - gap - w, y
    return (W - w, y) if W - x1 >= x0 else (0, y)


def render_face(canvas: np.ndarray, face: FaceResult, options: OverlayOptions, crop_size: int,
                class_names: tuple[str, ...]) -> list[tuple[int, int, int, int]]:
    """Draw one face's overlays onto `canvas` in place; returns the rectangles drawn on (x0, y0, x1, y1):
    the face box, the label and the side panel."""
    box = face_box(face, canvas.shape)
    used = [box]
    scale = _Scale.for_face(face.box[3] - face.box[1], canvas.shape[0])
    if options.attention and face.attention is not None and face.attention.size:
        _blend_attention(canvas, face, crop_size, options.attention_opacity)
    if options.au_regions:
        _draw_au_outlines(canvas, face, scale)
    if options.box:
        _draw_box(canvas, box, class_colour(face.label), scale)
    if options.label:
        used.append(_draw_label(canvas, face, box, scale))
    if options.bars or options.au_regions:
        layout = _panel_layout(face, class_names, scale, options.bars, options.au_regions)
        if layout is not None:
            x, y = _place_side(box, layout.width, layout.height, canvas.shape, gap=2 * scale.pad)
            _draw_panel(canvas, x, y, layout, face, class_names, scale, options.bars)
            used.append((x, y, x + layout.width, y + layout.height))
    return used


def render_frame(rgb: np.ndarray, result: FrameResult, options: OverlayOptions = OverlayOptions(),
                 crop_size: int = 48, class_names: tuple[str, ...] = CLASS_NAMES) -> np.ndarray:
    """An annotated RGB copy of `rgb` with every face of `result` drawn on it."""
    canvas = np.array(rgb, dtype=np.uint8, copy=True)
    used = []
    for face in result.faces:
        used += render_face(canvas, face, options, crop_size, class_names)
    if options.panel and result.faces:
        largest = max(result.faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        tile = int(np.clip(canvas.shape[0] / 4.5, 80, 240))
        panel = explanation_panel(rgb, largest, crop_size, tile=tile, class_names=class_names)
        ph, pw = panel.shape[:2]
        H, W = canvas.shape[:2]
        if pw <= W and ph <= H:
            x, y = _quietest_corner(W, H, pw, ph, used)
            dst = canvas[y:y + ph, x:x + pw]
            dst[:] = cv2.addWeighted(panel, 0.92, dst, 0.08, 0)
    return canvas


def _quietest_corner(W: int, H: int, w: int, h: int, boxes) -> tuple[int, int]:
    """The frame corner where a w x h panel covers the least of `boxes` (bottom left on ties)."""
    def overlap(corner: tuple[int, int]) -> float:
        x, y = corner
        return sum(max(0, min(x + w, bx1) - max(x, bx0)) * max(0, min(y + h, by1) - max(y, by0))
                   for bx0, by0, bx1, by1 in boxes)

    corners = [(0, H - h), (W - w, H - h), (0, 0), (W - w, 0)]
    return min(corners, key=overlap)


# --- the explanation panel ----------------------------------------------------------------------------

def _overlay_tile(gray: np.ndarray, values: np.ndarray | None, opacity: float = 0.6) -> np.ndarray:
    """A grayscale tile with a heatmap (values in [0, 1], tile-sized) blended in proportion to value."""
    base = np.repeat(gray[..., None], 3, axis=2)
    if values is None:
        return base
    alpha = (opacity * np.clip(values, 0, 1)).astype(np.float32)
    return cv2.blendLinear(_heat_rgb(values), base, alpha, 1.0 - alpha)


def _upsample(m: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(np.asarray(m, dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)


def explanation_panel(rgb: np.ndarray, face: FaceResult, crop_size: int = 48, tile: int = 192,
                      class_names: tuple[str, ...] = CLASS_NAMES) -> np.ndarray:
    """One face explained, as an RGB image of about (tile * 1.15) x (tile * 4.4): the aligned grayscale crop
    the model saw, with its attention; the class activation map (CAM) of the predicted class; the predicted
    expression's AU map with its regions; and the share of attention inside each of those AUs, with the
    attention-AU cosine. `face.label` is the class explained."""
    font_px = max(11, round(tile / 13))
    title_h = round(font_px * 1.9)
    gap = max(4, tile // 32)
    m_tile = np.asarray(face.align_matrix, dtype=np.float64) * (tile / crop_size)  # frame -> tile-sized crop
    gray = warp_crop(rgb, m_tile, tile, gray=True)
    pts_tile = apply_affine(m_tile, face.landmarks)
    label = face.label
    k = class_names.index(label) if label in class_names else int(np.argmax(face.probs))
    has_aus = label in EXPRESSION_AUS and bool(EXPRESSION_AUS[label])
    aus = aus_for(label) if has_aus else ()

    att = _normalise(_upsample(face.attention, tile))
    cam = _normalise(np.maximum(_upsample(face.cams[k], tile), 0)) if face.cams is not None else None
    # The AU map at the crop's resolution (as the cosine uses it), shown upsampled.
    au_small = expression_map(apply_affine(face.align_matrix, face.landmarks), crop_size, label, crop_size) \
        if has_aus else None
    au_map = None if au_small is None else np.clip(_upsample(au_small, tile), 0, 1)
    au_tile = _overlay_tile(gray, au_map)
    if aus:
        au_tile = draw_au_regions(au_tile, pts_tile, aus, label="code", thickness=max(1, tile // 120),
                                  font_scale=font_px / 36)
    cam_title = f"CAM {label}" if text_width(f"CAM {label}", font_px) <= tile else "CAM"
    tiles = [("attention", _overlay_tile(gray, att)), (cam_title, _overlay_tile(gray, cam)),
             ("AU map" if has_aus else "AU map: none", au_tile)]
    bars_w = round(tile * 1.3)
    width = gap + len(tiles) * (tile + gap) + bars_w + gap
    height = title_h + tile + gap
    panel = np.empty((height, width, 3), dtype=np.uint8)
    panel[:] = PANEL_BG
    for i, (title, img) in enumerate(tiles):
        x = gap + i * (tile + gap)
        panel[title_h:title_h + tile, x:x + tile] = img
        put_text(panel, title, x, title_h / 2, font_px, TEXT)
    # Per-AU attention shares (for neutral, which has no AUs: the AUs with the most attention).
    x = gap + len(tiles) * (tile + gap)
    cos = face.att_au_cosine
    head = "attention in AUs" + ("" if cos is None else f"  cos {cos:.2f}")
    put_text(panel, head if text_width(head, font_px) <= bars_w else head.replace("attention in AUs", "AUs"),
             x, title_h / 2, font_px, TEXT)
    shown = aus or tuple(ACTION_UNITS[n] for n in sorted(face.au_attention_share,
                                                         key=lambda n: -face.au_attention_share[n])[:5])
    if not shown:
        return panel
    row = min(round(font_px * 2.4), tile // len(shown))
    fs = max(9, min(font_px, round(row / 2.4)))
    longest = max((f"{au.code} {au.name}" for au in shown), key=lambda t: text_width(t, fs))
    while fs > 9 and text_width(longest, fs) > bars_w - gap:
        fs -= 1
    pct_w = text_width("100%", fs)
    top = max((face.au_attention_share.get(au.number, 0.0) for au in shown), default=0.0) or 1.0
    for j, au in enumerate(shown):
        y = title_h + j * row
        share = face.au_attention_share.get(au.number, 0.0)
        colour = au_colour(au.number)
        put_text(panel, f"{au.code} {au.name}", x, y + row * 0.3, fs, colour)
        bh = max(3, row // 5)
        by = round(y + row * 0.7 - bh / 2)
        fill_w = round((bars_w - gap - pct_w - gap) * share / top)
        fill_rounded(panel, x, by, max(fill_w, bh), bh, bh // 2, colour)
        put_text(panel, f"{100 * share:.0f}%", x + max(fill_w, bh) + gap, by + bh / 2, fs, TEXT)
    return panel
