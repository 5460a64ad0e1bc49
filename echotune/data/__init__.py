"""Dataset layer: data.yaml, label parsing, the data check, the leakage guard, leak-free splits, the torch dataset
and synthetic data."""

from echotune.data.check import CheckedDataset, Sample, check_dataset, video_id
from echotune.data.config import DataConfig, label_path_for, load_data_config
from echotune.data.labels import NO_VIEW, ImageLabels, parse_label_file
from echotune.data.leakage import LeakySplitsError, guard_leakage, leakage_summary
from echotune.data.problems import DataError, Problem

__all__ = [
    "CheckedDataset",
    "DataConfig",
    "DataError",
    "ImageLabels",
    "LeakySplitsError",
    "NO_VIEW",
    "Problem",
    "Sample",
    "check_dataset",
    "guard_leakage",
    "label_path_for",
    "leakage_summary",
    "load_data_config",
    "parse_label_file",
    "video_id",
]
