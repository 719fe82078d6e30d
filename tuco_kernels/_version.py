"""The package version (read by setup.py, shown by ``tuco --version`` and ``tuco info``)."""

__version__ = "0.1.0"
