"""Synthetic face encodings with the statistics of dlib's (for benchmarks and tests).

Person centres scatter around the mean of real encodings, photos around their person's
centre, with covariances fitted to real encodings (lfw-dev) when they are at hand, else
spectra of the same shape: genuine pairs end up about 0.45 apart and impostors about 0.8,
as with real faces, so that a recall measured on them means something (uniform noise would
make every face a stranger to every other).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

DIM = 128
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def _root(cov: F64) -> F64:
    w, v = np.linalg.eigh(cov)
    out: F64 = v * np.sqrt(np.clip(w, 0.0, None))
    return out


def _spectrum_root(rng: np.random.Generator, total: float, weights: F64) -> F64:
    """A random orientation with eigenvalues proportional to ``weights``, summing to ``total``."""
    q, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    out: F64 = q * np.sqrt(weights / weights.sum() * total)
    return out


class SyntheticFaces:
    """Face encodings with the statistics of dlib's: ``centres`` of people, ``photos`` of them.

    ``real``: a ``.npz`` of real encodings (benchmarks.matching's cache) to fit the mean
    and the between-person and within-person covariances to; without it, spectra fitted
    once to lfw-dev (between people: eigenvalues (1+i)^-0.5 e^(-i/25), total variance
    0.246; within a person: e^(-i/32), total 0.099; mean norm 1.30), randomly oriented.
    """

    def __init__(self, seed: int = 0, real: Path | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        if real is not None and real.exists():
            self.source = f"fitted to {real.name}"
            self.mean, self.between, self.within = _fit(real)
        else:
            self.source = "parametric (lfw-dev's spectra)"
            shape = np.random.default_rng(12345)  # the same model whatever the seed
            i = np.arange(DIM, dtype=np.float64)
            direction = shape.standard_normal(DIM)
            self.mean = direction / np.linalg.norm(direction) * 1.30
            self.between = _spectrum_root(shape, 0.246, (1 + i) ** -0.5 * np.exp(-i / 25))
            self.within = _spectrum_root(shape, 0.099, np.exp(-i / 32))

    def centres(self, n: int) -> F32:
        """``n`` new people (the centre their photos scatter around)."""
        out: F32 = (self.mean + self.rng.standard_normal((n, DIM)) @ self.between.T).astype(np.float32)
        return out

    def photos(self, centres: F32) -> F32:
        """One new photo of each of ``centres``."""
        out: F32 = (centres + self.rng.standard_normal(centres.shape) @ self.within.T).astype(np.float32)
        return out


def _fit(path: Path) -> tuple[F64, F64, F64]:
    enc, names = real_encodings(path)
    people, inv, counts = np.unique(names, return_inverse=True, return_counts=True)
    means = np.zeros((len(people), DIM))
    np.add.at(means, inv, enc)
    means /= counts[:, None]
    several = counts[inv] > 1
    resid = (enc - means[inv])[several]
    within = resid.T @ resid / (counts[counts > 1] - 1).sum()
    between = np.cov((means - enc.mean(axis=0)).T) - within * np.mean(1 / counts)
    return enc.mean(axis=0), _root(between), _root(within)


def real_encodings(path: Path) -> tuple[F64, npt.NDArray[np.str_]]:
    """Real encodings and the person (folder) of each, from benchmarks.matching's cache."""
    with np.load(path, allow_pickle=False) as z:
        found = z["found"]
        enc = z["encodings"][found].astype(np.float64)
        keys = [str(k) for k in z["keys"][found]]
    # keys are "<set>/<person>/<file>:<size>"; strangers/ people are kept apart by set
    return enc, np.array(["/".join(k.split("/")[:2]) for k in keys])
