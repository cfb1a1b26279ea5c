"""Classification models: what they are (:mod:`spec`), where they are registered
(:mod:`registry`), and their cached ONNX exports (:mod:`export`)."""
