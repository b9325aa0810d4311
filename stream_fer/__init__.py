"""stream-fer: real-time, interpretable facial-expression analysis for video."""

__version__ = "0.1.0"
