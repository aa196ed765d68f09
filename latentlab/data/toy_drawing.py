"""Drawing toy faces: the unlabeled look of a face (`sample_look`) and the painter for each feature (`draw_face`).

Faces are drawn on a 4x supersampled canvas in face-relative units and downsampled with Lanczos,
so edges are antialiased at any size. Drawing uses no randomness: every variation is in `Look`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SUPERSAMPLE = 4  # draw at 4x and downsample with LANCZOS: antialiased edges at any size

_SKIN_TONES = ((238, 192, 156), (226, 174, 136), (200, 142, 102), (172, 116, 80), (136, 90, 60), (104, 68, 46))
_PALE = np.array((253, 236, 228))
_IRIS = ((70, 45, 30), (60, 100, 150), (70, 110, 70), (30, 25, 25))
_HATS = ((200, 40, 45), (40, 80, 190), (40, 150, 80), (120, 50, 160), (230, 130, 30), (20, 140, 150))
_FRAMES = ((20, 20, 24), (70, 40, 25), (25, 35, 90))
_LIPS = np.array((214, 112, 118))


@dataclass(frozen=True)
class Look:
    """Everything about a face that is not labeled, in unit-square and face units."""

    bg_top: np.ndarray
    bg_bottom: np.ndarray
    cx: float
    cy: float
    a: float  # face half-width (image widths)
    b: float  # face half-height (image widths)
    skin: np.ndarray
    hair_jitter: np.ndarray
    hair_volume: float
    long_hair: bool
    eye_v: float
    eye_u: float
    eye_scale: float
    iris: tuple[int, int, int]
    brow_tilt: float
    nose_len: float
    mouth_v: float
    mouth_u: float
    clothes: np.ndarray
    hat: tuple[int, int, int]
    hat_brim: bool
    frame: tuple[int, int, int]
    round_lenses: bool
    beard_strength: float
    fringe_teeth: int


def sample_look(rng: np.random.Generator) -> Look:
    """Draw every unlabeled variation, always the same draws in the same order."""
    grey = rng.uniform(90, 200)
    bg_top = 0.45 * rng.uniform(30, 240, 3) + 0.55 * grey
    bg_bottom = np.clip(bg_top * rng.uniform(0.65, 1.1), 0, 255)
    scale = rng.uniform(0.92, 1.06)
    dx, dy = rng.uniform(-0.03, 0.03, 2)
    a = 0.275 * scale * rng.uniform(0.94, 1.06)
    return Look(
        bg_top=bg_top,
        bg_bottom=bg_bottom,
        cx=0.5 + dx,
        cy=0.54 + dy,
        a=a,
        b=a * rng.uniform(1.22, 1.40),
        skin=np.asarray(_SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))]) + rng.uniform(-8, 8, 3),
        hair_jitter=rng.uniform(-12, 12, 3),
        hair_volume=rng.uniform(1.08, 1.22),
        long_hair=bool(rng.random() < 0.5),
        eye_v=rng.uniform(-0.2, -0.12),
        eye_u=rng.uniform(0.38, 0.46),
        eye_scale=rng.uniform(0.9, 1.12),
        iris=_IRIS[int(rng.integers(len(_IRIS)))],
        brow_tilt=rng.uniform(-0.04, 0.05),
        nose_len=rng.uniform(0.16, 0.26),
        mouth_v=rng.uniform(0.44, 0.52),
        mouth_u=rng.uniform(0.36, 0.46),
        clothes=rng.uniform(30, 230, 3),
        hat=_HATS[int(rng.integers(len(_HATS)))],
        hat_brim=bool(rng.random() < 0.5),
        frame=_FRAMES[int(rng.integers(len(_FRAMES)))],
        round_lenses=bool(rng.random() < 0.5),
        beard_strength=rng.uniform(0.55, 0.75),
        fringe_teeth=int(rng.integers(3, 6)),
    )


def draw_face(look: Look, on: dict[str, bool], hair: tuple[int, int, int], size: int) -> Image.Image:
    """Draw a face with the attributes `on` and base `hair` colour -> RGB PIL image (size, size)."""
    skin = 0.25 * look.skin + 0.75 * _PALE if on["Pale_Skin"] else look.skin
    hair_rgb = np.clip(np.asarray(hair) + look.hair_jitter, 0, 255)
    canvas = _Canvas(look, size)
    _back_hair(canvas, hair_rgb)
    _body(canvas, skin)
    _face(canvas, skin, male=on["Male"])
    _hair_cap(canvas, hair_rgb, bangs=on["Bangs"])
    _eyes(canvas, hair_rgb, male=on["Male"])
    _nose(canvas, skin)
    _mouth(canvas, smiling=on["Smiling"], open_=on["Mouth_Slightly_Open"])
    if on["Eyeglasses"]:
        _glasses(canvas)
    if on["Wearing_Hat"]:
        _hat(canvas)
    return canvas.image.resize((size, size), Image.Resampling.LANCZOS)


class _Canvas:
    """A supersampled RGB canvas with face-relative coordinates: (u, v) in [-1, 1] spans the face ellipse."""

    def __init__(self, look: Look, size: int) -> None:
        self.look, self.w = look, size * SUPERSAMPLE
        self.image = Image.fromarray(_gradient(look.bg_top, look.bg_bottom, self.w))
        self.draw = ImageDraw.Draw(self.image)

    def xy(self, u: float, v: float) -> tuple[float, float]:
        """Face units -> canvas pixels."""
        return ((self.look.cx + u * self.look.a) * self.w, (self.look.cy + v * self.look.b) * self.w)

    def box(self, u: float, v: float, ru: float, rv: float) -> tuple[float, float, float, float]:
        """Bounding box of an ellipse centred at (u, v) with radii (ru, rv), in face units."""
        x0, y0 = self.xy(u - ru, v - rv)
        x1, y1 = self.xy(u + ru, v + rv)
        return (x0, y0, x1, y1)

    def px(self, face_units: float) -> int:
        """A line width given in face half-widths, at least one canvas pixel."""
        return max(1, round(face_units * self.look.a * self.w))

    def blend(self, colour: np.ndarray, mask: Image.Image) -> None:
        """Paint `colour` through an L-mode mask (0..255 = transparent..opaque)."""
        self.image.paste(Image.new("RGB", self.image.size, _rgb(colour)), (0, 0), mask)

    def mask(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        layer = Image.new("L", self.image.size, 0)
        return layer, ImageDraw.Draw(layer)


def _back_hair(c: _Canvas, hair: np.ndarray) -> None:
    """Hair behind the head (and down to the shoulders when long): it frames the face and shows under hats."""
    vol = c.look.hair_volume
    edge, width = _rgb(hair * 0.62), c.px(0.035)
    if c.look.long_hair:
        x0, y0 = c.xy(-vol, -0.2)
        x1, y1 = c.xy(vol, 1.25)
        c.draw.rounded_rectangle((x0, y0, x1, y1), radius=c.px(0.4), fill=_rgb(hair), outline=edge, width=width)
    c.draw.ellipse(c.box(0, -0.16, vol, 1.06), fill=_rgb(hair), outline=edge, width=width)
    if c.look.long_hair:  # repaint the overlap so no outline crosses the hair
        x0, y0 = c.xy(-vol + 0.04, -0.2)
        x1, y1 = c.xy(vol - 0.04, 0.6)
        c.draw.rectangle((x0, y0, x1, y1), fill=_rgb(hair))


def _body(c: _Canvas, skin: np.ndarray) -> None:
    """Shoulders in clothes, neck, ears."""
    c.draw.ellipse(c.box(0, 1.95, 2.0, 0.9), fill=_rgb(c.look.clothes))
    x0, y0 = c.xy(-0.42, 0.3)
    x1, y1 = c.xy(0.42, 1.3)
    c.draw.rectangle((x0, y0, x1, y1), fill=_rgb(skin * 0.86))
    for side in (-1, 1):
        c.draw.ellipse(c.box(side * 0.97, c.look.eye_v + 0.12, 0.14, 0.17), fill=_rgb(skin * 0.93))


def _face_outline(c: _Canvas, jaw_power: float, n: int = 96) -> list[tuple[float, float]]:
    """Ellipse on top, superellipse below: power 2 is a round chin, larger powers a squarer jaw."""
    points = []
    for k in range(n):
        t = 2 * math.pi * k / n
        cos, sin = math.cos(t), math.sin(t)
        power = jaw_power if sin > 0 else 2.0
        u = math.copysign(abs(cos) ** (2 / power), cos)
        v = math.copysign(abs(sin) ** (2 / power), sin)
        points.append(c.xy(u, v))
    return points


def _face(c: _Canvas, skin: np.ndarray, *, male: bool) -> None:
    """The face; a male face gets a squarer jaw and stubble shading over jaw, chin and upper lip."""
    outline = _face_outline(c, 3.4 if male else 2.0)
    c.draw.polygon(outline, fill=_rgb(skin))
    if not male:
        return
    mask, draw = c.mask()
    draw.polygon(outline, fill=int(255 * c.look.beard_strength))
    _, top = c.xy(0, 0.16)
    draw.rectangle((0, 0, c.w, top), fill=0)
    draw.ellipse(c.box(0, 0.02, 0.5, 0.17), fill=0)  # keep the cheeks under the nose clear
    mask = mask.filter(ImageFilter.GaussianBlur(c.px(0.05)))
    c.blend(skin * 0.36, mask)  # relative to the skin, so stubble shows on every tone


def _hair_cap(c: _Canvas, hair: np.ndarray, *, bangs: bool) -> None:
    """Hair over the top of the head; bangs add a scalloped fringe down to just above the brows."""
    vol, edge = c.look.hair_volume, _rgb(hair * 0.62)
    c.draw.pieslice(c.box(0, -0.74, vol, 0.5), 180, 360, fill=_rgb(hair), outline=edge, width=c.px(0.035))
    if not bangs:
        return
    teeth = c.look.fringe_teeth
    (x_left, y_top), (x_right, _) = c.xy(-0.92, -0.86), c.xy(0.92, -0.86)
    y_low = c.xy(0, c.look.eye_v - 0.23)[1]
    step = (x_right - x_left) / teeth
    tips = [(x_left + step * (k + 0.5), y_low) for k in range(teeth)]
    notches = [(x_left + step * k, y_low - 0.3 * (y_low - y_top)) for k in range(teeth + 1)]
    outline = [(x_left, y_top), notches[0]]
    for tip, notch in zip(tips, notches[1:], strict=True):
        outline += [tip, notch]
    outline.append((x_right, y_top))
    c.draw.polygon(outline, fill=_rgb(hair), outline=edge, width=c.px(0.05))
    for tip in tips:  # strands: hair texture that bare skin never has, even where the colours are close
        for lean in (0.15, 0.45):
            start = (tip[0] + lean * step, y_top + 0.25 * (y_low - y_top))
            c.draw.line([start, (tip[0] + 0.1 * step, tip[1] - 0.1 * (y_low - y_top))], fill=edge, width=c.px(0.035))


def _eyes(c: _Canvas, hair: np.ndarray, *, male: bool) -> None:
    """Whites, irises, pupils and brows; unlabeled spacing, height, size and iris colour."""
    look = c.look
    er = 0.15 * look.eye_scale
    brow = np.clip(hair * 0.6, 0, 255)
    for side in (-1, 1):
        u, v = side * look.eye_u, look.eye_v
        c.draw.ellipse(c.box(u, v, er, er * 0.55), fill=(250, 250, 248), outline=(60, 40, 35), width=c.px(0.025))
        c.draw.ellipse(c.box(u, v, er * 0.5, er * 0.5), fill=look.iris)
        c.draw.ellipse(c.box(u, v, er * 0.24, er * 0.24), fill=(12, 10, 10))
        inner, outer = c.xy(side * (look.eye_u - 0.17), v - 0.17), c.xy(side * (look.eye_u + 0.19), v - 0.17)
        outer = (outer[0], outer[1] + look.brow_tilt * look.b * c.w)
        c.draw.line([inner, outer], fill=_rgb(brow), width=c.px(0.09 if male else 0.06))


def _nose(c: _Canvas, skin: np.ndarray) -> None:
    y_top, y_tip = -0.02, 0.04 + c.look.nose_len
    shade = _rgb(skin * 0.72)
    c.draw.line([c.xy(0.02, y_top), c.xy(0.06, y_tip)], fill=shade, width=c.px(0.035))
    c.draw.arc(c.box(0, y_tip - 0.02, 0.13, 0.05), 20, 160, fill=shade, width=c.px(0.04))


def _mouth(c: _Canvas, *, smiling: bool, open_: bool) -> None:
    """Closed: a line, curved up at the corners when smiling. Open: a dark mouth with teeth (a grin when smiling)."""
    look = c.look
    half = look.mouth_u * (1.25 if smiling else 1.0)
    curve = 0.24 if smiling else 0.015  # how far the centre sits below the corners, in face half-heights
    ts = np.linspace(-1, 1, 25)
    upper = [c.xy(t * half, look.mouth_v + curve * (1 - t * t) - (0.03 if smiling else 0)) for t in ts]
    lips, line = _rgb(_LIPS), (84, 22, 30)  # pink lips under a dark line: contrast on every skin tone and beard
    if not open_:
        c.draw.line(upper, fill=lips, width=c.px(0.16), joint="curve")
        c.draw.line(upper, fill=line, width=c.px(0.07), joint="curve")
        return
    drop = 0.3 if smiling else 0.22
    lower = [c.xy(t * half * 0.92, look.mouth_v + curve * (1 - t * t) + drop * (1 - t * t) ** 0.8) for t in ts[::-1]]
    c.draw.polygon(upper + lower, fill=(72, 18, 24), outline=lips, width=c.px(0.07))
    teeth = [c.xy(t * half * 0.75, look.mouth_v + curve * (1 - t * t) + 0.02) for t in ts[3:-3]]
    c.draw.line(teeth, fill=(246, 244, 238), width=c.px(0.07))


def _glasses(c: _Canvas) -> None:
    """Dark frames around both eyes, a bridge and arms to the ears; lenses lightly tinted."""
    look = c.look
    r = 0.27 * look.eye_scale
    width = c.px(0.1)
    mask, draw = c.mask()
    boxes = [c.box(side * look.eye_u, look.eye_v, r, r * 0.82) for side in (-1, 1)]
    lens = functools.partial(ImageDraw.ImageDraw.rounded_rectangle, radius=c.px(0.5 if look.round_lenses else 0.08))
    for box in boxes:
        lens(draw, box, fill=60)
    c.blend(np.array((190, 215, 235)), mask)
    for box in boxes:
        lens(c.draw, box, outline=look.frame, width=width)
    bridge_y = c.xy(0, look.eye_v - 0.05)[1]
    c.draw.line([(boxes[0][2], bridge_y), (boxes[1][0], bridge_y)], fill=look.frame, width=width)
    for side, box in ((-1, boxes[0]), (1, boxes[1])):
        edge = box[0] if side < 0 else box[2]
        c.draw.line([(edge, bridge_y), c.xy(side * 0.99, look.eye_v + 0.02)], fill=look.frame, width=width)


def _hat(c: _Canvas) -> None:
    """A beanie or a brimmed hat over the crown; bangs still show below it, hair at the sides."""
    look = c.look
    base_v = -0.86
    colour = np.asarray(look.hat)
    c.draw.pieslice(c.box(0, base_v, 1.2 * look.hair_volume, 0.62), 180, 360, fill=look.hat)
    x0, y0 = c.xy(-1.2 * look.hair_volume, base_v - 0.14)
    x1, y1 = c.xy(1.2 * look.hair_volume, base_v + 0.03)
    c.draw.rounded_rectangle((x0, y0, x1, y1), radius=c.px(0.06), fill=_rgb(colour * 0.7))
    if look.hat_brim:
        c.draw.ellipse(c.box(0, base_v + 0.02, 1.55, 0.1), fill=_rgb(colour * 0.85))
    else:
        c.draw.ellipse(c.box(0, base_v - 0.66, 0.16, 0.1), fill=_rgb(colour * 0.7))


def _gradient(top: np.ndarray, bottom: np.ndarray, w: int) -> np.ndarray:
    """A vertical background gradient, uint8 (w, w, 3)."""
    t = np.linspace(0.0, 1.0, w)[:, None, None]
    rows = (1 - t) * top[None, None, :] + t * bottom[None, None, :]
    return np.broadcast_to(np.clip(rows, 0, 255).astype(np.uint8), (w, w, 3)).copy()


def _rgb(colour: np.ndarray | tuple[float, ...]) -> tuple[int, int, int]:
    r, g, b = (int(round(min(255.0, max(0.0, float(x))))) for x in colour)
    return (r, g, b)
