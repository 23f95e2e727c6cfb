"""The toy world: small seeded RGB scenes of one object on a textured background.

A `Thing` is an object instance (shape, colour, pattern); a `Scene` is one photo
of a thing (its size, position, background and texture seed). Everything is a
pure function of its arguments, so a seed always gives the same pictures.

Personal concepts are things whose combination is held out of pretraining
(`HELD_OUT`); `lookalikes(thing, 1|2)` are things one or two attributes away
(hard negatives / soft positives); random scenes are easy negatives and the
retrieval pool. `photos_of(thing, n, seed)` takes new photos of the same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import combinations, product

import numpy as np
from PIL import Image, ImageDraw

from yoc_assistant.errors import UserInputError

SIZE = 32  # image side in pixels
_SS = 4  # supersampling factor: shapes are drawn at 4x and box-filtered down

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (245, 220, 40),
    "green": (60, 190, 70),
    "blue": (40, 80, 225),
    "purple": (135, 55, 185),
    "pink": (250, 140, 200),
    "white": (248, 248, 248),
}
SHAPES = ("circle", "square", "triangle", "star", "heart", "cross")
PATTERNS = ("plain", "striped", "dotted")
BACKGROUNDS = ("grass", "sand", "snow", "water", "stone", "wood")
SIZES = {"small": 14, "big": 21}  # object diameter in pixels (before jitter)
ATTRIBUTES = ("shape", "colour", "pattern")


@dataclass(frozen=True, order=True)
class Thing:
    """An object instance: the details that make it *this* thing."""

    shape: str
    colour: str
    pattern: str

    def __post_init__(self) -> None:
        for attr, allowed in (("shape", SHAPES), ("colour", COLOURS), ("pattern", PATTERNS)):
            value = getattr(self, attr)
            if value not in allowed:
                raise UserInputError(f"unknown {attr} {value!r}; choose one of {', '.join(allowed)}")

    def describe(self) -> str:
        """'dotted orange star' (a plain thing has no pattern word: 'orange star')."""
        words = [] if self.pattern == "plain" else [self.pattern]
        return " ".join([*words, self.colour, self.shape])

    def distance(self, other: Thing) -> int:
        return sum(getattr(self, a) != getattr(other, a) for a in ATTRIBUTES)

    @classmethod
    def parse(cls, text: str) -> Thing:
        """'orange dotted star' / 'orange star' (any order) -> Thing."""
        words = text.lower().replace("-", " ").split()
        found = {
            "shape": [w for w in words if w in SHAPES],
            "colour": [w for w in words if w in COLOURS],
            "pattern": [w for w in words if w in PATTERNS],
        }
        if len(found["shape"]) != 1 or len(found["colour"]) != 1 or len(found["pattern"]) > 1:
            raise UserInputError(
                f"cannot read a thing from {text!r}: say one colour, one shape and at most one "
                f"pattern, e.g. 'orange dotted star'"
            )
        return cls(found["shape"][0], found["colour"][0], (found["pattern"] or ["plain"])[0])


ALL_THINGS: tuple[Thing, ...] = tuple(Thing(s, c, p) for s, c, p in product(SHAPES, COLOURS, PATTERNS))
# Combinations never shown in pretraining: candidates for personal concepts.
EXAMPLE_THING = Thing("star", "orange", "dotted")
HELD_OUT: frozenset[Thing] = frozenset({
    EXAMPLE_THING,
    Thing("heart", "blue", "striped"),
    Thing("triangle", "pink", "plain"),
    Thing("cross", "yellow", "dotted"),
})
PRETRAIN_THINGS: tuple[Thing, ...] = tuple(t for t in ALL_THINGS if t not in HELD_OUT)


@dataclass(frozen=True)
class Scene:
    """One photo of a thing. `seed` drives the texture and the size jitter."""

    thing: Thing
    size: str
    background: str
    x: int  # centre, pixels
    y: int
    seed: int

    def caption(self) -> str:
        """'a small dotted orange star on grass'."""
        return f"a {self.size} {self.thing.describe()} on {self.background}"

    def diameter(self) -> int:
        return SIZES[self.size] + int(np.random.default_rng(self.seed).integers(-1, 2))


def lookalikes(thing: Thing, distance: int = 1) -> list[Thing]:
    """All things exactly `distance` (1 or 2) attributes away from `thing`, sorted."""
    if distance not in (1, 2):
        raise UserInputError(f"lookalike distance must be 1 or 2, got {distance}")
    choices = {"shape": SHAPES, "colour": tuple(COLOURS), "pattern": PATTERNS}
    out: list[Thing] = []
    for attrs in combinations(ATTRIBUTES, distance):
        options = [[v for v in choices[a] if v != getattr(thing, a)] for a in attrs]
        for values in product(*options):
            out.append(replace(thing, **dict(zip(attrs, values, strict=True))))
    return sorted(out)


def random_thing(rng: np.random.Generator, pool: tuple[Thing, ...] = PRETRAIN_THINGS) -> Thing:
    return pool[int(rng.integers(len(pool)))]


def random_scene(rng: np.random.Generator, thing: Thing | None = None,
                 pool: tuple[Thing, ...] = PRETRAIN_THINGS) -> Scene:
    """A random photo of `thing` (or of a random thing from `pool`)."""
    thing = thing if thing is not None else random_thing(rng, pool)
    size = ("small", "big")[int(rng.integers(2))]
    half = SIZES[size] // 2 + 2
    x, y = (int(v) for v in rng.integers(half, SIZE - half + 1, size=2))
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    return Scene(thing, size, background, x, y, int(rng.integers(2**31 - 1)))


def photos_of(thing: Thing, n: int, seed: int) -> list[Scene]:
    """`n` new photos of the same thing (random size, position, background)."""
    rng = np.random.default_rng([seed, 7919])
    return [random_scene(rng, thing) for _ in range(n)]


def random_scenes(n: int, seed: int, pool: tuple[Thing, ...] = PRETRAIN_THINGS) -> list[Scene]:
    rng = np.random.default_rng([seed, 104729])
    return [random_scene(rng, None, pool) for _ in range(n)]


# -- rendering -------------------------------------------------------------------------------

def _texture(background: str, rng: np.random.Generator) -> np.ndarray:
    """[SIZE, SIZE, 3] float texture in 0..255."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    noise = rng.normal(0.0, 1.0, (SIZE, SIZE)).astype(np.float32)
    if background == "grass":
        blades = rng.normal(0.0, 1.0, (1, SIZE)).repeat(SIZE, 0) * 0.7 + noise * 0.5
        base, amp = np.array([55, 135, 45]), np.array([14, 22, 10])
        return base + blades[..., None] * amp
    if background == "sand":
        base, amp = np.array([222, 196, 140]), np.array([9, 9, 8])
        return base + noise[..., None] * amp
    if background == "snow":
        base, amp = np.array([232, 238, 250]), np.array([5, 5, 3])
        return base + noise[..., None] * amp
    if background == "water":
        phase = rng.uniform(0, 2 * math.pi)
        waves = np.sin(xx * 0.5 + yy * 1.3 + phase) + 0.3 * noise
        return np.array([35, 85, 165]) + waves[..., None] * np.array([12, 18, 22])
    if background == "stone":
        blotch = np.kron(rng.normal(0, 1, (SIZE // 4, SIZE // 4)), np.ones((4, 4))).astype(np.float32)
        shade = blotch * 12 + noise * 4
        return np.array([128, 128, 132]) + shade[..., None]
    if background == "wood":
        offset = int(rng.integers(8))
        seams = ((yy + offset) % 8 == 0).astype(np.float32)
        grain = np.sin(xx * 0.35 + rng.uniform(0, 6)) * 0.5 + noise * 0.4
        return np.array([150, 100, 58]) + grain[..., None] * 10 - seams[..., None] * 45
    raise UserInputError(f"unknown background {background!r}; choose one of {', '.join(BACKGROUNDS)}")


def _shape_points(shape: str) -> list[tuple[float, float]] | None:
    """Polygon in unit coordinates (y down), None for the circle."""
    if shape == "circle":
        return None
    if shape == "square":
        return [(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]
    if shape == "triangle":
        return [(0.0, -0.95), (0.97, 0.8), (-0.97, 0.8)]
    if shape == "star":
        return [((1.0 if i % 2 == 0 else 0.55) * math.cos(-math.pi / 2 + i * math.pi / 5),
                 (1.0 if i % 2 == 0 else 0.55) * math.sin(-math.pi / 2 + i * math.pi / 5) + 0.08)
                for i in range(10)]
    if shape == "heart":
        pts = []
        for i in range(40):
            t = 2 * math.pi * i / 40
            hx = 16 * math.sin(t) ** 3
            hy = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((hx / 17.0, -hy / 17.0 + 0.05))
        return pts
    if shape == "cross":
        a, b = 0.34, 0.95
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a),
                (-b, a), (-b, -a), (-a, -a)]
    raise UserInputError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def _masks(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Fill and outline masks at SIZE*_SS, each float 0..1."""
    side = SIZE * _SS
    r = scene.diameter() * _SS / 2
    cx, cy = (scene.x + 0.5) * _SS, (scene.y + 0.5) * _SS
    fill, line = Image.new("L", (side, side)), Image.new("L", (side, side))
    points = _shape_points(scene.thing.shape)
    df, dl = ImageDraw.Draw(fill), ImageDraw.Draw(line)
    if points is None:
        box = [cx - r, cy - r, cx + r, cy + r]
        dl.ellipse(box, fill=255)
        df.ellipse([cx - r + _SS, cy - r + _SS, cx + r - _SS, cy + r - _SS], fill=255)
    else:
        poly = [(cx + px * r, cy + py * r) for px, py in points]
        dl.polygon(poly, fill=255)
        df.polygon(poly, fill=255, outline=0, width=_SS)  # 1 px outline left for `line`
    f = np.asarray(fill, dtype=np.float32) / 255.0
    outer = np.asarray(line, dtype=np.float32) / 255.0
    return f, np.clip(outer - f, 0.0, 1.0)


def _pattern_mask(scene: Scene) -> np.ndarray:
    side = SIZE * _SS
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    d = scene.diameter()
    period = (4.0 if d < 15 else 5.0) * _SS
    top = (scene.y + 0.5 - d / 2) * _SS
    if scene.thing.pattern == "striped":
        return (((yy - top) % period) < period / 2).astype(np.float32)
    if scene.thing.pattern == "dotted":  # a dot sits on the object's centre
        cx, cy = (scene.x + 0.5) * _SS, (scene.y + 0.5) * _SS
        u = ((xx - cx + period / 2) % period) - period / 2
        v = ((yy - cy + period / 2) % period) - period / 2
        return ((u * u + v * v) < (0.3 * period) ** 2).astype(np.float32)
    return np.zeros((side, side), np.float32)


def _accent(colour: tuple[int, int, int]) -> np.ndarray:
    """The pattern's colour: a darker shade of light colours, a lighter one of dark colours."""
    c = np.array(colour, np.float32)
    luminance = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
    return c * 0.45 if luminance > 140 else c * 0.35 + 255 * 0.65


def render(scene: Scene) -> Image.Image:
    """The scene as a SIZE x SIZE RGB image (deterministic)."""
    rng = np.random.default_rng([scene.seed, 31])
    bg = np.kron(_texture(scene.background, rng), np.ones((_SS, _SS, 1)))
    fill, line = _masks(scene)
    body = np.array(COLOURS[scene.thing.colour], np.float32)
    pattern = _pattern_mask(scene)[..., None]
    obj = body * (1 - pattern) + _accent(COLOURS[scene.thing.colour]) * pattern
    img = bg * (1 - fill[..., None] - line[..., None]) + obj * fill[..., None] + 25.0 * line[..., None]
    small = img.reshape(SIZE, _SS, SIZE, _SS, 3).mean(axis=(1, 3))
    return Image.fromarray(np.clip(small + 0.5, 0, 255).astype(np.uint8), "RGB")


def render_array(scenes: list[Scene]) -> np.ndarray:
    """uint8 [N, SIZE, SIZE, 3]."""
    return np.stack([np.asarray(render(s)) for s in scenes])
