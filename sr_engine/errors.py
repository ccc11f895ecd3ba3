"""Typed errors of the inference engine. Each carries a plain, one-line reason."""


class SrEngineError(Exception):
    """Base class of every error sr_engine raises on purpose."""


class ModelCardError(SrEngineError):
    """A model card is missing, malformed, or does not match its weights.

    The message names the offending field, e.g. ``model card mr-x2: sha256: does not match``.
    """


class UnsupportedInput(SrEngineError):
    """The pixel data cannot be super-resolved (colour, float, 1-bit, too small...)."""


class BackendUnavailable(SrEngineError):
    """The requested backend cannot run here (library or device missing)."""
