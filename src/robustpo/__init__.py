"""robustpo: robust offline preference optimization of language models."""

__version__ = "0.1.0"
