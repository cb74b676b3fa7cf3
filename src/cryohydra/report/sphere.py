"""Maps on the sphere of viewing directions: HEALPix binning and Mollweide / gnomonic drawing.

A viewing direction is the beam in molecule coordinates, the third row of ``R``
(:func:`cryohydra.geometry.rotations.viewing_direction`). HEALPix pixels (``healpy``, RING
order) index the sphere: ``theta`` is the colatitude, ``phi`` the longitude, so a direction
``(x, y, z)`` has latitude ``90 - theta`` and longitude ``phi``. Drawing uses matplotlib's own
Mollweide axes (a HEALPix map sampled on a longitude/latitude grid), so no global pyplot
state is touched.
"""

from __future__ import annotations

import healpy
import numpy as np

__all__ = [
    "directions_to_lonlat",
    "draw_gnomonic",
    "draw_mollweide",
    "gnomonic_coordinates",
    "healpix_counts",
    "healpix_mean",
    "tangent_basis",
]


def healpix_counts(directions: np.ndarray, nside: int) -> np.ndarray:
    """Number of unit vectors ``(N, 3)`` in each of the ``12 nside^2`` HEALPix pixels."""
    pixels = healpy.vec2pix(nside, *np.asarray(directions, dtype=np.float64).T)
    return np.bincount(pixels, minlength=healpy.nside2npix(nside)).astype(np.float64)


def healpix_mean(directions: np.ndarray, values: np.ndarray, nside: int) -> np.ndarray:
    """Mean of ``values (N,)`` over the directions in each pixel (NaN where there are none)."""
    pixels = healpy.vec2pix(nside, *np.asarray(directions, dtype=np.float64).T)
    npix = healpy.nside2npix(nside)
    total = np.bincount(pixels, weights=np.asarray(values, np.float64), minlength=npix)
    count = np.bincount(pixels, minlength=npix)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def directions_to_lonlat(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude in ``(-pi, pi]`` and latitude in ``[-pi/2, pi/2]`` (radians, as Mollweide axes
    take them) of unit vectors ``(N, 3)``."""
    d = np.asarray(directions, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    return np.arctan2(d[..., 1], d[..., 0]), np.arcsin(np.clip(d[..., 2], -1.0, 1.0))


def draw_mollweide(ax, healpix_map: np.ndarray, cmap: str = "viridis", **kwargs):
    """Draw a HEALPix map on matplotlib Mollweide axes (``projection="mollweide"``); returns
    the mesh (for a colour bar). NaN pixels are left blank."""
    nside = healpy.npix2nside(len(healpix_map))
    lon = np.linspace(-np.pi, np.pi, 361)
    lat = np.linspace(-np.pi / 2, np.pi / 2, 181)
    lon_c, lat_c = np.meshgrid(0.5 * (lon[1:] + lon[:-1]), 0.5 * (lat[1:] + lat[:-1]))
    pixels = healpy.ang2pix(nside, np.pi / 2 - lat_c, np.mod(lon_c, 2 * np.pi))
    values = np.ma.masked_invalid(np.asarray(healpix_map, dtype=np.float64)[pixels])
    mesh = ax.pcolormesh(lon, lat, values, cmap=cmap, shading="flat", **kwargs)
    ax.set_xticklabels([])
    ax.grid(True, alpha=0.3)
    return mesh


def tangent_basis(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = np.asarray(centre, dtype=np.float64)
    c = c / np.linalg.norm(c)
    helper = np.array([0.0, 0.0, 1.0]) if abs(c[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    east = np.cross(helper, c)
    east /= np.linalg.norm(east)
    return c, east, np.cross(c, east)


def gnomonic_coordinates(directions: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Gnomonic (tangent-plane) coordinates ``(N, 2)`` in degrees-equivalent units
    (``tan`` of the angle from ``centre``, times ``180 / pi``) of unit vectors; NaN for the
    far hemisphere."""
    c, east, north = tangent_basis(centre)
    d = np.asarray(directions, dtype=np.float64)
    depth = d @ c
    with np.errstate(invalid="ignore", divide="ignore"):
        xy = np.stack([d @ east, d @ north], axis=-1) / depth[..., None]
    xy[depth <= 0] = np.nan
    return np.rad2deg(xy)


def draw_gnomonic(
    ax,
    healpix_map: np.ndarray,
    centre: np.ndarray,
    width_deg: float = 40.0,
    cmap: str = "viridis",
    samples: int = 201,
    **kwargs,
):
    """Draw a HEALPix map in a gnomonic close-up about ``centre`` (a unit vector), ``width_deg``
    across; axes in degrees from the centre (east, north). Returns the image."""
    nside = healpy.npix2nside(len(healpix_map))
    c, east, north = tangent_basis(centre)
    half = np.tan(np.deg2rad(width_deg / 2))
    u = np.linspace(-half, half, samples)
    uu, vv = np.meshgrid(u, u)
    vectors = c + uu[..., None] * east + vv[..., None] * north
    pixels = healpy.vec2pix(nside, *np.moveaxis(vectors, -1, 0))
    values = np.ma.masked_invalid(np.asarray(healpix_map, dtype=np.float64)[pixels])
    extent_deg = np.rad2deg(half)
    image = ax.imshow(
        values,
        origin="lower",
        extent=(-extent_deg, extent_deg, -extent_deg, extent_deg),
        cmap=cmap,
        **kwargs,
    )
    ax.set_xlabel("east (deg, gnomonic)")
    ax.set_ylabel("north (deg, gnomonic)")
    return image
