"""Data layer: dataset discovery (NIfTI, DICOM series, MONAI datalists), DICOM writing and
reading glue for MONAI, demo-data synthesis and anatomical phantoms. See docs/data.md."""

from .datasets import NIFTI_SUFFIXES, build_datalist, check_nifti, find_images, load_datalist, split_datalist
from .demo_datasets import DEMO_KINDS, DEMO_MARKER, prepare_demo_data, write_nifti
from .dicom import SOP_CLASSES, dicom_geometry, list_dicom_series, read_template, write_dicom_series, write_enhanced_dicom
from .io import (
    ITKSeriesReader,
    SaveDicomSeries,
    SaveDicomSeriesd,
    SaveDicomSeriesD,
    SaveDicomSeriesDict,
    SaveJSONSidecard,
)
from .phantoms import ct_phantom, mr_phantom
