"""Training and evaluation data: Synthetic Shapes, image folders and their labels, photo crops,
HPatches (reading and building), validation patches, photometric and homographic augmentation."""
