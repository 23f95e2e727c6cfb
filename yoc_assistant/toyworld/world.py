"""The toy world: small seeded RGB scenes of one or two objects on a textured background.

A `Thing` is an object instance: its named attributes (shape, colour, pattern) and an
unnamed one, its `accent`: the colour of its stripes or dots, or of the mark on a plain
thing. No text anywhere names the accent (captions, QA and every pretraining sentence
speak of shape, colour, pattern, size and background only), yet every picture shows
it, so an accent is what a personal concept has and words cannot say: *my* dotted
orange star has cyan dots, another one has ink-black dots. A `Scene` is one photo of a
thing (its size, position, background and texture seed), or of two things side by
side. Everything is a pure function of its arguments, so a seed always gives the same
pictures.

Named things whose combination is held out of pretraining (`HELD_OUT`, any accent) are
candidates for personal concepts; a personal concept is one instance. Its hardest
negatives are `same_named(thing)` (the same named thing with another accent), then
`lookalikes(thing, 1|2)` (one or two named attributes away, same accent), then random
scenes (easy negatives, the retrieval pool). `photos_of(thing, n, seed)` takes new
photos of the same instance.
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
ATTRIBUTES = ("shape", "colour", "pattern")  # the named attributes
# The unnamed instance attribute. Chosen far (>= 109 in RGB) from every body colour and
# from each other, so the detail survives the 32x32 VQ round trip on any object. The
# names are for code and docs only: none of them is a word of the toy vocabulary.
ACCENTS: dict[str, tuple[int, int, int]] = {
    "ink": (20, 20, 20),
    "cyan": (0, 225, 235),
    "magenta": (230, 20, 230),
    "mint": (150, 255, 200),
}


@dataclass(frozen=True, order=True)
class Thing:
    """An object instance: the details that make it *this* thing."""

    shape: str
    colour: str
    pattern: str
    accent: str = "ink"  # the first accent; every scene of a thing shows its accent

    def __post_init__(self) -> None:
        for attr, allowed in (("shape", SHAPES), ("colour", COLOURS), ("pattern", PATTERNS),
                              ("accent", ACCENTS)):
            value = getattr(self, attr)
            if value not in allowed:
                raise UserInputError(f"unknown {attr} {value!r}; choose one of {', '.join(allowed)}")

    def describe(self) -> str:
        """'dotted orange star' (a plain thing has no pattern word: 'orange star')."""
        words = [] if self.pattern == "plain" else [self.pattern]
        return " ".join([*words, self.colour, self.shape])

    def distance(self, other: Thing) -> int:
        """How many *named* attributes differ (the accent is not one)."""
        return sum(getattr(self, a) != getattr(other, a) for a in ATTRIBUTES)

    def kind(self) -> Thing:
        """The named thing, whatever the accent (its representative has the first accent)."""
        return replace(self, accent=next(iter(ACCENTS)))

    def label(self) -> str:
        """'dotted orange star, cyan accent' (code and docs; never shown to the backbone)."""
        return f"{self.describe()}, {self.accent} accent"

    @classmethod
    def parse(cls, text: str, accent: str | None = None) -> Thing:
        """'orange dotted star' / 'orange star' (any order), optionally with an accent
        name among the words ('dotted orange star cyan') or as `accent` -> Thing."""
        words = text.lower().replace("-", " ").replace(",", " ").split()
        found = {
            "shape": [w for w in words if w in SHAPES],
            "colour": [w for w in words if w in COLOURS],
            "pattern": [w for w in words if w in PATTERNS],
            "accent": [w for w in words if w in ACCENTS] + ([accent] if accent else []),
        }
        if len(found["shape"]) != 1 or len(found["colour"]) != 1 or len(found["pattern"]) > 1 \
                or len(found["accent"]) > 1:
            raise UserInputError(
                f"cannot read a thing from {text!r}: say one colour, one shape, at most one "
                f"pattern and at most one accent ({', '.join(ACCENTS)}), e.g. 'orange dotted star'"
            )
        return cls(found["shape"][0], found["colour"][0], (found["pattern"] or ["plain"])[0],
                   (found["accent"] or [next(iter(ACCENTS))])[0])


# Every instance (named thing x accent), and the named things (one representative each).
ALL_THINGS: tuple[Thing, ...] = tuple(
    Thing(s, c, p, a) for s, c, p, a in product(SHAPES, COLOURS, PATTERNS, ACCENTS))
KINDS: tuple[Thing, ...] = tuple(Thing(s, c, p) for s, c, p in product(SHAPES, COLOURS, PATTERNS))
# Named things never shown in pretraining (in any accent): candidates for personal concepts.
# The example concept is one instance of one of them: *this* dotted orange star, with cyan dots.
EXAMPLE_THING = Thing("star", "orange", "dotted", "cyan")
HELD_OUT_KINDS: frozenset[Thing] = frozenset({
    EXAMPLE_THING.kind(),
    Thing("heart", "blue", "striped"),
    Thing("triangle", "pink", "plain"),
    Thing("cross", "yellow", "dotted"),
})
HELD_OUT: frozenset[Thing] = frozenset(t for t in ALL_THINGS if t.kind() in HELD_OUT_KINDS)
PRETRAIN_THINGS: tuple[Thing, ...] = tuple(t for t in ALL_THINGS if t not in HELD_OUT)


@dataclass(frozen=True)
class Scene:
    """One photo of a thing, or of two (`other` at `ox`, `oy`; both small). `seed` drives
    the texture and the size jitter."""

    thing: Thing
    size: str
    background: str
    x: int  # centre, pixels
    y: int
    seed: int
    other: Thing | None = None
    ox: int = 0
    oy: int = 0

    def caption(self) -> str:
        """'a small dotted orange star on grass' / 'a red star and a blue heart on sand'."""
        if self.other is not None:
            return f"a {self.thing.describe()} and a {self.other.describe()} on {self.background}"
        return f"a {self.size} {self.thing.describe()} on {self.background}"

    def things(self) -> tuple[Thing, ...]:
        return (self.thing,) if self.other is None else (self.thing, self.other)

    def shows(self, thing: Thing) -> bool:
        """Is this instance (accent included) in the photo?"""
        return thing in self.things()

    def shows_kind(self, thing: Thing) -> bool:
        """Is a thing with these named attributes (any accent) in the photo?"""
        return any(t.kind() == thing.kind() for t in self.things())

    def diameter(self) -> int:
        return SIZES[self.size] + int(np.random.default_rng(self.seed).integers(-1, 2))


def same_named(thing: Thing) -> list[Thing]:
    """The same named thing in every other accent: the hardest negatives of an instance."""
    return [replace(thing, accent=a) for a in ACCENTS if a != thing.accent]


def lookalikes(thing: Thing, distance: int = 1) -> list[Thing]:
    """All things exactly `distance` (1 or 2) named attributes away from `thing` (same
    accent), sorted."""
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
                 pool: tuple[Thing, ...] = PRETRAIN_THINGS, *, size: str | None = None,
                 background: str | None = None) -> Scene:
    """A random photo of `thing` (or of a random thing from `pool`); `size` and
    `background` fixed when given."""
    thing = thing if thing is not None else random_thing(rng, pool)
    size = size or ("small", "big")[int(rng.integers(2))]
    half = SIZES[size] // 2 + 2
    x, y = (int(v) for v in rng.integers(half, SIZE - half + 1, size=2))
    background = background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    return Scene(thing, size, background, x, y, int(rng.integers(2**31 - 1)))


def random_pair_scene(rng: np.random.Generator, thing: Thing | None = None,
                      other: Thing | None = None, pool: tuple[Thing, ...] = PRETRAIN_THINGS) -> Scene:
    """A photo of two small things side by side (of other named kinds), in random order."""
    thing = thing if thing is not None else random_thing(rng, pool)
    while other is None or other.kind() == thing.kind():
        other = random_thing(rng, pool)
    if rng.random() < 0.5:
        thing, other = other, thing
    x, ox = int(rng.integers(8, 12)), int(rng.integers(20, 24))
    y, oy = (int(v) for v in rng.integers(9, 24, size=2))
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    return Scene(thing, "small", background, x, y, int(rng.integers(2**31 - 1)), other, ox, oy)


def photos_of(thing: Thing, n: int, seed: int) -> list[Scene]:
    """`n` new photos of the same thing, varied as a person's photos of one thing are:
    near and far in turn (big and small, from a random first one), on backgrounds that do
    not repeat until all have been used, at random positions. (Drawn independently, one
    seed's five photos were all small for every thing; a concept trained on them then
    missed big photos of itself: 0.79 recognized vs 0.96 of small ones, docs/toyworld.md.)"""
    rng = np.random.default_rng([seed, 7919])
    first = int(rng.integers(2))
    backgrounds: list[str] = []
    while len(backgrounds) < n:
        backgrounds += [BACKGROUNDS[int(k)] for k in rng.permutation(len(BACKGROUNDS))]
    return [random_scene(rng, thing, size=("small", "big")[(first + k) % 2], background=backgrounds[k])
            for k in range(n)]


def random_scenes(n: int, seed: int, pool: tuple[Thing, ...] = PRETRAIN_THINGS,
                  pairs: float = 0.0) -> list[Scene]:
    """`n` random photos; a fraction `pairs` of them show two things."""
    rng = np.random.default_rng([seed, 104729])
    if not pairs:
        return [random_scene(rng, None, pool) for _ in range(n)]
    return [random_pair_scene(rng, pool=pool) if rng.random() < pairs else random_scene(rng, None, pool)
            for _ in range(n)]


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


@dataclass(frozen=True)
class _Placed:
    """One object of a scene where it is drawn."""

    thing: Thing
    diameter: int
    x: int
    y: int


def _placed(scene: Scene) -> list[_Placed]:
    d = scene.diameter()
    out = [_Placed(scene.thing, d, scene.x, scene.y)]
    if scene.other is not None:
        out.append(_Placed(scene.other, SIZES["small"] + int(np.random.default_rng([scene.seed, 2]).integers(-1, 2)),
                           scene.ox, scene.oy))
    return out


def _masks(obj: _Placed) -> tuple[np.ndarray, np.ndarray]:
    """Fill and outline masks at SIZE*_SS, each float 0..1."""
    side = SIZE * _SS
    r = obj.diameter * _SS / 2
    cx, cy = (obj.x + 0.5) * _SS, (obj.y + 0.5) * _SS
    fill, line = Image.new("L", (side, side)), Image.new("L", (side, side))
    points = _shape_points(obj.thing.shape)
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


def _pattern_mask(obj: _Placed) -> np.ndarray:
    """Where the accent colour goes: the stripes, the dots, or a plain thing's round mark."""
    side = SIZE * _SS
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    d = obj.diameter
    period = (4.0 if d < 15 else 5.0) * _SS
    top = (obj.y + 0.5 - d / 2) * _SS
    cx, cy = (obj.x + 0.5) * _SS, (obj.y + 0.5) * _SS
    if obj.thing.pattern == "striped":
        return (((yy - top) % period) < period / 2).astype(np.float32)
    if obj.thing.pattern == "dotted":  # a dot sits on the object's centre
        u = ((xx - cx + period / 2) % period) - period / 2
        v = ((yy - cy + period / 2) % period) - period / 2
        return ((u * u + v * v) < (0.3 * period) ** 2).astype(np.float32)
    # plain: one round mark in the middle, about a third of the object across
    mark = (0.17 * d * _SS) ** 2
    return (((xx - cx) ** 2 + (yy - cy) ** 2) < mark).astype(np.float32)


def render(scene: Scene) -> Image.Image:
    """The scene as a SIZE x SIZE RGB image (deterministic)."""
    rng = np.random.default_rng([scene.seed, 31])
    img = np.kron(_texture(scene.background, rng), np.ones((_SS, _SS, 1)))
    for obj in _placed(scene):
        fill, line = _masks(obj)
        body = np.array(COLOURS[obj.thing.colour], np.float32)
        pattern = _pattern_mask(obj)[..., None]
        paint = body * (1 - pattern) + np.array(ACCENTS[obj.thing.accent], np.float32) * pattern
        img = img * (1 - fill[..., None] - line[..., None]) + paint * fill[..., None] + 25.0 * line[..., None]
    small = img.reshape(SIZE, _SS, SIZE, _SS, 3).mean(axis=(1, 3))
    return Image.fromarray(np.clip(small + 0.5, 0, 255).astype(np.uint8), "RGB")


def object_patches(scene: Scene, grid: int) -> np.ndarray:
    """bool [grid * grid], row-major like image tokens: which patches of the photo show
    part of an object (its fill or outline), the rest only background."""
    side = SIZE * _SS
    cover = np.zeros((side, side), np.float32)
    for obj in _placed(scene):
        fill, line = _masks(obj)
        cover = np.maximum(cover, np.maximum(fill, line))
    step = side // grid
    return (cover.reshape(grid, step, grid, step).max(axis=(1, 3)) > 0.25).reshape(-1)


def render_array(scenes: list[Scene]) -> np.ndarray:
    """uint8 [N, SIZE, SIZE, 3]."""
    return np.stack([np.asarray(render(s)) for s in scenes])
