"""Trainer-side readers of published runs, and the dataset exporters beside them."""
