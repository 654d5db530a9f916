"""Writers: streamed TIFF, whole-frame OpenCV formats, and atomic replacement of the target."""
