"""nas-kd: given a fixed teacher and a compute budget, find, distil and ship the best small student CNN."""

__version__ = "0.1.0"
__all__ = ["__version__"]
