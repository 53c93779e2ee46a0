"""Image I/O: geometry round trips, header variants (scaling, byte order, qform/sform), errors."""
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.orientations import aff2axcodes

from medmamba.datasets.geometry import ImageGeometry, geometry_differences
from medmamba.datasets.image_io import read_case, read_image, write_image
from medmamba.errors import GeometryError, ImageReadError


def _rotation(deg_z, deg_x):
    z, x = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return rz @ rx


DIRECTIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "oblique": _rotation(17.0, -9.0),
}


def _geometry(direction, dtype="int16", shape=(5, 6, 7)):
    return ImageGeometry(
        spacing=(0.8, 1.25, 3.0), origin=(12.5, -40.25, 7.0), direction=tuple(map(tuple, direction)),
        shape=shape, dtype=dtype,
    )


def _assert_same_geometry(a: ImageGeometry, b: ImageGeometry, tol=1e-5):
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, atol=tol)
    np.testing.assert_allclose(a.origin, b.origin, atol=tol)
    np.testing.assert_allclose(a.direction_matrix, b.direction_matrix, atol=tol)


@pytest.mark.parametrize("orientation", sorted(DIRECTIONS))
@pytest.mark.parametrize("ending", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_round_trip_3d(tmp_path, orientation, ending):
    geometry = _geometry(DIRECTIONS[orientation])
    data = np.random.default_rng(0).integers(-500, 500, size=geometry.shape).astype(np.int16)
    write_image(tmp_path / f"a{ending}", data, geometry)
    first, g1 = read_image(tmp_path / f"a{ending}")
    write_image(tmp_path / f"b{ending}", first, g1)
    second, g2 = read_image(tmp_path / f"b{ending}")
    assert first.dtype == np.int16 and g1.dtype == "int16"
    np.testing.assert_array_equal(first, data)
    np.testing.assert_array_equal(second, first)
    _assert_same_geometry(g1, geometry)
    _assert_same_geometry(g2, g1)
    assert "".join(aff2axcodes(g1.affine_ras())) == ("LPS" if orientation == "oblique" else orientation)


@pytest.mark.parametrize("ending", [".nii.gz", ".mha"])
def test_round_trip_2d(tmp_path, ending):
    d = _rotation(30.0, 0.0)[:2, :2]
    geometry = ImageGeometry(spacing=(0.7, 0.9), origin=(3.0, -4.5), direction=tuple(map(tuple, d)),
                             shape=(9, 11), dtype="float32")
    data = np.random.default_rng(1).normal(size=geometry.shape).astype(np.float32)
    write_image(tmp_path / f"a{ending}", data, geometry)
    first, g1 = read_image(tmp_path / f"a{ending}")
    write_image(tmp_path / f"b{ending}", first, g1)
    second, g2 = read_image(tmp_path / f"b{ending}")
    assert first.shape == (9, 11) and g1.ndim == 2
    np.testing.assert_array_equal(first, data)
    np.testing.assert_array_equal(second, data)
    _assert_same_geometry(g1, geometry)
    _assert_same_geometry(g2, geometry)


def test_nibabel_and_simpleitk_agree_on_array_and_geometry(tmp_path):
    """The same NIfTI file read by SimpleITK directly gives our array transposed and the same LPS geometry."""
    geometry = _geometry(DIRECTIONS["oblique"])
    data = np.arange(np.prod(geometry.shape), dtype=np.int16).reshape(geometry.shape)
    write_image(tmp_path / "a.nii.gz", data, geometry)
    img = sitk.ReadImage(str(tmp_path / "a.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img).transpose(2, 1, 0), data)
    np.testing.assert_allclose(img.GetSpacing(), geometry.spacing, atol=1e-5)
    np.testing.assert_allclose(img.GetOrigin(), geometry.origin, atol=1e-4)
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), geometry.direction_matrix, atol=1e-5)
    # and our SimpleITK path reads an .nrrd copy to the identical array/geometry
    sitk.WriteImage(img, str(tmp_path / "a.nrrd"))
    arr2, g2 = read_image(tmp_path / "a.nrrd")
    np.testing.assert_array_equal(arr2, data)
    _assert_same_geometry(g2, geometry, tol=1e-4)


def test_scl_slope_inter_read_and_reproduced(tmp_path):
    stored = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    img = nib.Nifti1Image(stored, np.diag([2.0, 2.0, 2.0, 1.0]))
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, str(tmp_path / "scaled.nii.gz"))
    values, geometry = read_image(tmp_path / "scaled.nii.gz")
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, stored * 0.5 - 10.0)
    assert geometry.dtype == "int16" and geometry.header["scl_slope"] == 0.5 and geometry.header["scl_inter"] == -10.0
    write_image(tmp_path / "out.nii.gz", values, geometry)
    again = nib.load(str(tmp_path / "out.nii.gz"))
    assert again.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(again.dataobj.get_unscaled()), stored)
    assert (again.dataobj.slope, again.dataobj.inter) == (0.5, -10.0)
    # a segmentation written with the same geometry is plain integers, no scaling
    write_image(tmp_path / "seg.nii.gz", (stored % 3).astype(np.uint8), geometry, dtype=np.uint8)
    seg = nib.load(str(tmp_path / "seg.nii.gz"))
    assert seg.get_data_dtype() == np.uint8 and seg.dataobj.slope == 1.0 and seg.dataobj.inter == 0.0


def test_big_endian_file(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    header = nib.Nifti1Header(endianness=">")
    img = nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0]), header=header)
    nib.save(img, str(tmp_path / "be.nii"))
    assert nib.load(str(tmp_path / "be.nii")).header.endianness == ">"
    array, geometry = read_image(tmp_path / "be.nii")
    assert array.dtype == np.dtype("float32") and array.dtype.byteorder in ("=", "|", "<")
    np.testing.assert_array_equal(array, data)
    assert geometry.dtype == "float32"
    np.testing.assert_allclose(geometry.spacing, (1.5, 1.5, 2.0))


@pytest.mark.parametrize("which", ["qform", "sform"])
def test_qform_only_and_sform_only(tmp_path, which):
    affine_ras = np.array([[-1.5, 0, 0, 30.0], [0, 0, 2.0, -12.0], [0, 1.25, 0, 8.0], [0, 0, 0, 1.0]])
    data = np.zeros((4, 5, 6), dtype=np.uint8)
    img = nib.Nifti1Image(data, None)
    if which == "qform":
        img.set_qform(affine_ras, code=1)
        img.set_sform(None, code=0)
    else:
        img.set_qform(None, code=0)
        img.set_sform(affine_ras, code=2)
    nib.save(img, str(tmp_path / "x.nii.gz"))
    _, geometry = read_image(tmp_path / "x.nii.gz")
    np.testing.assert_allclose(geometry.affine_ras(), affine_ras, atol=1e-5)
    np.testing.assert_allclose(geometry.spacing, (1.5, 1.25, 2.0), atol=1e-6)
    assert (geometry.header["qform_code"], geometry.header["sform_code"]) == ((1, 0) if which == "qform" else (0, 2))
    write_image(tmp_path / "y.nii.gz", data, geometry)
    out = nib.load(str(tmp_path / "y.nii.gz"))
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == ((1, 0) if which == "qform" else (0, 2))
    np.testing.assert_allclose(out.affine, affine_ras, atol=1e-5)


def test_nii_gz_output_is_byte_deterministic(tmp_path):
    geometry = _geometry(DIRECTIONS["RAS"], dtype="float32")
    data = np.random.default_rng(3).normal(size=geometry.shape).astype(np.float32)
    write_image(tmp_path / "a.nii.gz", data, geometry)
    write_image(tmp_path / "sub" / "b.nii.gz", data, geometry)
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "sub" / "b.nii.gz").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_4d_nifti_rejected_unless_allowed(tmp_path):
    data = np.zeros((3, 4, 5, 2), dtype=np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "four.nii.gz"))
    with pytest.raises(ImageReadError, match="4D image") as info:
        read_image(tmp_path / "four.nii.gz")
    assert "four.nii.gz" in str(info.value) and "\n" not in str(info.value)
    array, geometry = read_image(tmp_path / "four.nii.gz", allow_4d=True)
    assert array.shape == (3, 4, 5, 2) and geometry.shape == (3, 4, 5)
    # a trailing singleton dimension is just a 3D image
    nib.save(nib.Nifti1Image(data[..., :1], np.eye(4)), str(tmp_path / "three.nii.gz"))
    assert read_image(tmp_path / "three.nii.gz")[0].shape == (3, 4, 5)
    # ... in every format: SimpleITK's readers (nrrd, mha) give the same 3D image
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(data[..., :1].transpose(3, 2, 1, 0), isVector=False), str(tmp_path / "three.nrrd"))
    array, geometry = read_image(tmp_path / "three.nrrd")
    assert array.shape == (3, 4, 5) and geometry.shape == (3, 4, 5)
    sitk.WriteImage(sitk.GetImageFromArray(data.transpose(3, 2, 1, 0), isVector=False), str(tmp_path / "four.nrrd"))
    with pytest.raises(ImageReadError, match="4D image"):
        read_image(tmp_path / "four.nrrd")


def test_corrupt_and_missing_files_raise_one_line_errors(tmp_path):
    good = tmp_path / "good.nii.gz"
    write_image(good, np.zeros((8, 8, 8), np.int16), _geometry(np.eye(3), shape=(8, 8, 8)))
    truncated = tmp_path / "trunc.nii.gz"
    truncated.write_bytes(good.read_bytes()[:60])
    garbage = tmp_path / "garbage.mha"
    garbage.write_bytes(b"not an image at all")
    for path in (truncated, garbage, tmp_path / "absent.nii.gz"):
        with pytest.raises(ImageReadError) as info:
            read_image(path)
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    assert gzip.decompress(good.read_bytes())[:4] == (348).to_bytes(4, "little")  # a real NIfTI-1 header


def test_read_case_stacks_channels_and_names_mismatching_file(tmp_path):
    g = _geometry(DIRECTIONS["LPS"])
    a = np.ones(g.shape, np.int16)
    write_image(tmp_path / "c_0000.nii.gz", a, g)
    write_image(tmp_path / "c_0001.nii.gz", a * 2, g)
    array, geometry = read_case([tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"])
    assert array.shape == (2, *g.shape) and array.dtype == np.float32
    np.testing.assert_array_equal(array[1], 2.0)
    _assert_same_geometry(geometry, g)
    write_image(tmp_path / "c_0002.nii.gz", a, g.replace(origin=(0.0, 0.0, 0.0)))
    with pytest.raises(GeometryError, match="origin") as info:
        read_case([tmp_path / "c_0000.nii.gz", tmp_path / "c_0002.nii.gz"])
    assert "c_0002.nii.gz" in str(info.value)


def test_geometry_dict_round_trip_and_differences():
    g = _geometry(DIRECTIONS["oblique"])
    assert ImageGeometry.from_dict(g.to_dict()) == g
    assert geometry_differences(g, g) == []
    moved = g.replace(spacing=(0.8, 1.25, 3.1))
    assert any("spacing" in p for p in geometry_differences(g, moved))
    np.testing.assert_allclose(g.affine_ras()[:2], -g.affine_lps()[:2])


# ---------------------------------------------------------------- written back exactly as read


def _header_roundtrip(src: Path, dst: Path, dtype=None):
    array, geometry = read_image(src)
    write_image(dst, array, geometry, dtype)
    return nib.load(str(src)).header, nib.load(str(dst)).header


def test_qform_different_from_sform_is_written_back_as_read(tmp_path):
    """A file whose qform (code 1) differs from its sform (code 2): both come back unchanged, also
    for a segmentation written with the image's geometry."""
    sform = np.array([[-0.9, 0.1, 0.0, 12.0], [0.1, 0.9, 0.0, -4.0], [0.0, 0.0, 2.5, 7.0], [0, 0, 0, 1.0]])
    qform = np.array([[-0.9, 0.0, 0.0, 10.0], [0.0, 0.9, 0.0, -3.0], [0.0, 0.0, 2.5, 5.0], [0, 0, 0, 1.0]])
    img = nib.Nifti1Image(np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3), None)
    img.set_sform(sform, code=2)
    img.set_qform(qform, code=1)
    src = tmp_path / "a.nii.gz"
    nib.save(img, str(src))
    for dtype, name in ((None, "b.nii.gz"), (np.uint8, "seg.nii.gz")):
        before, after = _header_roundtrip(src, tmp_path / name, dtype)
        for get in ("get_qform", "get_sform"):
            a, code_a = getattr(before, get)(coded=True)
            b, code_b = getattr(after, get)(coded=True)
            assert code_a == code_b
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
        assert not np.allclose(after.get_qform(), after.get_sform(), atol=1e-3)  # not rewritten to the sform


def test_4d_singleton_comes_back_4d_with_its_pixdim(tmp_path):
    img = nib.Nifti1Image(np.ones((4, 5, 3, 1), np.float32), np.diag([1.5, 1.5, 3.0, 1.0]))
    img.header.set_zooms((1.5, 1.5, 3.0, 2.5))
    img.header.set_xyzt_units("mm", "msec")
    src = tmp_path / "single.nii.gz"
    nib.save(img, str(src))
    array, geometry = read_image(src)
    assert array.shape == (4, 5, 3) and geometry.shape == (4, 5, 3)  # a 3D image to every stage
    before, after = _header_roundtrip(src, tmp_path / "back.nii.gz")
    assert nib.load(str(tmp_path / "back.nii.gz")).shape == (4, 5, 3, 1)
    assert list(after["dim"]) == list(before["dim"])
    np.testing.assert_allclose(after.get_zooms(), before.get_zooms())
    assert after.get_xyzt_units() == before.get_xyzt_units() == ("mm", "msec")


def test_unknown_units_stay_unknown(tmp_path):
    img = nib.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4))
    img.header["xyzt_units"] = 0
    src = tmp_path / "u.nii.gz"
    nib.save(img, str(src))
    before, after = _header_roundtrip(src, tmp_path / "u2.nii.gz")
    assert int(after["xyzt_units"]) == int(before["xyzt_units"]) == 0


def test_lps_1x1x1_reorientation_gives_torch_wrappable_arrays():
    """Closest-RAS reorientation flips LPS axes; on 1x1x1 / 1x1xN arrays numpy keeps negative-stride
    views 'contiguous', which torch cannot wrap: apply/invert must hand out fresh arrays."""
    import torch

    from medmamba.datasets.orientation import canonical_reorientation

    lps = np.eye(3)  # LPS voxel axes: RAS reorientation flips the first two
    r = canonical_reorientation(lps)
    assert r.flips[:2] == (True, True)
    for shape in ((1, 1, 1, 1), (1, 1, 1, 5), (2, 1, 1, 4)):
        x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        canonical = r.apply(x)
        torch.as_tensor(canonical)
        back = r.invert(canonical)
        torch.as_tensor(back)
        np.testing.assert_array_equal(back, x)
