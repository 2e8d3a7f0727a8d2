"""The core: the types that flow (frames, segmentations, the per-frame record), the errors, the threaded stage
runner and the run's configuration. Imports nothing of seg-video outside `core`."""
