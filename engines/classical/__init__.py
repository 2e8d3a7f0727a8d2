"""Classical CPU engines (no weights, always available), one module each; the registry in `engines.base` names them.

`threshold` (grey levels), `edges` (closed edge contours), `kmeans` (colour clusters), `region` (watershed from
distance-transform markers) and `motion` (background subtraction). All emit instance segmentations in frame size.
"""
