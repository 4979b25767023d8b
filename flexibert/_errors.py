"""Errors raised by flexibert, and the base of every error the four packages raise for a problem the
user can fix.

A command-line tool prints an :class:`EdgetranError`'s message as one line, ``<prog>: error:
<message>``, and exits with status 2, so each message names what is wrong and, where it is not obvious,
the fix. Each subclass also derives from the built-in error it refines (``ValueError`` for bad input,
``RuntimeError`` for a failed operation, ``ImportError`` for a missing package), so code that catches
those keeps working.
"""


class EdgetranError(Exception):
    """A problem the user can fix (a bad file, store, option or architecture, missing hardware or
    package, a failed export); the message names the problem and the fix."""


class InvalidArchitectureError(EdgetranError, ValueError):
    """An architecture that is malformed or lies outside the design space; the message names the
    layer and the field at fault."""


class ExportError(EdgetranError, RuntimeError):
    """A model could not be exported to, or does not run in, a runtime; the message names the
    runtime and, where known, the operation."""
