"""Segmentation backends behind one interface (`engines.base.Engine`), found by name in `engines.base.ENGINES`."""
