"""What a long run leaves on disk: image grids on a sparse schedule, at client resolution."""
from flcore.generators.images import image_round_due


def test_default_image_schedule_is_one_two_five_and_the_last_round():
    saved = [r for r in range(2000) if image_round_due(r, None, 2000)]
    assert saved == [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 1999]


def test_image_schedule_every_n_and_never():
    assert [r for r in range(7) if image_round_due(r, 3, 7)] == [0, 3, 6]
    assert not any(image_round_due(r, 0, 7) for r in range(7))
