"""The neural models: torchvision's Mask R-CNN and FCN (their settings, weights, exportable parts), and the
TensorFlow Mask R-CNN graph on OpenCV DNN."""
