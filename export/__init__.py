"""chargen.export: checkpoint -> ONNX step graph, checked against torch."""
