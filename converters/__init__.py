"""torch → deployable graphs: exit-split segments, ONNX export, numeric validation, bundles."""
