"""Exceptions that carry a message a user can act on."""


class GenbenchError(Exception):
    """Base class: the message names the problem and how to fix it."""


class RegistrationError(GenbenchError):
    """A plugin registered something invalid (duplicate name, wrong type, missing attribute)."""


class UnknownNameError(GenbenchError, KeyError):
    """A model, dataset or metric name that nothing registered."""

    def __str__(self):  # KeyError would repr() the message
        return self.args[0] if self.args else ""


class BudgetError(GenbenchError, ValueError):
    """A budget string that cannot be parsed."""


class DatasetError(GenbenchError):
    """A dataset that cannot be loaded (missing files, wrong layout)."""


class CapabilityError(GenbenchError):
    """A model was asked for something its declared capabilities do not include."""


class NonFiniteLossError(GenbenchError):
    """A training step returned a NaN or infinite loss."""
