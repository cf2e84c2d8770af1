"""Preference data: the record type, loaders and the bundled offline benchmark."""

from frft_ray.data.loading import iter_preferences, load_preferences
from frft_ray.data.records import BadRecordError, LoadReport, PreferencePair

__all__ = ["BadRecordError", "LoadReport", "PreferencePair", "iter_preferences", "load_preferences"]
