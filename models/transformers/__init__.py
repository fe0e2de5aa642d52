"""Torch implementations of the reference transformers (imported lazily by ``models``).

Each module writes attention out by hand in the shape its model family is
exported from in practice (separate vs fused QKV, split vs unbind, additive
vs boolean masks, GQA ``repeat_kv``, rotary slicing), because those are the
graph patterns a head/channel pruner has to follow through ONNX.
"""
