from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from reid.degrade import DEGRADATIONS, degrade, lq_protocol, random_degradation

from .reid_testdata import MARKET


@pytest.fixture(scope="module")
def crop() -> Image.Image:
    path = sorted((MARKET / "query").glob("*.jpg"))[0]
    return Image.open(path).convert("RGB")


def _mse(a: Image.Image, b: Image.Image) -> float:
    return float(np.mean((np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)) ** 2))


@pytest.mark.parametrize("kind", sorted(DEGRADATIONS))
def test_each_degradation_changes_pixels_keeps_size_and_grows_with_severity(crop, kind):
    outs = [degrade(crop, kind, s, np.random.default_rng(0)) for s in (1, 3, 5)]
    assert all(o.size == crop.size and o.mode == "RGB" for o in outs)
    errors = [_mse(crop, o) for o in outs]
    assert errors[0] > 1.0
    assert errors[0] < errors[1] < errors[2]


def test_bad_kind_or_severity(crop):
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(crop, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        degrade(crop, "jpeg", 6)


def test_lq_protocol_is_fixed_by_file_name(crop):
    a = lq_protocol(crop, "0955_c1s4_059561_01.jpg")
    b = lq_protocol(crop, "0955_c1s4_059561_01.jpg")
    c = lq_protocol(crop, "0957_c2s2_117127_07.jpg")
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert _mse(crop, a) > 1.0


def test_random_degradation_is_seeded(crop):
    a = random_degradation(crop, np.random.default_rng(3))
    b = random_degradation(crop, np.random.default_rng(3))
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_severity_scales_with_height(crop):
    big = crop.resize((crop.width * 2, crop.height * 2))
    small_err = _mse(crop, degrade(crop, "pixelate", 3))
    big_out = degrade(big, "pixelate", 3).resize(crop.size, Image.Resampling.BOX)
    # the same severity destroys about as much detail at 2x the size
    assert _mse(crop, big_out) == pytest.approx(small_err, rel=0.6)
