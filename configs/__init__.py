"""Shipped TOML presets, readable by name with `seg-video --config NAME`."""
