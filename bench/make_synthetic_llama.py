"""A LLaMA-style decoder as an ONNX file with external data, built directly with onnx.helper.

    python bench/make_synthetic_llama.py tiny -o /tmp/llama_tiny.onnx [--seed 0] [--check]
    python bench/make_synthetic_llama.py --list

No torch: the graph is written node by node, and every weight is drawn (seeded, per tensor)
and streamed straight into one `<name>.onnx.data` file, in chunks, so building a 1B-parameter
model holds at most one chunk of weights in memory. The graph follows what the PyTorch
exporters emit for HF's eager `LlamaForCausalLM` (dynamo-style: dynamic dims come from
Shape → Gather → Unsqueeze → Concat, static dims are literals):

- embedding `Gather(embed_tokens, input_ids)`;
- per layer: RMSNorm as Pow/ReduceMean/Add/Sqrt/Div/Mul/Mul(weight); q/k/v MatMuls with
  grouped-query attention; Reshape/Transpose to heads; RoPE `q*cos + cat(-q2, q1)*sin`
  (Slice/Neg/Concat/Mul/Add); repeat_kv (Unsqueeze/Expand/Reshape); Q·Kᵀ MatMul; scale Mul;
  additive mask Add; Softmax; ·V MatMul; Transpose/Reshape; o_proj; residual Add; SwiGLU MLP
  (gate/up/down, SiLU as Sigmoid·Mul); residual Add;
- final RMSNorm and an untied LM head MatMul.

Graph inputs, all with dynamic `batch` and `sequence` axes: `input_ids` int64 [B, S];
`cos`, `sin` float [B, S, head_dim] (HF passes the rotary tables into the layers as
`position_embeddings` of this shape; unsqueezed to [B, 1, S, D] inside); `attention_mask`
float [B, 1, S, S] (additive, HF's 4-D causal mask). Output `logits` [B, S, vocab].

The rotary tables and the mask are graph inputs (not computed from Range/Trilu) so that the
model's size is all in its weights and the validation can feed them at any sequence length.
Their leading axis is the batch axis on purpose: graphprune's validation gives the first
dynamic axis of every input the batch size, so a [S, D] table would be fed [batch, D].
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17
ALIGN = 4096  # data offsets on page boundaries (as onnx's own external-data writer does)
CHUNK = 1 << 22  # floats drawn per step (16 MiB): the builder's working set for weights


@dataclass(frozen=True)
class Config:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def params(self) -> int:
        h, d = self.hidden, self.head_dim
        attn = h * self.heads * d * 2 + h * self.kv_heads * d * 2
        mlp = 3 * h * self.intermediate
        return self.layers * (attn + mlp + 2 * h) + 2 * self.vocab * h + h


SIZES = {
    # head_dim 64 (LLaMA/TinyLlama) except tiny (32: four KV heads, so --ratio 0.4 removes one)
    "tiny": Config(layers=4, hidden=256, intermediate=688, heads=8, kv_heads=4, vocab=16000),
    "small": Config(layers=8, hidden=768, intermediate=2048, heads=12, kv_heads=4, vocab=32000),
    "medium": Config(layers=20, hidden=1024, intermediate=2816, heads=16, kv_heads=4,
                     vocab=32000),
    # TinyLlama-1.1B's widths (hidden 2048, SwiGLU 5632, 32 query / 4 KV heads of 64 there;
    # 8 KV heads here) with 20 layers: 1.03B parameters, 4.1 GB in fp32
    "1b": Config(layers=20, hidden=2048, intermediate=5632, heads=32, kv_heads=8, vocab=32000),
}


class _Builder:
    def __init__(self, cfg: Config, data: BinaryIO, location: str, seed: int) -> None:
        self.cfg = cfg
        self.data = data
        self.location = location
        self.seed = seed
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.offset = 0
        self.count = 0
        self.params = 0

    # -- weights, streamed to the data file ----------------------------------------------------
    def weight(self, name: str, shape: tuple[int, ...], std: float, mean: float = 0.0) -> str:
        """A float32 initializer of N(mean, std²), drawn in chunks straight into the file."""
        pad = -self.offset % ALIGN
        if pad:
            self.data.write(b"\0" * pad)
            self.offset += pad
        n = math.prod(shape)
        rng = np.random.default_rng([self.seed, self.count])
        self.count += 1
        left = n
        while left:
            k = min(left, CHUNK)
            chunk = rng.standard_normal(k, dtype=np.float32)
            chunk *= np.float32(std)
            if mean:
                chunk += np.float32(mean)
            self.data.write(chunk.astype("<f4", copy=False).tobytes())
            left -= k
        t = TensorProto(name=name, dims=shape, data_type=TensorProto.FLOAT)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", self.offset),
                           ("length", 4 * n)):
            t.external_data.add(key=key, value=str(value))
        self.offset += 4 * n
        self.params += n
        self.inits.append(t)
        return name

    # -- nodes ----------------------------------------------------------------------------------
    def op(self, op_type: str, inputs: list[str], name: str, n_out: int = 1, **attrs) -> str:
        outs = [f"{name}_output_{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0]

    def const(self, name: str, value, dtype=np.int64) -> str:
        arr = np.asarray(value, dtype=dtype)
        return self.op("Constant", [], name, value=onnx.numpy_helper.from_array(arr))

    def dim(self, x: str, axis: int, name: str) -> str:
        """x.shape[axis] as a 1-element int64 tensor (Shape → Gather → Unsqueeze)."""
        s = self.op("Shape", [x], f"{name}/Shape")
        g = self.op("Gather", [s, self.const(f"{name}/Constant", axis)], f"{name}/Gather",
                    axis=0)
        return self.op("Unsqueeze", [g, self.const(f"{name}/Constant_1", [0])],
                       f"{name}/Unsqueeze")

    def shape(self, parts: list, name: str) -> str:
        """Concat of dynamic dims (tensor names) and static ones (ints)."""
        ins = [p if isinstance(p, str) else self.const(f"{name}/Constant_{k}", [p])
               for k, p in enumerate(parts)]
        return self.op("Concat", ins, f"{name}/Concat", axis=0)

    def rms_norm(self, x: str, prefix: str, weight_name: str) -> str:
        w = self.weight(weight_name, (self.cfg.hidden,), std=0.1, mean=1.0)
        p = self.op("Pow", [x, self.const(f"{prefix}/Constant", 2.0, np.float32)], f"{prefix}/Pow")
        m = self.op("ReduceMean", [p], f"{prefix}/ReduceMean", axes=[-1], keepdims=1)
        a = self.op("Add", [m, self.const(f"{prefix}/Constant_1", 1e-6, np.float32)],
                    f"{prefix}/Add")
        s = self.op("Sqrt", [a], f"{prefix}/Sqrt")
        d = self.op("Div", [self.const(f"{prefix}/Constant_2", 1.0, np.float32), s],
                    f"{prefix}/Div")
        y = self.op("Mul", [x, d], f"{prefix}/Mul")
        return self.op("Mul", [w, y], f"{prefix}/Mul_1")

    def linear(self, x: str, prefix: str, weight_name: str, n_in: int, n_out: int) -> str:
        """nn.Linear without bias as exported: MatMul with the weight stored [in, out]."""
        w = self.weight(weight_name, (n_in, n_out), std=0.02)
        return self.op("MatMul", [x, w], f"{prefix}/MatMul")

    def rope(self, x: str, cos: str, sin: str, prefix: str) -> str:
        half = self.cfg.head_dim // 2
        big = np.iinfo(np.int64).max
        axes = self.const(f"{prefix}/Constant_axes", [-1])
        x1 = self.op("Slice", [x, self.const(f"{prefix}/Constant", [0]),
                               self.const(f"{prefix}/Constant_1", [half]), axes],
                     f"{prefix}/Slice")
        x2 = self.op("Slice", [x, self.const(f"{prefix}/Constant_2", [half]),
                               self.const(f"{prefix}/Constant_3", [big]), axes],
                     f"{prefix}/Slice_1")
        rot = self.op("Concat", [self.op("Neg", [x2], f"{prefix}/Neg"), x1],
                      f"{prefix}/Concat", axis=-1)
        return self.op("Add", [self.op("Mul", [x, cos], f"{prefix}/Mul"),
                               self.op("Mul", [rot, sin], f"{prefix}/Mul_1")], f"{prefix}/Add")

    def to_heads(self, x: str, heads: int, prefix: str) -> str:
        """[B, S, heads*D] → [B, heads, S, D] (view + transpose)."""
        shape = self.shape([self.dim(x, 0, f"{prefix}/b"), self.dim(x, 1, f"{prefix}/s"),
                            heads, self.cfg.head_dim], prefix)
        r = self.op("Reshape", [x, shape], f"{prefix}/Reshape")
        return self.op("Transpose", [r], f"{prefix}/Transpose", perm=[0, 2, 1, 3])

    def repeat_kv(self, x: str, n_rep: int, prefix: str) -> str:
        """[B, kv, S, D] → [B, kv*n_rep, S, D]: x[:, :, None].expand(...).reshape(...)."""
        if n_rep == 1:
            return x
        c, d = self.cfg, self.cfg.head_dim
        b, s = self.dim(x, 0, f"{prefix}/b"), self.dim(x, 2, f"{prefix}/s")
        u = self.op("Unsqueeze", [x, self.const(f"{prefix}/Constant", [2])], f"{prefix}/Unsqueeze")
        e = self.op("Expand", [u, self.shape([b, c.kv_heads, n_rep, s, d], f"{prefix}/expand")],
                    f"{prefix}/Expand")
        return self.op("Reshape", [e, self.shape([b, c.kv_heads * n_rep, s, d],
                                                 f"{prefix}/reshape")], f"{prefix}/Reshape")

    def layer(self, x: str, cos: str, sin: str, mask: str, i: int) -> str:
        c, d = self.cfg, self.cfg.head_dim
        pre, wp = f"/model/layers.{i}", f"model.layers.{i}"
        h = self.rms_norm(x, f"{pre}/input_layernorm", f"{wp}.input_layernorm.weight")
        at = f"{pre}/self_attn"
        q = self.linear(h, f"{at}/q_proj", f"{wp}.self_attn.q_proj.weight", c.hidden, c.heads * d)
        k = self.linear(h, f"{at}/k_proj", f"{wp}.self_attn.k_proj.weight", c.hidden,
                        c.kv_heads * d)
        v = self.linear(h, f"{at}/v_proj", f"{wp}.self_attn.v_proj.weight", c.hidden,
                        c.kv_heads * d)
        q = self.rope(self.to_heads(q, c.heads, f"{at}/q"), cos, sin, f"{at}/q_rope")
        k = self.rope(self.to_heads(k, c.kv_heads, f"{at}/k"), cos, sin, f"{at}/k_rope")
        v = self.to_heads(v, c.kv_heads, f"{at}/v")
        n_rep = c.heads // c.kv_heads
        k = self.repeat_kv(k, n_rep, f"{at}/repeat_kv")
        v = self.repeat_kv(v, n_rep, f"{at}/repeat_kv_1")
        kt = self.op("Transpose", [k], f"{at}/Transpose", perm=[0, 1, 3, 2])
        scores = self.op("MatMul", [q, kt], f"{at}/MatMul")
        scores = self.op("Mul", [scores, self.const(f"{at}/Constant", 1 / math.sqrt(d),
                                                    np.float32)], f"{at}/Mul")
        scores = self.op("Add", [scores, mask], f"{at}/Add")
        probs = self.op("Softmax", [scores], f"{at}/Softmax", axis=-1)
        out = self.op("MatMul", [probs, v], f"{at}/MatMul_1")
        out = self.op("Transpose", [out], f"{at}/Transpose_1", perm=[0, 2, 1, 3])
        merged = self.shape([self.dim(out, 0, f"{at}/merge_b"), self.dim(out, 1, f"{at}/merge_s"),
                             c.heads * d], f"{at}/merge")
        out = self.op("Reshape", [out, merged], f"{at}/Reshape")
        out = self.linear(out, f"{at}/o_proj", f"{wp}.self_attn.o_proj.weight", c.heads * d,
                          c.hidden)
        x = self.op("Add", [x, out], f"{pre}/Add")
        h = self.rms_norm(x, f"{pre}/post_attention_layernorm",
                          f"{wp}.post_attention_layernorm.weight")
        ml = f"{pre}/mlp"
        gate = self.linear(h, f"{ml}/gate_proj", f"{wp}.mlp.gate_proj.weight", c.hidden,
                           c.intermediate)
        up = self.linear(h, f"{ml}/up_proj", f"{wp}.mlp.up_proj.weight", c.hidden,
                         c.intermediate)
        act = self.op("Mul", [gate, self.op("Sigmoid", [gate], f"{ml}/act_fn/Sigmoid")],
                      f"{ml}/act_fn/Mul")
        down = self.linear(self.op("Mul", [act, up], f"{ml}/Mul"), f"{ml}/down_proj",
                           f"{wp}.mlp.down_proj.weight", c.intermediate, c.hidden)
        return self.op("Add", [x, down], f"{pre}/Add_1")


def build(cfg: Config, path: str | Path, seed: int = 0) -> dict:
    """Write the model to `path` and its weights to `path.data`; returns a summary."""
    if cfg.hidden % cfg.heads or cfg.heads % cfg.kv_heads or (cfg.hidden // cfg.heads) % 2:
        raise ValueError(f"bad head layout: {cfg}")
    path = Path(path)
    data_path = path.with_name(path.name + ".data")
    t0 = time.perf_counter()
    with open(data_path, "wb") as data:
        b = _Builder(cfg, data, data_path.name, seed)
        d = cfg.head_dim
        dyn = ["batch", "sequence"]
        inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, dyn),
            helper.make_tensor_value_info("cos", TensorProto.FLOAT, [*dyn, d]),
            helper.make_tensor_value_info("sin", TensorProto.FLOAT, [*dyn, d]),
            helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT,
                                          ["batch", 1, "sequence", "sequence"]),
        ]
        emb = b.weight("model.embed_tokens.weight", (cfg.vocab, cfg.hidden), std=1.0)
        x = b.op("Gather", [emb, "input_ids"], "/model/embed_tokens/Gather", axis=0)
        one = b.const("/model/rotary/Constant", [1])
        cos = b.op("Unsqueeze", ["cos", one], "/model/rotary/Unsqueeze")
        sin = b.op("Unsqueeze", ["sin", one], "/model/rotary/Unsqueeze_1")
        for i in range(cfg.layers):
            x = b.layer(x, cos, sin, "attention_mask", i)
        x = b.rms_norm(x, "/model/norm", "model.norm.weight")
        logits = b.linear(x, "/lm_head", "lm_head.weight", cfg.hidden, cfg.vocab)
        b.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="/Identity"))
        data_bytes = b.offset
    graph = helper.make_graph(
        b.nodes, "synthetic_llama", inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [*dyn, cfg.vocab])],
        initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="graphprune-bench", ir_version=8)
    path.write_bytes(model.SerializeToString())
    return {"params": b.params, "nodes": len(b.nodes), "initializers": len(b.inits),
            "onnx_bytes": path.stat().st_size, "data_bytes": data_bytes,
            "seconds": time.perf_counter() - t0}


def feeds(cfg: Config, batch: int = 1, seq: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Real inputs: token ids, the rotary tables of positions 0..S-1, a causal mask."""
    rng = np.random.default_rng(seed)
    d = cfg.head_dim
    inv = 1.0 / (10000.0 ** (np.arange(0, d, 2, dtype=np.float32) / d))
    freqs = np.outer(np.arange(seq, dtype=np.float32), inv)
    emb = np.concatenate([freqs, freqs], -1)
    mask = np.triu(np.full((seq, seq), np.finfo(np.float32).min, np.float32), 1)
    return {"input_ids": rng.integers(0, cfg.vocab, (batch, seq)).astype(np.int64),
            "cos": np.broadcast_to(np.cos(emb), (batch, seq, d)).astype(np.float32),
            "sin": np.broadcast_to(np.sin(emb), (batch, seq, d)).astype(np.float32),
            "attention_mask": np.broadcast_to(mask, (batch, 1, seq, seq)).copy()}


def input_shape_args(cfg: Config, batch: int = 1, seq: int = 8) -> list[str]:
    """`--input-shape` options for graphprune: a short sequence for the validation."""
    d = cfg.head_dim
    return [f"input_ids:{batch}x{seq}", f"cos:{batch}x{seq}x{d}", f"sin:{batch}x{seq}x{d}",
            f"attention_mask:{batch}x1x{seq}x{seq}"]


def check(path: Path, cfg: Config, ratio: float = 0.4) -> None:
    """The model runs in onnxruntime; graphprune prunes heads (GQA groups) and FFN neurons of
    it and proves the rewrite."""
    import onnxruntime as ort

    import graphprune

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, seq in ((1, 8), (2, 13)):
        out = sess.run(None, feeds(cfg, batch, seq))[0]
        print(f"onnxruntime: logits {out.shape}, finite {bool(np.isfinite(out).all())}, "
              f"std {out.std():.3f}")
    sizes = {s.split(":")[0]: [int(v) for v in s.split(":")[1].split("x")]
             for s in input_shape_args(cfg)}
    t = time.perf_counter()
    pruned, report = graphprune.compress(str(path), ratio=ratio, input_sizes=sizes)
    print(f"compress(ratio={ratio}) in {time.perf_counter() - t:.1f} s: params "
          f"{report.params_before:,} -> {report.params_after:,}; exact check "
          f"{'passed' if report.exact_check['passed'] else 'FAILED'} "
          f"(max abs err {report.exact_check['max_abs_err']:.1e})")
    kinds: dict[str, list[int]] = {}
    for g in report.group_details:
        k = kinds.setdefault(g.kind or "?", [0, 0, 0, 0])
        k[0] += 1
        k[1] += g.units_before
        k[2] += g.units_after
        k[3] += g.frozen
    for kind, (n, before, after, frozen) in sorted(kinds.items()):
        print(f"  {kind:<10} {n:>3} groups, units {before} -> {after} ({frozen} frozen)")
    for g in report.group_details[:6]:
        print(f"  e.g. {g.name}: {g.units_before} -> {g.units_after} ({g.kind})")
    if report.blockers:
        print(f"  blockers: {report.blockers}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("size", nargs="?", choices=sorted(SIZES))
    ap.add_argument("-o", "--output", help="output .onnx (default: llama_<size>.onnx)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true", help="list the sizes")
    ap.add_argument("--check", action="store_true",
                    help="run it in onnxruntime and compress it at --ratio 0.4")
    args = ap.parse_args(argv)
    if args.list or not args.size:
        for name, cfg in SIZES.items():
            print(f"{name:<8} {cfg.params() / 1e6:8.1f}M params, {cfg.params() * 4 / 1e9:5.2f} GB"
                  f"  {cfg}")
        return 0
    cfg = SIZES[args.size]
    out = Path(args.output or f"llama_{args.size}.onnx")
    info = build(cfg, out, args.seed)
    print(f"wrote {out} (+ .data): {info['params']:,} params, {info['nodes']} nodes, "
          f"{(info['onnx_bytes'] + info['data_bytes']) / 1e9:.3f} GB in {info['seconds']:.1f} s")
    if args.check:
        check(out, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
