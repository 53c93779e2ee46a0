"""Reorientation to closest-RAS is exact and invertible, and agrees across storage orientations."""
import numpy as np
import pytest

from medmamba.datasets.orientation import Reorientation, canonical_reorientation

RAS_AS_LPS = np.diag([-1.0, -1.0, 1.0])  # a RAS-stored NIfTI: axes run towards R, A, S


def test_identity_for_ras_storage():
    r = canonical_reorientation(RAS_AS_LPS)
    assert r.permutation == (0, 1, 2) and r.flips == (False, False, False)


def test_lps_storage_flips_first_two_axes():
    r = canonical_reorientation(np.eye(3))
    assert r.permutation == (0, 1, 2) and r.flips == (True, True, False)


def test_permuted_storage():
    # array axis 0 runs superior, axis 1 towards R, axis 2 towards A (a "SRA" file)
    direction = np.zeros((3, 3))
    direction[2, 0] = 1.0   # axis 0 → +z (S)
    direction[0, 1] = -1.0  # axis 1 → -x LPS = R
    direction[1, 2] = -1.0  # axis 2 → A
    r = canonical_reorientation(direction)
    assert r.permutation == (1, 2, 0) and not any(r.flips)


def test_oblique_maps_to_closest_axes():
    angle = np.deg2rad(12)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    identity = canonical_reorientation(RAS_AS_LPS @ rot)
    assert identity.permutation == (0, 1, 2) and not any(identity.flips)


@pytest.mark.parametrize("ndim", [2, 3])
def test_apply_invert_round_trip(ndim):
    rng = np.random.default_rng(0)
    shape = (2, 3, 4, 5)[: ndim + 1]
    x = rng.normal(size=shape)
    for perm in ([1, 0] if ndim == 2 else [2, 0, 1], list(range(ndim))):
        r = Reorientation(tuple(perm), tuple(bool(v) for v in rng.integers(0, 2, ndim)))
        y = r.apply(x)
        assert y.shape[1:] == tuple(shape[1 + p] for p in perm)
        np.testing.assert_array_equal(r.invert(y), x)
        assert Reorientation.from_dict(r.to_dict()) == r


def test_same_anatomy_same_canonical_array():
    """One volume stored RAS and stored LPS (flipped x, y) gives the same canonical array."""
    rng = np.random.default_rng(1)
    ras_array = rng.normal(size=(1, 4, 5, 6))
    lps_array = ras_array[:, ::-1, ::-1, :]
    a = canonical_reorientation(RAS_AS_LPS).apply(ras_array)
    b = canonical_reorientation(np.eye(3)).apply(lps_array)
    np.testing.assert_array_equal(a, b)
    assert canonical_reorientation(np.eye(3)).spacing([1.0, 2.0, 3.0]) == [1.0, 2.0, 3.0]
