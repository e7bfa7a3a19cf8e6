"""Which files count as images, for every tool that reads folders of them (OpenCV reads them all)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp")
