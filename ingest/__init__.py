"""Ingest: accepts images over HTTP and publishes one ImageSubmitted event per image."""
