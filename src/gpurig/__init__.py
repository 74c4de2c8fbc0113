"""gpurig: provision GPU hosts for LLM work from one spec (the controller package)."""

__version__ = "0.1.0"
