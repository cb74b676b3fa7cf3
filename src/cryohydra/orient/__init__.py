"""Learned-distance orientation recovery (``cryohydra orient``): a Siamese network predicts the
angle between two images' orientations; orientations are then recovered by matching those
angles, and the detector-side rotation the angles cannot see is found from the images."""
