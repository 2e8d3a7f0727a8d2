"""Segmentation engines behind one interface (`seg_video.engines.base.Engine`), found by name through the
entry-point group `seg_video.engines` (`seg_video.engines.base`)."""
