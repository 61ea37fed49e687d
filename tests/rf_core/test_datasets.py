"""Datasets on disk: image folders and npz arrays, their identity, checks and streamed batches."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from rf_core.data import open_disk_dataset
from rf_core.datasets import DatasetError, FolderImages, to_unit_range
from rf_core.loader_batches import LoaderBatches, hflip
from rf_core.npz_arrays import NpzArrays
from tests.helpers import SHAPES, write_shape_images


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    return write_shape_images(tmp_path_factory.mktemp("shapes"), per_class=6)


# ---------------------------------------------------------------------------------------------
# folders


def test_folder_gives_images_in_unit_range_with_the_subfolders_as_classes(shapes_dir):
    ds = FolderImages(shapes_dir, (3, 32, 32))
    assert ds.classes == list(SHAPES) and len(ds) == 18
    x, y = ds[7]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -1 <= x.min() < x.max() <= 1
    labels = [int(ds[i][1]) for i in range(len(ds))]
    assert labels == [0] * 6 + [1] * 6 + [2] * 6  # sorted class folders, sorted files
    path = shapes_dir / SHAPES[int(y)] / "0001.png"
    pixels = np.asarray(Image.open(path)).transpose(2, 0, 1)
    assert torch.equal(x, to_unit_range(pixels))  # unchanged size: no resampling at all
    ident = ds.identity()
    assert (ident.kind, ident.n, ident.classes) == ("folder", 18, tuple(SHAPES))


def test_folder_resizes_to_cover_then_crops_the_centre_and_converts_to_grey(tmp_path):
    (tmp_path / "a").mkdir()
    img = np.zeros((40, 80, 3), np.uint8)  # H 40, W 80: red left, green middle, blue right
    img[:, :12] = (255, 0, 0)
    img[:, 68:] = (0, 0, 255)
    img[:, 12:68] = (0, 255, 0)
    Image.fromarray(img).save(tmp_path / "a" / "wide.png")
    x, _ = FolderImages(tmp_path, (3, 16, 16))[0]
    assert x.shape == (3, 16, 16)
    # scaled to 16 x 32, the centre 16 columns (20..60 of 80) are all green
    assert (x[1] > 0.9).all() and (x[0] < -0.9).all() and (x[2] < -0.9).all()
    grey, _ = FolderImages(tmp_path, (1, 8, 8))[0]
    assert grey.shape == (1, 8, 8) and grey.std() < 0.01  # one shade of grey in the middle


def test_corrupt_image_names_the_file_in_check_and_in_getitem(tmp_path):
    root = write_shape_images(tmp_path / "set", per_class=2)
    bad = root / "square" / "0001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))  # a PNG signature, then garbage
    ds = FolderImages(root, (3, 32, 32))
    with pytest.raises(DatasetError, match=f"image file {bad} is unreadable"):
        ds.check()
    with pytest.raises(DatasetError, match=f"image file {bad} is unreadable"):
        ds.check(workers=2)  # decoded in worker processes: the same error comes back
    with pytest.raises(DatasetError, match=str(bad)):
        ds[3]


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(DatasetError, match=f"image folder {tmp_path / 'none'} does not exist"):
        FolderImages(tmp_path / "none", (3, 8, 8))
    with pytest.raises(DatasetError, match="Couldn't find any class folder"):
        FolderImages(tmp_path, (3, 8, 8))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="Found no valid file for the classes empty"):
        FolderImages(tmp_path, (3, 8, 8))
    with pytest.raises(DatasetError, match=r"shape must be \(1 or 3, H, W\)"):
        FolderImages(tmp_path, (4, 8, 8))


def test_folder_digest_follows_the_files(tmp_path):
    root = write_shape_images(tmp_path / "set", per_class=2)
    first = FolderImages(root, (3, 32, 32)).identity().digest
    assert FolderImages(root, (3, 32, 32)).identity().digest == first  # stable
    target = root / "circle" / "0000.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(target)  # new content
    changed = FolderImages(root, (3, 32, 32)).identity().digest
    assert changed != first
    target.rename(root / "circle" / "0009.png")
    assert FolderImages(root, (3, 32, 32)).identity().digest not in (first, changed)


# ---------------------------------------------------------------------------------------------
# npz


def _save(path, compressed=False, **arrays):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def test_npz_uint8_images_labels_and_class_names(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)
    y = np.arange(10) % 3
    path = _save(tmp_path / "a.npz", x=x, y=y, classes=np.array(["cat", "dog", "eel"]))
    ds = NpzArrays(path, (3, 4, 4))
    assert isinstance(ds.x, np.memmap)  # read in place, not loaded whole
    xi, yi = ds[4]
    assert torch.equal(xi, to_unit_range(x[4])) and int(yi) == 1
    assert ds.identity().classes == ("cat", "dog", "eel") and ds.identity().n == 10
    ds.check()
    unlabeled = NpzArrays(_save(tmp_path / "b.npz", x=x), (3, 4, 4))
    assert int(unlabeled[0][1]) == -1 and unlabeled.identity().classes == ()
    numbered = NpzArrays(_save(tmp_path / "c.npz", x=x, y=y), (3, 4, 4))
    assert numbered.identity().classes == ("0", "1", "2")


def test_npz_float_images_and_latents_with_their_scale(tmp_path):
    x = np.linspace(-1, 1, 2 * 4 * 2 * 2, dtype=np.float32).reshape(2, 4, 2, 2)
    path = _save(tmp_path / "f.npz", x=x)
    images = NpzArrays(path, (4, 2, 2))
    images.check()
    assert torch.equal(images[1][0], torch.from_numpy(x[1]))
    latents = NpzArrays(path, (4, 2, 2), values="latents", scale=0.5, shift=1.0)
    torch.testing.assert_close(latents[1][0], (torch.from_numpy(x[1]) - 1.0) * 0.5)
    wide = _save(tmp_path / "w.npz", x=x * 7)
    NpzArrays(wide, (4, 2, 2), values="latents").check()  # any scale for latents
    with pytest.raises(DatasetError, match=r"float images in \[-7, 7\]; expected \[-1, 1\]"):
        NpzArrays(wide, (4, 2, 2)).check()


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((3, 1, 5, 5), np.uint8)}, r"array 'x' has shape \(3, 1, 5, 5\); expected"),
        ({"x": np.zeros((3, 4), np.uint8)}, r"array 'x' has shape \(3, 4\)"),
        ({"x": np.zeros((3, 1, 4, 4), np.int32)}, "array 'x' is int32 with 3 rows; expected"),
        ({"x": np.zeros((0, 1, 4, 4), np.uint8)}, "with 0 rows"),
        ({"z": np.zeros((3, 1, 4, 4))}, r"has no array 'x' \(it has \['z'\]\)"),
        ({"x": np.zeros((3, 1, 4, 4)), "y": np.zeros(2, int)}, "array 'y' is int64 of shape"),
        ({"x": np.zeros((3, 1, 4, 4)), "y": np.zeros(3)}, "array 'y' is float64"),
        ({"x": np.zeros((3, 1, 4, 4)), "y": -np.ones(3, int)}, "label -1; labels must be >= 0"),
        ({"x": np.zeros((3, 1, 4, 4)), "y": np.arange(3), "classes": np.array(["a"])}, "classes"),
    ],
)
def test_npz_wrong_arrays_are_refused_naming_file_and_array(tmp_path, arrays, match):
    path = _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=match) as err:
        NpzArrays(path, (1, 4, 4))
    assert str(path) in str(err.value)


def test_npz_latents_must_be_float_and_finite(tmp_path):
    with pytest.raises(DatasetError, match="is uint8 with 2 rows; expected float"):
        NpzArrays(
            _save(tmp_path / "u.npz", x=np.zeros((2, 1, 2, 2), np.uint8)), (1, 2, 2), "latents"
        )
    x = np.zeros((2, 1, 2, 2), np.float32)
    x[1, 0, 1, 1] = np.nan
    with pytest.raises(DatasetError, match="array 'x' holds NaN or Inf"):
        NpzArrays(_save(tmp_path / "n.npz", x=x), (1, 2, 2), "latents").check()


def test_npz_not_a_zip_or_missing_names_the_file(tmp_path):
    (tmp_path / "t.npz").write_text("hello")
    with pytest.raises(DatasetError, match="is not an npz"):
        NpzArrays(tmp_path / "t.npz", (1, 2, 2))
    with pytest.raises(DatasetError, match="does not exist"):
        NpzArrays(tmp_path / "none.npz", (1, 2, 2))


def test_npz_compressed_is_read_whole_with_the_same_values_and_digest(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 2, 3, 3)).astype(np.float32), np.arange(6)
    plain = NpzArrays(_save(tmp_path / "p.npz", x=x, y=y), (2, 3, 3), "latents")
    packed = NpzArrays(_save(tmp_path / "z.npz", True, x=x, y=y), (2, 3, 3), "latents")
    assert isinstance(plain.x, np.memmap) and not isinstance(packed.x, np.memmap)
    assert torch.equal(plain[5][0], packed[5][0])
    assert plain.identity().digest == packed.identity().digest  # the arrays, not the file bytes
    x[2, 1, 0, 0] += 1e-3
    changed = NpzArrays(_save(tmp_path / "p2.npz", x=x, y=y), (2, 3, 3), "latents")
    assert changed.identity().digest != plain.identity().digest
    with zipfile.ZipFile(tmp_path / "p.npz") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


def test_open_disk_dataset_dispatches_and_refuses_other_kinds(tmp_path, shapes_dir):
    assert isinstance(open_disk_dataset("folder", shapes_dir, (3, 32, 32)), FolderImages)
    path = _save(tmp_path / "a.npz", x=np.zeros((2, 1, 2, 2), np.uint8))
    assert isinstance(open_disk_dataset("npz", path, (1, 2, 2)), NpzArrays)
    with pytest.raises(ValueError, match="allowed: folder, npz"):
        open_disk_dataset("lmdb", path, (1, 2, 2))


# ---------------------------------------------------------------------------------------------
# streamed batches


def test_loader_batches_are_the_same_with_and_without_workers(shapes_dir):
    ds = FolderImages(shapes_dir, (3, 32, 32))
    here = LoaderBatches(ds, 5, seed=3, workers=0, flip=True)
    workers = LoaderBatches(ds, 5, seed=3, workers=2, flip=True)
    for _ in range(5):  # 3 full batches per epoch: crosses two epoch boundaries
        for a, b in zip(next(here), next(workers), strict=True):
            assert torch.equal(a, b)
    x0, x1, y = next(LoaderBatches(ds, 100, seed=3))  # capped at the set's size
    assert (
        x0.shape == x1.shape == (18, 3, 32, 32)
        and sorted(y.tolist()) == [0] * 6 + [1] * 6 + [2] * 6
    )
    assert not torch.equal(x0, x1) and abs(float(x0.std()) - 1) < 0.05
    other = next(LoaderBatches(ds, 5, seed=4))
    assert not torch.equal(other[1], next(LoaderBatches(ds, 5, seed=3))[1])


def test_hflip_mirrors_about_half_of_the_images():
    x = torch.arange(64 * 2 * 3, dtype=torch.float32).reshape(64, 1, 2, 3)
    out = hflip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    same = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f != s for f, s in zip(flipped, same, strict=True))
    assert 20 < sum(flipped) < 44
