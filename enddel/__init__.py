"""enddel: server-side rendering of Preact applications with V8, served from Python."""

__version__ = "0.1.0"
