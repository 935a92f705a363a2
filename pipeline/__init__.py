"""The launcher: command line, pipeline options, graph building, run and report."""
