"""chargen.export: checkpoint -> ONNX step graph, checked against torch; loss of a model on a text.

    from chargen.export import export_checkpoint, build_step_graph, evaluate_onnx

graph       build_step_graph(weights, model_config, vocab, ...): numpy + onnx, no torch
onnx_export export_checkpoint(output, checkpoint, precision, ...): torch side, parity check, atomic write
evaluate    open_model (a chargen.runtime.Model), evaluate_onnx(model, text, ...): onnxruntime only;
            evaluate_checkpoint(checkpoint, text, ...): torch

Names load lazily, so importing chargen.export (or chargen.export.evaluate) never loads torch.
"""

_LAZY = {
    "build_step_graph": "chargen.export.graph",
    "GraphError": "chargen.export.graph",
    "export_checkpoint": "chargen.export.onnx_export",
    "model_to_onnx": "chargen.export.onnx_export",
    "quantize_int8": "chargen.export.onnx_export",
    "check_parity": "chargen.export.onnx_export",
    "ExportError": "chargen.export.onnx_export",
    "ExportResult": "chargen.export.onnx_export",
    "ParityReport": "chargen.export.onnx_export",
    "open_model": "chargen.export.evaluate",
    "evaluate_checkpoint": "chargen.export.evaluate",
    "evaluate_onnx": "chargen.export.evaluate",
    "load_eval_text": "chargen.export.evaluate",
    "EvalError": "chargen.export.evaluate",
    "EvalResult": "chargen.export.evaluate",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chargen.export' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
