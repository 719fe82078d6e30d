"""The paper's studies on the default pair, one module each (``python -m tuco_research.studies.<name> --help``)."""
