"""Arrays of an npz file as a dataset: images (uint8 or [-1, 1] floats) or latents with a scale.

Arrays stored uncompressed (``np.savez``) are memory-mapped, so DataLoader workers read a set
larger than memory row by row; see :mod:`rf_core.datasets` for the folder kind and the shared
identity and error types.
"""

from __future__ import annotations

import functools
import hashlib
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from rf_core.datasets import DatasetError, DatasetIdentity, to_unit_range

NPZ_ARRAYS = ("x", "y", "classes")
SCAN_ROWS = 4096  # rows per block of the digest pass
EPS = 1e-4  # float images may overshoot [-1, 1] by round-off


def _npz_member(path: Path, name: str) -> np.ndarray:
    """Array ``name`` of an npz: memory-mapped when stored uncompressed, else read whole."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            with zf.open(info) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
    fmt = np.lib.format
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)  # the local file header: its name and extra lengths
        name_len, extra_len = np.frombuffer(f.read(4), "<u2")
        f.seek(info.header_offset + 30 + int(name_len) + int(extra_len))
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if dtype.hasobject:
        raise DatasetError(f"npz file {path}: array {name!r} holds Python objects")
    return np.memmap(path, dtype, "r", offset, shape, "F" if fortran else "C")


@functools.lru_cache(maxsize=8)
def _scan_npz(path: str, size: int, mtime_ns: int) -> tuple[str, float, float, bool]:
    """(sha256 of the arrays, min and max of x, x all finite): one read of the file, cached per
    file version (size and mtime are part of the key)."""
    h = hashlib.sha256()
    lo, hi, finite = np.inf, -np.inf, True
    for name in NPZ_ARRAYS:
        try:
            a = _npz_member(Path(path), name)
        except KeyError:
            continue
        h.update(f"{name}\0{a.shape}\0{a.dtype.str}\n".encode())
        for i in range(0, max(len(a), 1), SCAN_ROWS):
            block = np.ascontiguousarray(a[i : i + SCAN_ROWS])
            h.update(block.tobytes())
            if name == "x" and block.size:
                if block.dtype.kind == "f":
                    finite &= bool(np.isfinite(block).all())
                lo, hi = min(lo, float(np.nanmin(block))), max(hi, float(np.nanmax(block)))
    return h.hexdigest(), lo, hi, finite


class NpzArrays(Dataset):
    """Arrays of an npz file: ``x`` (N, C, H, W), optional ``y`` (N,) int and ``classes`` (K,) str.

    Args:
        path: the ``.npz`` file (save it with ``np.savez``, not ``savez_compressed``, for sets
            larger than memory: only uncompressed arrays are memory-mapped).
        shape: the ``(C, H, W)`` the model expects; ``x`` must have it.
        values: ``images``: x uint8 in [0, 255] (mapped to [-1, 1]) or float in [-1, 1] (as is);
            ``latents``: x float, given to the model as ``(x - shift) * scale``.
        scale: latents only: the factor (e.g. 0.18215 for Stable Diffusion's VAE).
        shift: latents only: subtracted first.

    Raises:
        DatasetError: naming the file and the array: missing file or ``x``, wrong shape or dtype,
            bad labels.
    """

    def __init__(
        self,
        path: str | Path,
        shape: tuple[int, ...],
        values: Literal["images", "latents"] = "images",
        scale: float = 1.0,
        shift: float = 0.0,
    ):
        self.path = Path(path).expanduser().resolve()
        self.shape, self.values, self.scale, self.shift = tuple(shape), values, scale, shift
        if not self.path.is_file():
            raise DatasetError(f"npz file {self.path} does not exist")
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = sorted(n.removesuffix(".npy") for n in zf.namelist())
        except zipfile.BadZipFile as e:
            raise DatasetError(f"npz file {self.path} is not an npz (zip) archive: {e}") from None
        if "x" not in names:
            raise DatasetError(f"npz file {self.path} has no array 'x' (it has {names})")
        self._x: np.ndarray | None = None
        self._check_x()
        self.y = self._labels("y" in names)
        self.classes = self._classes("classes" in names)

    @property
    def x(self) -> np.ndarray:
        """The ``x`` array (a memory map, opened once per process)."""
        if self._x is None:
            self._x = _npz_member(self.path, "x")
        return self._x

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_x": None}  # spawned workers map the file themselves

    def _check_x(self) -> None:
        x, where = self.x, f"npz file {self.path}: array 'x'"
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            want = f"(N, {', '.join(map(str, self.shape))})"
            raise DatasetError(f"{where} has shape {x.shape}; expected {want} (model.data_shape)")
        ok = x.dtype.kind == "f" or (self.values == "images" and x.dtype == np.uint8)
        if not ok or len(x) == 0:
            want = "uint8 (0..255) or float in [-1, 1]" if self.values == "images" else "float"
            raise DatasetError(f"{where} is {x.dtype} with {len(x)} rows; expected {want} values")

    def _labels(self, present: bool) -> np.ndarray | None:
        if not present:
            return None
        y, where = np.asarray(_npz_member(self.path, "y")), f"npz file {self.path}: array 'y'"
        if y.shape != (len(self.x),) or y.dtype.kind not in "iu":
            want = f"integer labels of shape ({len(self.x)},)"
            raise DatasetError(f"{where} is {y.dtype} of shape {y.shape}; expected {want}")
        if y.min() < 0:
            raise DatasetError(f"{where} has label {int(y.min())}; labels must be >= 0")
        return y.astype(np.int64)

    def _classes(self, present: bool) -> tuple[str, ...]:
        if self.y is None:
            return ()
        k = int(self.y.max()) + 1
        if not present:
            return tuple(str(i) for i in range(k))
        names = np.asarray(_npz_member(self.path, "classes"))
        if names.ndim != 1 or names.dtype.kind != "U" or len(names) < k:
            raise DatasetError(
                f"npz file {self.path}: array 'classes' is {names.dtype} of shape {names.shape}; "
                f"expected at least {k} strings (one per label in 'y')"
            )
        return tuple(str(n) for n in names)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        a = np.asarray(self.x[i])  # a row of the memory map: read-only, copied below
        if a.dtype == np.uint8:
            x = to_unit_range(a)
        else:
            x = torch.tensor(a, dtype=torch.float32)
            if self.values == "latents":
                x = (x - self.shift) * self.scale
        return x, torch.tensor(-1 if self.y is None else int(self.y[i]))

    def _scan(self) -> tuple[str, float, float, bool]:
        st = self.path.stat()
        return _scan_npz(str(self.path), st.st_size, st.st_mtime_ns)

    def identity(self) -> DatasetIdentity:
        """Digest of the arrays' names, shapes, dtypes and bytes (one read of the file)."""
        return DatasetIdentity("npz", str(self.path), self._scan()[0], len(self), self.classes)

    def check(self, workers: int = 0) -> None:
        """Values: finite, and in [-1, 1] for float images; DatasetError names file and array.

        One sequential read of the file, shared with :meth:`identity` (``workers`` is unused).
        """
        _, lo, hi, finite = self._scan()
        where = f"npz file {self.path}: array 'x'"
        if not finite:
            raise DatasetError(f"{where} holds NaN or Inf")
        if self.values == "images" and self.x.dtype.kind == "f" and (lo < -1 - EPS or hi > 1 + EPS):
            raise DatasetError(
                f"{where} holds float images in [{lo:.4g}, {hi:.4g}]; expected [-1, 1] (store "
                "uint8 for 0..255, or set data.values: latents for another scale)"
            )
