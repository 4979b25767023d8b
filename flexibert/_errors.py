"""Errors raised by flexibert."""


class InvalidArchitectureError(ValueError):
    """An architecture that is malformed or lies outside the design space; the message names the
    layer and the field at fault."""


class ExportError(RuntimeError):
    """A model could not be exported to, or does not run in, a runtime; the message names the
    runtime and, where known, the operation."""
