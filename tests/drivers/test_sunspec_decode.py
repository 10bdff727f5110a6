"""The precomputed decoder of a model's registers gives what the point-by-point codec gives
(`_raw_from_regs`, then `_scaled`, which repeating groups still use): for every model
pysunspec2 defines, whole and as prefixes, with "not implemented" words, negative values,
scale factors read in the block, carried from an earlier read or unknown."""

from __future__ import annotations

import random
from importlib import resources

import pytest

from drivers.sunspec import models as sunspec


def every_model() -> list[int]:
    folder = resources.files("sunspec2").joinpath("models/json")
    ids = sorted(int(f.name[6:-5]) for f in folder.iterdir()
                 if f.name.startswith("model_") and f.name[6:-5].isdigit())
    out = []
    for mid in ids:
        try:
            sunspec.model(mid)
        except sunspec.SunSpecError:
            continue  # a definition the codec does not lay out (not served, not polled)
        out.append(mid)
    return out


def reference(mdef: sunspec.ModelDef, regs: list[int], sfs: dict) -> dict:
    present = {k: p for k, p in mdef.points.items() if p.offset + p.size <= len(regs)}
    raw = {k: sunspec._raw_from_regs(p, regs[p.offset:p.offset + p.size])
           for k, p in present.items()}
    return sunspec._scaled(present, raw, sfs)


def registers(mdef: sunspec.ModelDef, rng: random.Random) -> list[int]:
    """Random words, with each point's "not implemented" value, negatives and small scale
    factors mixed in."""
    regs = [rng.randrange(1 << 16) for _ in range(mdef.length + 2)]
    for p in mdef.points.values():
        roll = rng.random()
        if p.type == "sunssf":
            regs[p.offset] = 0x8000 if roll < 0.2 else rng.randrange(-3, 4) & 0xFFFF
        elif roll < 0.25:
            regs[p.offset:p.offset + p.size] = sunspec.encode_point(p, None)
        elif roll < 0.4:
            regs[p.offset] = 0xFFFF if p.size > 1 else 0x8001
    return regs


@pytest.mark.parametrize("seed", range(3))
def test_decode_matches_the_point_by_point_codec_for_every_model(seed):
    rng = random.Random(seed)
    models = every_model()
    assert len(models) > 50 and {1, 103, 124, 203, 701, 704, 802} <= set(models)
    for mid in models:
        mdef = sunspec.model(mid)
        regs = registers(mdef, rng)
        sf_names = [p.name for p in mdef.points.values() if p.type == "sunssf"]
        carried = {name: rng.choice((None, rng.randrange(-2, 3))) for name in sf_names}
        cuts = {len(regs), rng.randrange(2, len(regs) + 1), rng.randrange(2, len(regs) + 1)}
        for n in cuts:
            for sfs in ({}, carried):
                got = sunspec.decode(mdef, regs[:n], sfs)
                want = reference(mdef, regs[:n], sfs)
                assert got == want and list(got) == list(want), (mid, n)
                assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
            present = {k for k, p in mdef.points.items() if p.offset + p.size <= n}
            assert set(sunspec.sunssf_points(mdef, n)) == present & set(sf_names)
