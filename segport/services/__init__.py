"""Use cases: each public method is one thing a caller (HTTP handler, CLI command, worker) asks for."""
