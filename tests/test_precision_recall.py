"""k-NN precision/recall on point sets whose answers are worked out by hand."""

import jax
import numpy as np
import pytest

from elm_jax.evaluation import precision_recall as pr


def _line(xs):
  return np.stack([np.asarray(xs, np.float32), np.zeros(len(xs), np.float32)], 1)


def test_knn_radii_on_a_line():
  # Points 0..9 spaced 1: interior 3rd neighbour at distance 2, ends at 3.
  radii = pr.knn_radii(_line(range(10)), k=3)
  np.testing.assert_allclose(np.sqrt(radii), [3, 2, 2, 2, 2, 2, 2, 2, 2, 3], atol=1e-5)


@pytest.mark.parametrize("use_mesh", [False, True])
@pytest.mark.parametrize("block", [3, 1024])
def test_hand_computed_precision_recall(use_mesh, block):
  real = _line(range(10))
  # Three samples near the middle (inside the real balls of radius 2) and one
  # outlier at 20 (nearest real point 9, radius 3): precision 3/4. The fake
  # balls have radius ~15.4 and cover every real point: recall 1.
  fake = _line([4.5, 4.6, 4.7, 20.0])
  mesh = jax.make_mesh((8,), ("data",)) if use_mesh else None
  got = pr.precision_recall(real, fake, k=3, block=block, mesh=mesh)
  assert got == {"precision": 0.75, "recall": 1.0}


def test_inside_is_inclusive_at_the_radius_and_excludes_beyond():
  real = _line(range(10))
  radii = pr.knn_radii(real, k=3)
  # -3 is exactly at point 0's radius (3); -3.5 is beyond it (and 4.5 from point 1, radius 2).
  got = pr.inside(_line([-3.0, -3.5, 9.0, 12.0, 12.5]), real, radii)
  np.testing.assert_array_equal(got, [True, False, True, True, False])


def test_same_and_disjoint_sets():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 8)).astype(np.float32)
  assert pr.precision_recall(x, x) == {"precision": 1.0, "recall": 1.0}
  assert pr.precision_recall(x, x + 100.0) == {"precision": 0.0, "recall": 0.0}


def test_mode_collapse_keeps_precision_and_loses_recall():
  rng = np.random.default_rng(1)
  real = rng.normal(size=(400, 4)).astype(np.float32)
  fake = 0.05 * rng.normal(size=(400, 4)).astype(np.float32)  # all near the centre
  got = pr.precision_recall(real, fake)
  assert got["precision"] == 1.0
  assert got["recall"] < 0.1


def test_too_few_points_is_an_error():
  with pytest.raises(ValueError, match="N > 3"):
    pr.knn_radii(np.zeros((3, 2), np.float32), k=3)
