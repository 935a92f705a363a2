"""Beam transforms, one per stage; they wire the decisions in ``privacy`` into the graph."""
