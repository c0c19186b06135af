import pytest

from framepack_core import InputError
from framepack_core.engine.buckets import buckets, nearest_bucket


def test_640_buckets_are_the_reference_list():
    got = buckets(640)
    assert len(got) == 14
    assert (608, 640) in got and (640, 608) in got and (416, 960) in got and (960, 416) in got


def test_nearest_bucket_matches_the_reference_rule():
    assert nearest_bucket(640, 640) == (640, 608)  # square: tie between 608x640 and 640x608, the later wins
    assert nearest_bucket(1080, 1920) == (480, 832)
    assert nearest_bucket(1920, 1080) == (832, 480)
    assert nearest_bucket(768, 1024) == (544, 704)


def test_scaled_buckets_are_multiples_of_16():
    for resolution in (320, 480, 720, 1024):
        for h, w in buckets(resolution):
            assert h % 16 == 0 and w % 16 == 0
    assert nearest_bucket(720, 1280, 320)[0] < nearest_bucket(720, 1280, 640)[0]


@pytest.mark.parametrize("resolution", [0, 64, 5000, 640.5])
def test_bad_resolution(resolution):
    with pytest.raises(InputError, match="resolution"):
        buckets(resolution)
