"""Benchmarks of ghvault's hot paths over HTTP (see bench/README.md)."""
