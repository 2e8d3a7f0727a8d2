"""Classical CPU engines (no weights, always available), one module each, registered in
pyproject.toml like any engine.

`threshold` (grey levels), `edges` (closed edge contours), `kmeans` (colour clusters), `region` (watershed from
distance-transform markers) and `motion` (background subtraction). All emit instance segmentations in frame size.
"""
