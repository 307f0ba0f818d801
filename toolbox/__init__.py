"""tb: a command-line toolbox for the everyday chores of PyTorch vision work."""

__version__ = "0.1.0"
