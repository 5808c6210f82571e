"""segport: a self-hosted segment export service, wire-compatible with GrowingIO's OpenAPI."""

__version__ = "0.1.0"
