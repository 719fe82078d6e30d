"""Exceptions for problems the user can fix, each naming what was wrong (a file and line, a prompt, an option, a
model field).

The CLI turns a :class:`TucoError` into one line, ``tuco: error: ...``, and exit status 2; the Python API raises
the same exceptions with the same messages. Anything else that escapes is a bug in tuco_kernels: the CLI says so
in one line, keeps the traceback in a file and asks for a report.
"""


import numbers


class TucoError(ValueError):
    """A problem with the user's input: a file, a prompt, a model field or an option. The message names it."""


class OptionError(TucoError):
    """An option (a keyword argument or command-line flag) that has no valid meaning."""


class PromptError(TucoError):
    """A prompt or prompt file that cannot be read, or a prompt that does not fit the model."""


class OutputError(TucoError):
    """An output path that cannot be written, or would overwrite something it must not."""


class ModelError(TucoError):
    """A model, tokenizer or checkpoint that cannot be loaded as given."""


class IncompatiblePairError(ModelError):
    """The pre-trained and fine-tuned models cannot be decomposed against each other."""

    def __init__(self, field: str, pretrained, finetuned, hint: str = ""):
        self.field = field
        msg = f"incompatible pair: {field} differs (pre-trained: {pretrained!r}, fine-tuned: {finetuned!r})"
        super().__init__(msg + (f"; {hint}" if hint else ""))


class UnsupportedModelError(ModelError):
    """The model's family is not one whose decoder blocks the engine can drive exactly."""


class DeviceMemoryError(TucoError):
    """Device memory ran out even for a single prompt, or a memory budget cannot hold the work."""


def positive_int(name: str, value) -> int:
    """``value`` as an int when it is a whole number ≥ 1 (an int or numpy integer, not a bool, float or string);
    otherwise an :class:`OptionError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise OptionError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
