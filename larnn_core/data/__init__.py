"""UCI HAR arrays from either source (official zip or offline HAPT rebuild), cached and verified."""

from larnn_core.data.dataset import CHANNELS, CLASSES, TEST_SUBJECTS, HARData, cache_path, load
from larnn_core.data.splits import Splits, make_splits

SOURCES = ("hapt", "uci")

__all__ = ["CHANNELS", "CLASSES", "SOURCES", "TEST_SUBJECTS", "HARData", "Splits", "cache_path", "load", "make_splits"]
