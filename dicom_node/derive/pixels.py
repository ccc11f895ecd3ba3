"""Stored pixel values of a source instance and the checks that say whether srnode can
super-resolve them: the engine's reader (:mod:`sr_engine.pixels`), named here for the
derive stage."""

from sr_engine.pixels import MIN_EDGE, check_supported, is_multiframe, read_pixels, stored_dtype

__all__ = ["MIN_EDGE", "check_supported", "is_multiframe", "read_pixels", "stored_dtype"]
