"""The per-frame work between inference and output that needs no engine: tracking and rendering. Imports only
`core`."""
