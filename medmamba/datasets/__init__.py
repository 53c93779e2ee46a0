"""Raw datasets: image I/O with exact geometry, the nnU-Net v2 raw format, verification,
MSD conversion and the synthetic demo dataset.

Importing this package needs only numpy; nibabel and SimpleITK are imported when a file is read.
"""
from medmamba.datasets.geometry import ImageGeometry, geometry_differences
from medmamba.datasets.image_io import file_ending, read_case, read_image, write_image
from medmamba.datasets.raw_dataset import (
    Case,
    declared_label_values,
    find_cases_in_folder,
    list_cases,
    load_dataset_json,
    resolve_dataset_folder,
)

__all__ = [
    "Case",
    "ImageGeometry",
    "declared_label_values",
    "file_ending",
    "find_cases_in_folder",
    "geometry_differences",
    "list_cases",
    "load_dataset_json",
    "read_case",
    "read_image",
    "resolve_dataset_folder",
    "write_image",
]
