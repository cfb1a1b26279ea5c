"""Execution: stages run their physical plans through an executor (the local threaded
pipeline, or another registered one), with results keyed by the content they were computed on."""
