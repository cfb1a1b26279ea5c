"""Preprocessing operators: plan what to decode, decode it, resize and normalise into batches.

Data flows one way: :mod:`spec` (value types) -> :mod:`geometry` (choose ROI and DCT scale)
-> :mod:`steps` (the operators, each declaring its output) -> :mod:`pipeline` (one image)
-> :mod:`loader` (parallel, bounded streams of batches).
"""
