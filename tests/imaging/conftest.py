"""Real medical files for the imaging tests: pydicom's own test data, pydicom-data, nibabel, pyradiomics."""
from pathlib import Path
from typing import Callable

import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def dicom_file() -> Callable[[str], Path]:
    """Finds a DICOM from pydicom / pydicom-data offline; skips when that wheel is not installed."""
    pydicom_data = pytest.importorskip("pydicom.data")

    def find(name: str) -> Path:
        path = pydicom_data.get_testdata_file(name)
        if path is None:
            pytest.skip(f"{name} not available (install pydicom-data)")
        return Path(path)

    return find


@pytest.fixture(scope="session")
def pyradiomics() -> Path:
    folder = DATA / "pyradiomics"
    if not (folder / "brain1_image.nrrd").exists():
        pytest.skip(f"shared pyradiomics data not found at {folder}")
    return folder


@pytest.fixture
def ct_series(tmp_path, dicom_file) -> tuple[Path, list[float]]:
    """A 5-slice series made of the real CT slice at shuffled positions, in a suffix-less PACS-style folder.

    Each slice gets its own RescaleIntercept so tests can tell slices apart; returns the folder and
    the intercepts in true slice order.
    """
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    folder = tmp_path / "series"
    folder.mkdir()
    z0 = float(ds.ImagePositionPatient[2])
    for file_no, k in enumerate([3, 0, 4, 1, 2]):           # file order != slice order
        ds.ImagePositionPatient[2] = z0 + 2.5 * k
        ds.InstanceNumber = 5 - k
        ds.RescaleIntercept = -1024 + 100 * k
        ds.save_as(folder / f"IM{file_no:04d}")
    return folder, [-1024 + 100 * k for k in range(5)]
