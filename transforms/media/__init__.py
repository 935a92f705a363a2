"""Adapters for media: decoding and encoding video and images, Project Aria VRS, and the
frame sources that turn every input format into instants of frames."""
