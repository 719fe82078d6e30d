"""Exceptions raised for problems the user can fix (bad input, incompatible models).

The CLI turns a :class:`TucoError` into a one-line message and a non-zero exit status instead of a
traceback; the Python API lets it propagate with the same message.
"""


class TucoError(ValueError):
    """A problem with the user's input: a file, a prompt, a model field. The message names it."""


class IncompatiblePairError(TucoError):
    """The pre-trained and fine-tuned models cannot be decomposed against each other."""

    def __init__(self, field: str, pretrained, finetuned, hint: str = ""):
        self.field = field
        msg = f"incompatible pair: {field} differs (pre-trained: {pretrained!r}, fine-tuned: {finetuned!r})"
        super().__init__(msg + (f"; {hint}" if hint else ""))


class UnsupportedModelError(TucoError):
    """The model's family is not one whose decoder blocks the engine is known to drive exactly."""
