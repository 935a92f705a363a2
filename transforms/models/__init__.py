"""Models: the world-model encoders (which, how they are loaded) and their runtime."""
