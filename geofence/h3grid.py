"""Vectorised H3 cell lookup for many points: the first half of H3's `latLngToCell`, in numba.

H3 finds a point's cell in two steps: (1) closest icosahedron face, gnomonic
projection, quantisation to the hexagon lattice, giving face-local `(face, i, j, k)`;
(2) encoding as a 64-bit index (base cell, digits, pentagon rotations). Step 2 is a
re-labelling, so a cover keyed by step 1's coordinates (computed from each cover
cell's centre with this same code) answers exactly what one keyed by H3 indexes
would; we port only step 1, with H3's tables and quantiser (faceijk.c, coordijk.c).
h3-py's `latlng_to_cell` is one Python call per point (~1 µs, a cap near 1 M
points/s) and h3ronpy's vectorised one measured 2.7 M/s here; this kernel does
~10 M/s on one core. A cell straddling an icosahedron face edge has different
coordinates on either face, so points within four cell edges of a face edge are
flagged and resolved through h3-py's real index (0.2 % of the Earth at res 9, none of
a typical city). The trigonometry is rearranged for speed and so differs from H3's
in the last bits, which moves a point by nanometres; zones.py shows why any error
below its one-metre margin cannot change an answer. tests/geofence/test_h3grid.py
checks the kernel against h3-py.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Icosahedron face centres (lat, lng in radians) and the azimuth of each face's
# Class II i-axis, copied from H3's faceijk.c. Face centre xyz is derived from the
# lat/lng (H3 stores it rounded to 16 digits; a last-bit difference moves only
# points within ~1e-9 m of a face edge, and those are guarded anyway).
_FACE_CENTER_GEO = np.array(
    [
        [0.803582649718989942, 1.248397419617396099],
        [1.307747883455638156, 2.536945009877921159],
        [1.054751253523952054, -1.347517358900396623],
        [0.600191595538186799, -0.450603909469755746],
        [0.491715428198773866, 0.401988202911306943],
        [0.172745327415618701, 1.678146885280433686],
        [0.605929321571350690, 2.953923329812411617],
        [0.427370518328979641, -1.888876200336285401],
        [-0.079066118549212831, -0.733429513380867741],
        [-0.230961644455383637, 0.506495587332349035],
        [0.079066118549212831, 2.408163140208925497],
        [0.230961644455383637, -2.635097066257444203],
        [-0.172745327415618701, -1.463445768309359553],
        [-0.605929321571350690, -0.187669323777381622],
        [-0.427370518328979641, 1.252716453253507838],
        [-0.600191595538186799, 2.690988744120037492],
        [-0.491715428198773866, -2.739604450678486295],
        [-0.803582649718989942, -1.893195233972397139],
        [-1.307747883455638156, -0.604647643711872080],
        [-1.054751253523952054, 1.794075294689396615],
    ]
)
_FACE_CENTER_XYZ = np.array(
    [
        [0.2199307791404606, 0.6583691780274996, 0.7198475378926182],
        [-0.2139234834501421, 0.1478171829550703, 0.9656017935214205],
        [0.1092625278784797, -0.4811951572873210, 0.8697775121287253],
        [0.7428567301586791, -0.3593941678278028, 0.5648005936517033],
        [0.8112534709140969, 0.3448953237639384, 0.4721387736413930],
        [-0.1055498149613921, 0.9794457296411413, 0.1718874610009365],
        [-0.8075407579970092, 0.1533552485898818, 0.5695261994882688],
        [-0.2846148069787907, -0.8644080972654206, 0.4144792552473539],
        [0.7405621473854482, -0.6673299564565524, -0.0789837646326737],
        [0.8512303986474293, 0.4722343788582681, -0.2289137388687808],
        [-0.7405621473854481, 0.6673299564565524, 0.0789837646326737],
        [-0.8512303986474292, -0.4722343788582682, 0.2289137388687808],
        [0.1055498149613919, -0.9794457296411413, -0.1718874610009365],
        [0.8075407579970092, -0.1533552485898819, -0.5695261994882688],
        [0.2846148069787908, 0.8644080972654204, -0.4144792552473539],
        [-0.7428567301586791, 0.3593941678278027, -0.5648005936517033],
        [-0.8112534709140971, -0.3448953237639382, -0.4721387736413930],
        [-0.2199307791404607, -0.6583691780274996, -0.7198475378926182],
        [0.2139234834501420, -0.1478171829550704, -0.9656017935214205],
        [-0.1092625278784796, 0.4811951572873210, -0.8697775121287253],
    ]
)
_FACE_AXIS_AZ_CII = np.array(
    [
        5.619958268523939882, 5.760339081714187279, 0.780213654393430055,
        0.430469363979999913, 6.130269123335111400, 2.692877706530642877,
        2.982963003477243874, 3.532912002790141181, 3.494305004259568154,
        3.003214169499538391, 5.930472956509811562, 0.138378484090254847,
        0.448714947059150361, 0.158629650112549365, 5.891865957979238535,
        2.711123289609793325, 3.294508837434268316, 3.804819692245439833,
        3.664438879055192436, 2.361378999196363184,
    ]
)

_M_AP7_ROT_RADS = 0.333473172251832115336090755351601070065900389
_RES0_U_GNOMONIC = 0.38196601125010500003
_M_SQRT7 = 2.6457513110645905905016157536392604257102
_M_RSIN60 = 1.1547005383792515290182975610039149112953
_EPSILON = 1.0e-16
EARTH_RADIUS_M = 6371007.180918475  # H3's authalic radius

# Key layout: face (5 bits) | i | j | k, 19 bits each. Normalised ijk are >= 0; at
# res 12 they stay below 7**6 * 3 < 2**19. Finer resolutions are refused.
_IJK_BITS = 19
MAX_RESOLUTION = 12
# sqrt(7)^res / RES0_U_GNOMONIC: hex2d units of resolution `res` per unit of tan(r)
_RES_SCALE = np.array([_M_SQRT7 ** r / _RES0_U_GNOMONIC for r in range(MAX_RESOLUTION + 1)])

# Per-face constants so the kernel needs only sin/cos of the point's lat and lng:
# sin/cos of the face centre, and of the i-axis azimuth (pre-rotated for Class III).
_FACE_SIN_LAT = np.sin(_FACE_CENTER_GEO[:, 0])
_FACE_COS_LAT = np.cos(_FACE_CENTER_GEO[:, 0])
_FACE_SIN_LNG = np.sin(_FACE_CENTER_GEO[:, 1])
_FACE_COS_LNG = np.cos(_FACE_CENTER_GEO[:, 1])
_AXIS_COS = np.stack([np.cos(_FACE_AXIS_AZ_CII), np.cos(_FACE_AXIS_AZ_CII - _M_AP7_ROT_RADS)])
_AXIS_SIN = np.stack([np.sin(_FACE_AXIS_AZ_CII), np.sin(_FACE_AXIS_AZ_CII - _M_AP7_ROT_RADS)])

# sin/cos by table + Taylor: libm's sin/cos cost ~10x more. Angles are split as
# k/64 + d with |d| <= 1/128; k/64 is exact in binary, the table holds sin/cos(k/64),
# and the Taylor series in d below are accurate to ~1e-16 (the first dropped terms
# are below 1e-20), so results match libm to a few ulps.
_TRIG_STEPS_PER_RAD = 64.0
_TRIG_OFFSET = 256  # covers |angle| <= 4 rad
_TRIG_SIN = np.sin((np.arange(2 * _TRIG_OFFSET + 1) - _TRIG_OFFSET) / _TRIG_STEPS_PER_RAD)
_TRIG_COS = np.cos((np.arange(2 * _TRIG_OFFSET + 1) - _TRIG_OFFSET) / _TRIG_STEPS_PER_RAD)

# Face lookup by 1-degree tile: the closest-face search over 20 faces was the other
# half of the kernel. A tile gets a face only if its centre is farther from every
# face edge than the tile's radius plus the face-edge guard, which makes the face
# right for every point of the tile and those points not "near" (see face_table).
_TILE_RADIUS_RAD = math.radians(0.8)  # >= the centre-to-corner distance of a 1x1 degree tile


@numba.njit(cache=True, inline="always")
def _sincos(a: float) -> tuple[float, float]:
    k = int(math.floor(a * _TRIG_STEPS_PER_RAD + 0.5))
    d = a - k / _TRIG_STEPS_PER_RAD
    d2 = d * d
    sd = d * (1.0 - d2 / 6.0 * (1.0 - d2 / 20.0 * (1.0 - d2 / 42.0)))
    cd = 1.0 - d2 / 2.0 * (1.0 - d2 / 12.0 * (1.0 - d2 / 30.0 * (1.0 - d2 / 56.0)))
    sk = _TRIG_SIN[k + _TRIG_OFFSET]
    ck = _TRIG_COS[k + _TRIG_OFFSET]
    return sk * cd + ck * sd, ck * cd - sk * sd


@numba.njit(cache=True, inline="always")
def _closest_faces(x: float, y: float, z: float) -> tuple[int, float, float]:
    """(closest face, its squared chord distance, the second smallest one)."""
    face = 0
    sqd = 5.0
    sqd2 = 5.0
    for f in range(20):
        dx = _FACE_CENTER_XYZ[f, 0] - x
        dy = _FACE_CENTER_XYZ[f, 1] - y
        dz = _FACE_CENTER_XYZ[f, 2] - z
        d = dx * dx + dy * dy + dz * dz
        if d < sqd:
            sqd2 = sqd
            sqd = d
            face = f
        elif d < sqd2:
            sqd2 = d
    return face, sqd, sqd2


@numba.njit(cache=True)
def face_ijk_key(lat_rad: float, lng_rad: float, res: int, guard_sin: float,
                 tiles: np.ndarray) -> tuple[int, bool]:
    """(key, near_face_edge) for one point; key packs H3's (face, i, j, k) at `res`.

    Same geometry as H3's _geoToHex2d, rearranged to avoid acos/atan2/tan: the
    gnomonic radius tan(acos(c)) is sqrt(1-c^2)/c, and (cos, sin) of the angle from
    the face's i-axis come from rotating the azimuth vector. This changes results
    only in the last bits, i.e. for points nanometres from a hexagon edge, which the
    cover's safety margin (see zones.py) absorbs. `tiles` is face_table(res).
    """
    sin_lat, cos_lat = _sincos(lat_rad)
    sin_lng, cos_lng = _sincos(lng_rad)
    x = cos_lng * cos_lat
    y = sin_lng * cos_lat
    z = sin_lat
    ti = int(math.floor(lat_rad * (180.0 / math.pi))) + 90
    tj = int(math.floor(lng_rad * (180.0 / math.pi))) + 180
    face = -1
    if 0 <= ti < 180 and 0 <= tj < 360:
        face = tiles[ti, tj]
    if face >= 0:
        dx = _FACE_CENTER_XYZ[face, 0] - x
        dy = _FACE_CENTER_XYZ[face, 1] - y
        dz = _FACE_CENTER_XYZ[face, 2] - z
        sqd = dx * dx + dy * dy + dz * dz
        near_edge = False
    else:
        face, sqd, sqd2 = _closest_faces(x, y, z)
        # Distance to the bisector of unit vectors a, b is asin((|p-b|^2-|p-a|^2)/(2|a-b|))
        # and |a-b| <= 2, so this is a lower bound on the distance to any face edge.
        near_edge = (sqd2 - sqd) * 0.25 < guard_sin
    half = sqd * 0.5  # 1 - cos(r), r the angular distance to the face centre
    c = 1.0 - half
    sin2_r = half * (2.0 - half)
    if sin2_r < _EPSILON * _EPSILON:
        vx = 0.0
        vy = 0.0
    else:
        # azimuth from the face centre to the point, as an unnormalised (sin, cos) pair
        sin_dlng = sin_lng * _FACE_COS_LNG[face] - cos_lng * _FACE_SIN_LNG[face]
        cos_dlng = cos_lng * _FACE_COS_LNG[face] + sin_lng * _FACE_SIN_LNG[face]
        az_s = cos_lat * sin_dlng
        az_c = _FACE_COS_LAT[face] * sin_lat - _FACE_SIN_LAT[face] * cos_lat * cos_dlng
        # gnomonic radius tan(r) in res-0 units, scaled to `res`, over |azimuth vector|
        rh = math.sqrt(sin2_r / (az_s * az_s + az_c * az_c)) / c * _RES_SCALE[res]
        cls3 = res % 2
        ca = _AXIS_COS[cls3, face]
        sa = _AXIS_SIN[cls3, face]
        # theta = axis - azimuth
        vx = rh * (ca * az_c + sa * az_s)
        vy = rh * (sa * az_c - ca * az_s)
    return _hex2d_key(face, vx, vy), near_edge


@numba.njit(cache=True, inline="always")
def _hex2d_key(face: int, vx: float, vy: float) -> int:
    """H3's _hex2dToCoordIJK + _ijkNormalize, packed with the face into one int64."""
    a1 = abs(vx)
    a2 = abs(vy)
    x2 = a2 * _M_RSIN60
    x1 = a1 + x2 / 2.0
    m1 = int(x1)
    m2 = int(x2)
    r1 = x1 - m1
    r2 = x2 - m2
    if r1 < 0.5:
        if r1 < 1.0 / 3.0:
            i = m1
            j = m2 if r2 < (1.0 + r1) / 2.0 else m2 + 1
        else:
            j = m2 if r2 < (1.0 - r1) else m2 + 1
            i = m1 + 1 if ((1.0 - r1) <= r2 and r2 < (2.0 * r1)) else m1
    else:
        if r1 < 2.0 / 3.0:
            j = m2 if r2 < (1.0 - r1) else m2 + 1
            i = m1 if ((2.0 * r1 - 1.0) < r2 and r2 < (1.0 - r1)) else m1 + 1
        else:
            i = m1 + 1
            j = m2 if r2 < (r1 / 2.0) else m2 + 1
    if vx < 0.0:
        if j % 2 == 0:
            i = i - 2 * (i - j // 2)
        else:
            i = i - (2 * (i - (j + 1) // 2) + 1)
    if vy < 0.0:
        i = i - (2 * j + 1) // 2
        j = -j
    k = 0
    if i < 0:
        j -= i
        k -= i
        i = 0
    if j < 0:
        i -= j
        k -= j
        j = 0
    if k < 0:
        i -= k
        j -= k
        k = 0
    mn = min(i, j, k)
    if mn > 0:
        i -= mn
        j -= mn
        k -= mn
    return (np.int64(face) << (3 * _IJK_BITS)) | (np.int64(i) << (2 * _IJK_BITS)) | (
        np.int64(j) << _IJK_BITS) | np.int64(k)



@numba.njit(cache=True)
def keys_for_points(lat_deg: np.ndarray, lng_deg: np.ndarray, res: int, guard_sin: float,
                    tiles: np.ndarray):
    """Vectorised `face_ijk_key` over arrays of degrees."""
    n = lat_deg.shape[0]
    keys = np.empty(n, dtype=np.int64)
    near = np.empty(n, dtype=np.bool_)
    d2r = math.pi / 180.0
    for p in range(n):
        keys[p], near[p] = face_ijk_key(lat_deg[p] * d2r, lng_deg[p] * d2r, res, guard_sin, tiles)
    return keys, near


def face_edge_guard_sin(*, res: int) -> float:
    """sin of the guard distance: four average edge lengths, generous for H3's ~2x size spread."""
    import h3

    edge_m = h3.average_hexagon_edge_length(res, unit="m")
    return math.sin(4.0 * edge_m / EARTH_RADIUS_M)


_FACE_TABLES: dict[int, np.ndarray] = {}


def face_table(*, res: int) -> np.ndarray:
    """int8 (180, 360): the face of every point of each 1-degree tile, or -1 if not sure.

    A tile qualifies when its centre's lower bound on the distance to any face edge,
    asin((sqd2 - sqd1) / 4), exceeds the tile radius plus the guard distance: then
    every point of the tile has the same closest face and is not near an edge.
    """
    table = _FACE_TABLES.get(res)
    if table is None:
        lat = np.radians(np.arange(180) - 89.5)[:, None] * np.ones((1, 360))
        lng = np.radians(np.arange(360) - 179.5)[None, :] * np.ones((180, 1))
        xyz = np.stack([np.cos(lat) * np.cos(lng), np.cos(lat) * np.sin(lng), np.sin(lat)], axis=-1)
        sqd = ((xyz[:, :, None, :] - _FACE_CENTER_XYZ[None, None, :, :]) ** 2).sum(axis=-1)
        order = np.sort(sqd, axis=-1)
        bound_rad = np.arcsin(np.clip((order[..., 1] - order[..., 0]) / 4.0, 0.0, 1.0))
        guard_rad = math.asin(min(1.0, face_edge_guard_sin(res=res)))
        ok = bound_rad > _TILE_RADIUS_RAD + guard_rad
        table = np.where(ok, np.argmin(sqd, axis=-1), -1).astype(np.int8)
        # Tiles touching the poles are skipped: there a tile's radius is not 0.8 deg.
        table[0, :] = -1
        table[-1, :] = -1
        _FACE_TABLES[res] = table
    return table
