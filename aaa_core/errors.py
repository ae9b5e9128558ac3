"""The project's expected failures: each carries one line that names the file (or key) and what was expected.

The stages print an ``AAAError`` as that one line, without a traceback (``stages._cli.run``); anything
else is a bug and keeps its traceback. They subclass ``ValueError`` because each one is bad input, not a
fault of the code.
"""
from __future__ import annotations


class AAAError(ValueError):
    """An expected failure whose message alone tells the user what is wrong and how to fix it."""


class CheckpointError(AAAError):
    """A model checkpoint or resume state that is missing, damaged, or not the model the caller asked for."""


class DataFileError(AAAError):
    """A prepared data file (``data/<dataset>/<dataset>.pt``) that is missing, damaged or incomplete."""


class UserInputError(AAAError):
    """A classifier spec, weights file or image folder that cannot be used as given."""
