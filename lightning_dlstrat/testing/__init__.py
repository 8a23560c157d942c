"""Test helpers that ship with the package: a Hub-compatible HTTP server (:mod:`.hub_server`)."""
