"""Stratified, seeded sampling plans."""
import numpy as np

from medexport.imaging._sampling import plan, spread, top_up


def test_spread_covers_the_whole_range_evenly_and_is_seeded():
    picks = spread(100, 4, np.random.default_rng(3))
    assert len(picks) == 4 and len(set(picks)) == 4
    assert np.all(np.diff(picks) == 25)                     # evenly spaced
    assert picks[0] < 25 and picks[-1] >= 75                # from the first to the last quarter
    assert np.array_equal(picks, spread(100, 4, np.random.default_rng(3)))
    assert np.array_equal(spread(7, None, np.random.default_rng(0)), np.arange(7))
    assert np.array_equal(spread(7, 10, np.random.default_rng(0)), np.arange(7))


def test_plan_gives_every_source_a_share_when_the_cap_allows():
    order, quota = plan(4, 10, np.random.default_rng(0))
    assert sorted(order) == [0, 1, 2, 3]
    assert quota.sum() == 10 and set(quota) == {2, 3}


def test_plan_below_the_number_of_sources_takes_one_from_each_in_seeded_order():
    order_a, quota = plan(10, 3, np.random.default_rng(1))
    order_b, _ = plan(10, 3, np.random.default_rng(1))
    assert np.array_equal(order_a, order_b) and set(quota) == {1}


def test_top_up_respects_each_sources_spare_images():
    assert top_up(10, {0: 1, 1: 20, 2: 20}) == {0: 1, 1: 5, 2: 4}
    assert top_up(10, {0: 2, 1: 3}) == {0: 2, 1: 3}          # not enough anywhere: take all there is
