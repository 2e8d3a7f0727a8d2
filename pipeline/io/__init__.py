"""Media in and out: video files (PyAV), cameras and network streams, the video writer, annotation exports, the
sample clip. Imports only `core`."""
