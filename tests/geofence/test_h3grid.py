"""The numba face-ijk cell lookup agrees with h3-py's latlng_to_cell."""

from __future__ import annotations

import h3
import numpy as np
import pytest

from geofence.h3grid import face_edge_guard_sin, face_table, keys_for_points


@pytest.mark.parametrize("resolution", [5, 9, 12])
def test_points_get_the_key_of_their_h3_cell_centre(resolution):
    rng = np.random.default_rng(resolution)
    n = 20_000
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))  # uniform on the sphere
    lng = rng.uniform(-180, 180, n)
    guard = face_edge_guard_sin(res=resolution)
    keys, near = keys_for_points(lat, lng, resolution, guard, face_table(res=resolution))
    cells = [h3.latlng_to_cell(a, b, resolution) for a, b in zip(lat.tolist(), lng.tolist())]
    centres = np.array([h3.cell_to_latlng(c) for c in cells])
    centre_keys, _ = keys_for_points(centres[:, 0].copy(), centres[:, 1].copy(), resolution, guard,
                                     face_table(res=resolution))
    # Away from icosahedron face edges a point and its cell's centre share the key ...
    assert np.array_equal(keys[~near], centre_keys[~near])
    # ... and distinct cells never share a key.
    seen: dict[int, str] = {}
    for key, cell in zip(keys.tolist(), cells):
        assert seen.setdefault(key, cell) == cell
