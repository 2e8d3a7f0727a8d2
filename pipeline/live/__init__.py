"""The live job: cameras and streams (and files played as live) into a window, a browser view and recordings."""
