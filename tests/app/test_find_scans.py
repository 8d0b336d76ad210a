"""app.scans.find_scans on folders of pictures and on DICOM series folders."""

import numpy as np
import pytest
from PIL import Image

from spine_tf.app import scans


def test_a_folder_of_pictures_gives_one_scan_per_picture(tmp_path):
    for name in ("b.png", "a.bmp"):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a scan")
    jobs = scans.find_scans([tmp_path])
    assert [(j.name, j.scan) for j in jobs] == [
        ("a", str(tmp_path / "a.bmp")), ("b", str(tmp_path / "b.png"))]


def test_a_folder_of_dicom_files_is_one_series(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    series = tmp_path / "T2_SAG"
    series.mkdir()
    volume = sitk.GetImageFromArray(np.arange(4 * 16 * 16, dtype=np.int16).reshape(4, 16, 16))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        plane = volume[:, :, k]
        plane.SetMetaData("0020|000d", "1.2.826.0.1.3680043.2.1125.9")  # one study, one series
        plane.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.9.1")
        writer.SetFileName(str(series / f"IM{k:04d}.dcm"))
        writer.Execute(plane)
    jobs = scans.find_scans([series])
    assert [(j.name, j.scan) for j in jobs] == [("T2_SAG", str(series))]
    for k in range(volume.GetDepth()):  # PACS exports often have other names, or none
        (series / f"IM{k:04d}.dcm").rename(series / f"{k}.img")
    assert [j.scan for j in scans.find_scans([series])] == [str(series)]  # by the preamble


def test_a_folder_of_other_files_is_refused_with_the_reason(tmp_path):
    (tmp_path / "notes.txt").write_text("not a scan")
    with pytest.raises(scans.PredictError, match="no scan files .* and no DICOM series"):
        scans.find_scans([tmp_path])
