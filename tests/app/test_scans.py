"""app.scans: a 2D image's pixel spacing travels with its ScanJob to the scan read."""

import os

import numpy as np

from spine_tf import cli
from spine_tf.app import scans


def test_a_2d_image_is_read_with_the_jobs_spacing(real_slices_dir):
    job = scans.ScanJob("2", os.fspath(real_slices_dir / "2.png"),
                        mask=os.fspath(real_slices_dir / "2.npy"))
    default, located, volumes, _ = scans.extract_scan(job)
    np.testing.assert_array_equal(default.spacing_mm, [1.0, 1.0, 1.0])
    fine = scans.ScanJob(job.name, job.scan, mask=job.mask, spacing_mm=(0.5, 0.5))
    scan, fine_located, fine_volumes, _ = scans.extract_scan(fine)
    np.testing.assert_array_equal(scan.spacing_mm, [1.0, 0.5, 0.5])
    assert [v.level for v in fine_volumes] == [v.level for v in volumes]
    # half the pixel size: the same discs, half as high in mm
    np.testing.assert_allclose([d.height_mm for d in fine_located.discs],
                               [d.height_mm / 2 for d in located.discs], rtol=1e-6)


def test_extract_command_passes_its_spacing(real_slices_dir, tmp_path):
    for spacing, out in ((None, tmp_path / "a"), (("0.5", "1.0"), tmp_path / "b")):
        argv = ["extract", os.fspath(real_slices_dir / "2.png"), "--mask",
                os.fspath(real_slices_dir / "2.npy"), "--out", os.fspath(out)]
        assert cli.main(argv + (["--spacing", *spacing] if spacing else [])) == 0
    job = scans.ScanJob("2", os.fspath(real_slices_dir / "2.png"),
                        mask=os.fspath(real_slices_dir / "2.npy"), spacing_mm=(1.0, 0.5, 1.0))
    _, _, volumes, _ = scans.extract_scan(job)
    saved = np.load(tmp_path / "b" / "2_discs.npz")
    np.testing.assert_allclose(saved["volumes"], np.stack([v.volume for v in volumes]),
                               atol=1e-6)
    # rows of 0.5 mm and columns of 1 mm give other volumes than square pixels
    assert not np.allclose(saved["volumes"], np.load(tmp_path / "a" / "2_discs.npz")["volumes"])
