from __future__ import annotations

import zlib

import numpy as np
import pytest
from PIL import Image

from reid.degrade import DEGRADATIONS, check_kinds, degrade, lq_protocol, random_degradation

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


NAMES = [f"{i:04d}_c1s1_000000_01.jpg" for i in range(24)]


def test_lq_protocol_draws_kind_then_severity_from_the_file_names_generator(crop):
    # the documented protocol; changing this draw would silently change every published LQ figure
    for name in NAMES[:6]:
        rng = np.random.default_rng([0, zlib.crc32(name.encode())])
        kind = list(DEGRADATIONS)[int(rng.integers(0, 5))]
        expected = degrade(crop, kind, int(rng.integers(1, 6)), rng)
        assert np.array_equal(np.asarray(lq_protocol(crop, name)), np.asarray(expected))


def _outputs(crop, kinds):
    return {np.asarray(degrade(crop, k, s)).tobytes(): k for k in kinds for s in range(1, 6)}


def test_lq_protocol_restricted_to_kinds(crop):
    allowed = _outputs(crop, ("jpeg", "pixelate"))  # both deterministic, so every outcome is enumerable
    seen = {allowed.get(np.asarray(lq_protocol(crop, n, kinds=["pixelate", "jpeg"])).tobytes()) for n in NAMES}
    assert seen == {"jpeg", "pixelate"}  # only these kinds, and both drawn
    assert np.array_equal(np.asarray(lq_protocol(crop, NAMES[0], kinds=None)),
                          np.asarray(lq_protocol(crop, NAMES[0], kinds=list(DEGRADATIONS))))


def test_random_degradation_restricted_to_kinds(crop):
    one = _outputs(crop, ("jpeg", "pixelate"))
    both = {np.asarray(degrade(degrade(crop, a, s), b, t)).tobytes()
            for a, b in (("jpeg", "pixelate"), ("pixelate", "jpeg")) for s in range(1, 6) for t in range(1, 6)}
    outs = [np.asarray(random_degradation(crop, np.random.default_rng(i), kinds=("jpeg", "pixelate"))).tobytes()
            for i in range(12)]
    assert all(o in one or o in both for o in outs)
    assert any(o in both for o in outs) and any(o in one for o in outs)


def test_check_kinds_names_the_unknown_ones():
    assert check_kinds(None) == tuple(DEGRADATIONS)
    assert check_kinds(["jpeg", "pixelate"]) == ("pixelate", "jpeg")  # DEGRADATIONS' order
    with pytest.raises(ValueError, match="'fog'"):
        check_kinds(["jpeg", "fog"])
    with pytest.raises(ValueError, match="none given"):
        check_kinds([])


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


def test_paired_transform_normalizes_the_teachers_input_with_the_teachers_statistics(crop):
    """A teacher of another architecture (timm's tf_ EfficientNets: mean = std = 0.5) gets the same clean
    pixels as the student would, in its own normalization; same geometry and the same erased box."""
    import torch

    from reid.transforms import PairedTrainTransform

    s_mean, s_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    t_mean, t_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def pixels(x, mean, std):
        return x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]

    for erase in (0.0, 1.0):
        torch.manual_seed(3)
        tf = PairedTrainTransform(128, 64, s_mean, s_std, lq_prob=0.0, erase_prob=erase, teacher_mean=t_mean,
                                  teacher_std=t_std)
        student, teacher, degraded = tf(crop)
        assert not degraded and student.shape == teacher.shape == (3, 128, 64)
        kept = (student != 0).any(0) & (teacher != 0).any(0)  # outside the erased box
        assert (~kept).any() == bool(erase)
        torch.testing.assert_close(pixels(teacher, t_mean, t_std)[:, kept], pixels(student, s_mean, s_std)[:, kept],
                                   atol=1e-5, rtol=0)
        assert not torch.allclose(teacher, student)  # the two normalizations differ
        torch.manual_seed(3)
        same_student, same_teacher, _ = PairedTrainTransform(128, 64, s_mean, s_std, erase_prob=erase)(crop)
        torch.testing.assert_close(same_teacher, same_student)  # default: the student's statistics
        torch.testing.assert_close(same_student, student)
