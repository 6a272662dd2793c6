"""Sub-code packing: round trips and ELM's own token ids."""

import pathlib

import jax
import numpy as np
import pytest

from elm_jax import tokens

REF = pathlib.Path(__file__).parent / "reference" / "bae_k8"


def test_matches_elm_token_ids():
  """ELM's train_ddp recipe: K=8 split into 2 sub-codes of 4 bits."""
  out = np.load(REF / "outputs.npz")
  codes = np.transpose(out["codes"], (0, 2, 3, 1))  # NCHW -> [B, h, w, K]
  ids = tokens.bits_to_subcodes(codes, 2)
  np.testing.assert_array_equal(ids, out["indices_te2_cd4"])


@pytest.mark.parametrize("k,n", [(16, 1), (16, 2), (20, 2), (24, 2), (24, 3),
                                 (24, 4), (8, 8)])
def test_round_trip(k, n):
  bits = jax.random.bernoulli(jax.random.key(k * 10 + n), 0.5, (2, 4, 4, k))
  ids = tokens.bits_to_subcodes(bits, n)
  assert ids.shape == (2, 16, n) and ids.max() < 2 ** (k // n)
  np.testing.assert_array_equal(tokens.subcodes_to_bits(ids, k, 4), bits)


def test_msb_first_and_raster_order():
  bits = np.zeros((1, 2, 2, 4), np.float32)
  bits[0, 0, 1] = [1, 0, 0, 1]  # row 0, column 1 -> position 1
  ids = np.asarray(tokens.bits_to_subcodes(bits, 2))
  assert ids[0, 1].tolist() == [2, 1]
  assert ids[0, [0, 2, 3]].sum() == 0


def test_bad_split_is_named():
  with pytest.raises(ValueError, match="cannot be split into 3"):
    tokens.bits_to_subcodes(np.zeros((1, 2, 2, 16)), 3)
  with pytest.raises(ValueError, match="grid"):
    tokens.subcodes_to_bits(np.zeros((1, 5, 2), np.int32), 16, 2)


@pytest.mark.parametrize("k,n,p", [(8, 4, 2), (8, 8, 2), (4, 4, 4), (6, 1, 2)])
def test_patch_round_trip(k, n, p):
  bits = jax.random.bernoulli(jax.random.key(k + n + p), 0.5, (2, 8, 8, k))
  ids = tokens.bits_to_subcodes(bits, n, patch=p)
  g = 8 // p
  assert ids.shape == (2, g * g, n) and ids.max() < 2 ** (k * p * p // n)
  np.testing.assert_array_equal(tokens.subcodes_to_bits(ids, k, 8, patch=p), bits)


def test_patch_sub_codes_are_cells_in_raster_order():
  """patch=2, split 4-K: sub-code j of position (r, c) is the code of cell
  (2r + j // 2, 2c + j % 2)."""
  bits = jax.random.bernoulli(jax.random.key(3), 0.5, (1, 4, 4, 8))
  cells = np.asarray(tokens.bits_to_subcodes(bits, 1))[0, :, 0].reshape(4, 4)
  ids = np.asarray(tokens.bits_to_subcodes(bits, 4, patch=2))[0].reshape(2, 2, 4)
  for r in range(2):
    for c in range(2):
      assert ids[r, c].tolist() == [cells[2 * r, 2 * c], cells[2 * r, 2 * c + 1],
                                    cells[2 * r + 1, 2 * c], cells[2 * r + 1, 2 * c + 1]]


def test_bad_patch_is_named():
  with pytest.raises(ValueError, match="patch=3 does not divide the tokenizer's 8x8"):
    tokens.bits_to_subcodes(np.zeros((1, 8, 8, 4)), 1, patch=3)
  with pytest.raises(ValueError, match="16 positions do not form a 2x2 grid"):
    tokens.subcodes_to_bits(np.zeros((1, 16, 4), np.int32), 8, 4, patch=2)
