"""Write an example concept folder: photos of one toy instance, its facts, test photos.

An instance is a named thing with its unnamed accent (the colour of its dots, stripes
or mark); `others/` holds the same named thing with other accents first.

    python -m yoc_assistant.toyworld.make_concept                # concepts/sunny (the shipped one)
    python -m yoc_assistant.toyworld.make_concept --thing "blue striped heart" --name bluey \\
        --out /tmp/bluey --photos 5 --held-out 20 --seed 3

Layout (what `yoc demo` reads): `<name>/photo-N.png` (training photos),
`<name>/held-out/` (new photos of the same thing, never trained on),
`<name>/others/` (lookalikes one and two attributes away, and unrelated things),
`<name>/pool/` (random scenes of other things: a retrieval pool for soft positives
and negatives, e.g. `yoc pool add concepts/sunny/pool`),
`about.txt` (facts, `key: value` lines and sentences) and `question.txt`.
Everything is a function of the thing and the seed.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from yoc_assistant.atomic import atomic_path, atomic_write_text
from yoc_assistant.toyworld import world
from yoc_assistant.toyworld.common import CONCEPTS_DIR

EXAMPLE_NAME = "sunny"


def about_text(name: str, thing: world.Thing) -> str:
    pattern = "no pattern" if thing.pattern == "plain" else thing.pattern
    return (
        f"colour: {thing.colour}\n"
        f"shape: {thing.shape}\n"
        f"pattern: {pattern}\n"
        f"{name} is a {thing.describe()}.\n"
        f"{name} was a gift from my friend.\n"
    )


def _save_png(image: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")  # type: ignore[attr-defined]
        tmp.chmod(0o644)


def other_things(thing: world.Thing, n: int, seed: int) -> list[world.Thing]:
    """A third the same named thing with another accent (what words cannot tell apart), a
    third lookalikes one named attribute away, the rest unrelated."""
    rng = np.random.default_rng([seed, 17])
    same, near = world.same_named(thing), world.lookalikes(thing, 1)
    unrelated = [t for t in world.PRETRAIN_THINGS if t.distance(thing) == 3]
    out = []
    for k in range(n):
        pool = (same, near, unrelated)[k % 3]
        out.append(pool[int(rng.integers(len(pool)))])
    return out


def write_concept(out: Path, name: str, thing: world.Thing, photos: int = 5, held_out: int = 6,
                  others: int = 6, seed: int = 1, pool: int = 0) -> Path:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for k, scene in enumerate(world.photos_of(thing, photos, seed), 1):
        _save_png(world.render(scene), out / f"photo-{k}.png")
    for k, scene in enumerate(world.photos_of(thing, held_out, seed + 1000), 1):
        _save_png(world.render(scene), out / "held-out" / f"test-{k}.png")
    rng = np.random.default_rng([seed, 23])
    for k, other in enumerate(other_things(thing, others, seed), 1):
        scene = world.random_scene(rng, other)
        label = f"{other.describe()} {other.accent}".replace(" ", "-")
        _save_png(world.render(scene), out / "others" / f"other-{k}-{label}.png")
    others_pool = tuple(t for t in world.ALL_THINGS if t != thing)  # a pool holds anything but this instance
    for k, scene in enumerate(world.random_scenes(pool, seed + 2000, pool=others_pool), 1):
        _save_png(world.render(scene), out / "pool" / f"scene-{k:03d}.png")
    atomic_write_text(out / "about.txt", about_text(name, thing))
    atomic_write_text(out / "question.txt", f"What is <{name}>'s colour?\n")
    for f in (out / "about.txt", out / "question.txt"):
        f.chmod(0o644)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--thing", default=None, help="e.g. 'orange dotted star' (default: the example)")
    ap.add_argument("--instance", choices=list(world.ACCENTS), default=None,
                    help="the thing's accent (its unnamed detail; default: the first)")
    ap.add_argument("--name", default=EXAMPLE_NAME)
    ap.add_argument("--out", type=Path, default=None, help="default: concepts/<name>")
    ap.add_argument("--photos", type=int, default=5)
    ap.add_argument("--held-out", type=int, default=6)
    ap.add_argument("--others", type=int, default=6)
    ap.add_argument("--pool", type=int, default=600, help="random scenes for the retrieval pool")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="same as the defaults (it is fast)")
    args = ap.parse_args(argv)
    thing = world.Thing.parse(args.thing, accent=args.instance) if args.thing else world.EXAMPLE_THING
    out = args.out or CONCEPTS_DIR / args.name
    write_concept(out, args.name, thing, args.photos, args.held_out, args.others, args.seed, args.pool)
    print(f"wrote {out}: {args.photos} photos of a {thing.label()}, {args.held_out} held-out, "
          f"{args.others} others, {args.pool} pool scenes")


if __name__ == "__main__":
    main()
