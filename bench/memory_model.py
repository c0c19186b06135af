"""GPU memory and step time of the 13B FramePack transformer under ComfyUI-style low-VRAM loading (a model).

    python3 -m bench.memory_model [--vram-gib 6] [--out bench/results]

Predicts, for every 640-class bucket, the GPU memory one sampling step needs when the weights stay in CPU
RAM and are streamed to the GPU block by block (bf16 or fp8 storage, bf16 compute), and what the streaming
costs in time. Nothing here runs on a GPU; the inputs are the released config, the token counts of the
section plans, and the stated assumptions. Two parts are checked against measurements on the CPU in the
same run:

- the activation formula, against the peak of live tensor bytes of a real forward of our transformer (a
  dispatch mode counts every tensor the forward allocates and frees) at bench_forward's 329M configuration
  in bfloat16;
- the FLOP formula, against bench_forward's hook count of the same forward.

Memory = CUDA context and workspace + activations + the block being computed (streamed) + the resident
blocks that fit in the rest of the budget. Writes ``memory_model.json``, ``memory_model.md`` and
``memory_model.png`` to ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from bench.bench_forward import bench_config, count_flops, f1_inputs
from bench.common import write_results
from framepack_core import FramePackConfig, FramePackTransformer, plan_sections, section_count
from framepack_core.engine.buckets import BASE_640
from framepack_core.model.transformer import ReferenceArguments

GiB = 2 ** 30
PARAMS_13B = 12_874_314_816  # the released checkpoint's exact parameter count (reference key manifest)
CONFIG_13B = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference" / "framepack_i2v_hy_config.json"

# ---- assumptions (each one is printed with the tables)
ASSUMPTIONS = {
    "compute_bytes": 2,              # bf16 activations and compute
    "siglip_tokens": 729,            # SigLIP 27x27 patches
    "text_tokens": 256,              # the longest Llama prompt the demos keep (729 + 256 = 985 context tokens)
    "cuda_context_gib": 0.5,         # CUDA context, cuBLAS workspace and allocator slack, outside torch's tensors
    "pcie_gb_s": (25.0, 12.0),       # host-to-device copy: PCIe 4.0 x16 desktop, PCIe 3.0 x16 / 4.0 x8 laptop
    "gpu_tflop_s": {"RTX 4090 (desktop, 24 GB)": 130.0, "RTX 3060 Laptop (6 GB)": 20.0},  # effective bf16
    "seconds": 5,                    # video length used to pick the sections' token counts
}


# ------------------------------------------------------------------------------------------- weights

def model_on_meta(config: FramePackConfig) -> FramePackTransformer:
    with torch.device("meta"):
        return FramePackTransformer(config)


def unit_params(model: FramePackTransformer) -> dict:
    """Parameters of every streaming unit: each transformer block, and each top-level module outside them."""
    units = {}
    for name, child in model.named_children():
        if isinstance(child, torch.nn.ModuleList):
            for i, block in enumerate(child):
                units[f"{name}.{i}"] = module_params(block)
        else:
            units[name] = module_params(child)
    return units


def module_params(module: torch.nn.Module) -> dict:
    """Parameter counts split into the blocks' Linear weights (fp8-able) and everything else."""
    linear = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    total = sum(p.numel() for p in module.parameters())
    largest = max((m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear)), default=0)
    return {"total": total, "linear_weights": linear, "largest_linear": largest}


def unit_bytes(params: dict, storage: str, is_block: bool) -> int:
    """Bytes a unit occupies in storage dtype: fp8 stores only the blocks' Linear weights in 1 byte (as
    ComfyUI's fp8 repacks and ``load_transformer(dtype=fp8)`` do), everything else stays bf16."""
    if storage == "fp8" and is_block:
        return params["linear_weights"] + 2 * (params["total"] - params["linear_weights"])
    return 2 * params["total"]


def streamed_unit_bytes(params: dict, storage: str, is_block: bool) -> int:
    """GPU bytes while a unit computes: its weights, plus for fp8 the bf16 copy of one Linear weight being cast."""
    extra = 2 * params["largest_linear"] if storage == "fp8" and is_block else 0
    return unit_bytes(params, storage, is_block) + extra


# ------------------------------------------------------------------------------------------- activations

def activation_bytes(config: FramePackConfig, image_tokens: int, context_tokens: int, compute_bytes: int = 2) -> dict:
    """Peak live activation bytes of one forward of our transformer, term by term.

    The peak is in a single-stream block when ``attention_and_mlp`` concatenates [attention | MLP]: the
    previous block's output and this block's residual, modulated input and attention output (1 sequence
    width each), the GELU MLP (mlp_ratio widths) and the concatenation (1 + mlp_ratio widths); q, k and v
    are already freed. (In bf16, rotating k ties with it: 7 widths held plus three float32 buffers.)
    Alive through all blocks: the packed image tokens, the context tokens, and the float32 RoPE tables
    (the packed cos and sin per image token, the blocks' cos and signed sin per token). Attention is flash /
    memory-efficient SDPA: no sequence x sequence score matrix. The output head's float32 temporaries (noisy
    tokens only) come after the blocks and are smaller.
    """
    seq = image_tokens + context_tokens
    width = config.inner_dim * compute_bytes
    mlp = config.mlp_ratio
    terms = {
        "previous block output": seq * width,
        "residual stream": seq * width,
        "modulated input": seq * width,
        "attention output": seq * width,
        "GELU MLP": mlp * seq * width,
        "[attention, MLP] concatenation": (1 + mlp) * seq * width,
        "packed image tokens + context tokens": seq * width,
        "RoPE tables (float32)": (2 * image_tokens + 2 * seq) * config.attention_head_dim * 4,
    }
    return {"terms": terms, "total": sum(terms.values())}


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of every tensor storage the ops allocate while they are alive, and the peak.

    Storages that existed before (weights, inputs) are ignored; a storage counts once however many views
    refer to it, and is released when the last of them is garbage-collected.
    """

    def __init__(self, ignore: set):
        super().__init__()
        self.ignore, self.refs, self.sizes = ignore, {}, {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self.track(tensor)
        return out

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self.ignore or storage.nbytes() == 0:
            return
        if key not in self.refs:
            self.refs[key], self.sizes[key] = 0, storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        self.refs[key] += 1
        weakref.finalize(tensor, self.release, key)

    def release(self, key) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            del self.refs[key]
            self.current -= self.sizes.pop(key)


def measured_activation_peak(model: FramePackTransformer, inputs: dict) -> int:
    existing = {p.untyped_storage().data_ptr() for p in model.parameters()}
    existing |= {v.untyped_storage().data_ptr() for v in inputs.values() if torch.is_tensor(v)}
    counter = LiveTensorBytes(existing)
    with torch.inference_mode(), counter:
        model(**inputs)
    return counter.peak


def check_activation_formula() -> dict:
    """The formula against the live-tensor peak of a real bf16 forward at bench_forward's configuration."""
    config = bench_config()
    torch.manual_seed(0)
    model = ReferenceArguments(FramePackTransformer(config, dtype=torch.bfloat16).eval().requires_grad_(False))
    inputs = f1_inputs(config)  # the reference's named forward keywords
    image_tokens, context_tokens, noisy_tokens = tokens_of(model, inputs)
    predicted = activation_bytes(config, image_tokens, context_tokens)["total"]
    measured = measured_activation_peak(model, inputs)
    counted = count_flops(model, inputs)["total"]
    return {"config": "bench_forward (329M), bfloat16", "image_tokens": image_tokens, "context_tokens": context_tokens,
            "predicted_bytes": predicted, "measured_bytes": measured,
            "predicted_flops": forward_flops(config, image_tokens, context_tokens, noisy_tokens,
                                             inputs["image_embeddings"].shape[1], int(inputs["encoder_attention_mask"].sum())),
            "counted_flops": counted}


def tokens_of(model: FramePackTransformer, inputs: dict) -> tuple:
    clean = {k: v for k, v in inputs.items() if k.startswith("clean_")}
    with torch.inference_mode():
        hidden = inputs["hidden_states"].to(model.compute_dtype)
        image = model.pack_image_tokens(hidden, inputs["latent_indices"], **clean).tokens.shape[1]
    context = inputs["image_embeddings"].shape[1] + int(inputs["encoder_attention_mask"].sum())
    _, _, t, h, w = inputs["hidden_states"].shape
    return image, context, t * h * w // 4


# ------------------------------------------------------------------------------------------- FLOPs

def forward_flops(config: FramePackConfig, image_tokens: int, context_tokens: int, noisy_tokens: int,
                  siglip_tokens: int, text_tokens: int) -> float:
    """Matmul FLOPs of one forward (2 per multiply-add; patch embedders and per-sample vectors left out).

    Each block Linear processes its stream's tokens: dual blocks 12 D^2 weights per image token and per
    context token, single blocks 12 D^2 per token of the joint sequence; joint attention 4 S^2 D per block;
    the token refiner runs on the text tokens, the image projection on the SigLIP tokens.
    """
    d, seq = config.inner_dim, image_tokens + context_tokens
    mlp = config.mlp_dim
    per_token = 4 * d * d + 2 * d * mlp  # q, k, v, out + the MLP
    dual = config.num_layers * (2 * per_token * seq + 4 * seq * seq * d)
    single = config.num_single_layers * (2 * (3 * d * d + d * mlp + (d + mlp) * d) * seq + 4 * seq * seq * d)
    refiner = config.num_refiner_layers * (2 * per_token * text_tokens + 4 * text_tokens ** 2 * d)
    embed = 2 * (config.text_embed_dim * d * text_tokens + 6 * config.image_proj_dim * d * siglip_tokens
                 + 3 * d * d * siglip_tokens)
    head = 2 * d * config.out_channels * config.patch_size ** 2 * noisy_tokens
    return float(dual + single + refiner + embed + head)


# ------------------------------------------------------------------------------------------- buckets

def bucket_tokens(height: int, width: int, mode: str = "inverted_anti_drifting") -> dict:
    """Image-stream tokens of a bucket: the largest section of a default 5-second plan (window 9)."""
    latent = (height // 8, width // 8)
    plans = plan_sections(mode, section_count(ASSUMPTIONS["seconds"]), 9)
    image = max(plan.image_tokens(*latent) for plan in plans)
    noisy = 9 * latent[0] * latent[1] // 4
    return {"bucket": f"{height}x{width}", "latent": latent, "image_tokens": image, "noisy_tokens": noisy}


def predict(config: FramePackConfig, units: dict, vram_gib: float) -> list:
    """One row per bucket and storage dtype: memory, what fits resident in ``vram_gib``, step times."""
    context = ASSUMPTIONS["siglip_tokens"] + ASSUMPTIONS["text_tokens"]
    blocks = {k: v for k, v in units.items() if k.startswith(("transformer_blocks.", "single_transformer_blocks."))}
    others = {k: v for k, v in units.items() if k not in blocks}
    rows = []
    for height, width in BASE_640:
        tok = bucket_tokens(height, width)
        act = activation_bytes(config, tok["image_tokens"], context)["total"]
        flops = forward_flops(config, tok["image_tokens"], context, tok["noisy_tokens"],
                              ASSUMPTIONS["siglip_tokens"], ASSUMPTIONS["text_tokens"])
        for storage in ("bf16", "fp8"):
            rows.append(budget_row(tok, act, flops, storage, blocks, others, vram_gib))
    return rows


def budget_row(tok: dict, act: int, flops: float, storage: str, blocks: dict, others: dict, vram_gib: float) -> dict:
    """Minimum memory with every unit streamed; the blocks that stay resident within ``vram_gib``; step times."""
    block_bytes = [unit_bytes(p, storage, True) for p in blocks.values()]
    other_bytes = sum(unit_bytes(p, storage, False) for p in others.values())
    largest_stream = max([streamed_unit_bytes(p, storage, True) for p in blocks.values()]
                         + [streamed_unit_bytes(p, storage, False) for p in others.values()])
    base = ASSUMPTIONS["cuda_context_gib"] * GiB + act + largest_stream
    spare = vram_gib * GiB - base
    resident, resident_bytes = 0, 0
    for size in sorted(block_bytes):  # smallest blocks first: the most blocks for the budget
        if resident_bytes + size > spare:
            break
        resident, resident_bytes = resident + 1, resident_bytes + size
    streamed = sum(block_bytes) + other_bytes - resident_bytes
    row = {**tok, "storage": storage, "activations_gib": act / GiB, "streamed_unit_gib": largest_stream / GiB,
           "min_vram_gib": base / GiB, "fits": base <= vram_gib * GiB, "resident_blocks": resident,
           "blocks": len(block_bytes), "streamed_gb_per_step": streamed / 1e9, "tflop_per_step": flops / 1e12,
           "weights_gib": (sum(block_bytes) + other_bytes) / GiB}
    row["transfer_s"] = {f"{bw:g}": streamed / 1e9 / bw for bw in ASSUMPTIONS["pcie_gb_s"]}
    row["compute_s"] = {gpu: flops / 1e12 / tflops for gpu, tflops in ASSUMPTIONS["gpu_tflop_s"].items()}
    return row


# ------------------------------------------------------------------------------------------- report

def markdown(r: dict) -> str:
    a, chk, vram = r["assumptions"], r["check"], r["vram_gib"]
    gpus = list(a["gpu_tflop_s"])
    fast, slow = (f"{bw:g}" for bw in a["pcie_gb_s"])
    lines = [
        "# GPU memory model of the 13B FramePack transformer (low-VRAM streaming)", "",
        f"Model: `framepack_i2v_hy_config.json`, {r['params']:,} parameters (built on the meta device; the "
        f"released checkpoint has {PARAMS_13B:,}: {'equal' if r['params'] == PARAMS_13B else 'DIFFERENT'}); "
        f"bf16 weights {r['weights_bf16_gib']:.1f} GiB, fp8 {r['weights_fp8_gib']:.1f} GiB. Largest streaming "
        f"unit: a dual-stream block ({r['dual_block_params'] / 1e6:.0f}M parameters; single-stream "
        f"{r['single_block_params'] / 1e6:.0f}M; the token refiner {r['refiner_params'] / 1e6:.0f}M).", "",
        "Assumptions:", "",
        "- ComfyUI-style low-VRAM loading: weights live in CPU RAM; each transformer block (and each top-level "
        "module) is copied to the GPU when it computes and dropped after, except the blocks kept resident, "
        f"as many as fit in a {vram:g} GiB budget; no prefetch (the copy and the compute do not overlap, as in "
        "FramePack's DynamicSwap). With overlap a second streamed block is resident and the step time is the "
        "larger of compute and transfer instead of their sum.",
        "- fp8: the blocks' Linear weights in 1 byte, norms, biases and other modules in bf16; computing casts one "
        "Linear weight at a time to bf16 (counted with the streamed block).",
        "- bf16 compute; activations of our transformer's forward (formula below, checked against a measurement); "
        "attention is flash / memory-efficient SDPA, no score matrix; batch 1 (real CFG 1, distilled CFG).",
        f"- Tokens: the largest section of a {a['seconds']} s inverted anti-drifting plan (window 9) per bucket, "
        f"plus {a['siglip_tokens']} SigLIP + {a['text_tokens']} text context tokens.",
        f"- {a['cuda_context_gib']} GiB for the CUDA context, cuBLAS workspace and allocator slack.",
        "- Effective GPU throughput: " + ", ".join(f"{g} {t:g} TFLOP/s" for g, t in a["gpu_tflop_s"].items())
        + f"; PCIe host-to-device {fast} GB/s (desktop) and {slow} GB/s (laptop).",
        "- Not counted: the text encoders, the image encoder and the VAE (ComfyUI loads them one at a time, "
        "before and after sampling), and the sampler's few latent-sized tensors (about 4 MB each).", "",
        "Checks on the CPU (same code, measured in this run):", "",
        f"- activations: formula {chk['predicted_bytes'] / 2**20:.1f} MiB vs measured live-tensor peak "
        f"{chk['measured_bytes'] / 2**20:.1f} MiB ({chk['config']}, {chk['image_tokens']} image + "
        f"{chk['context_tokens']} context tokens; ratio {chk['predicted_bytes'] / chk['measured_bytes']:.3f});",
        f"- FLOPs: formula {chk['predicted_flops'] / 1e9:.1f} GFLOP vs hook count {chk['counted_flops'] / 1e9:.1f} "
        f"GFLOP (ratio {chk['predicted_flops'] / chk['counted_flops']:.4f}).", "",
        f"## Memory per bucket (budget {vram:g} GiB)", "",
        "| bucket | image + context tokens | TFLOP / forward | weights | activations (GiB) | streamed block (GiB) "
        f"| minimum VRAM, all streamed (GiB) | fits {vram:g} GiB | blocks resident in {vram:g} GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    context = a["siglip_tokens"] + a["text_tokens"]
    for row in r["rows"]:
        lines.append(f"| {row['bucket']} | {row['image_tokens']} + {context} | {row['tflop_per_step']:.0f} | "
                     f"{row['storage']} | {row['activations_gib']:.2f} | {row['streamed_unit_gib']:.2f} | "
                     f"{row['min_vram_gib']:.2f} | {'yes' if row['fits'] else 'no'} | "
                     f"{row['resident_blocks']} of {row['blocks']} |")
    lines += ["", f"## Time per sampling step with the {vram:g} GiB budget", "",
              "Streamed = bytes copied per model call (the weights not resident). Slow-down = (compute + transfer) "
              "/ compute, i.e. the cost of streaming when copies do not overlap compute.", "",
              f"| bucket | weights | streamed (GB / step) | transfer at {fast} GB/s (s) | transfer at {slow} GB/s (s) | "
              + " | ".join(f"compute {g} (s) | slow-down {g}" for g in gpus) + " |",
              "|---|---|---|---|---|" + "---|---|" * len(gpus)]
    links = {gpus[0]: fast, gpus[-1]: slow}
    for row in r["rows"]:
        cells = []
        for g in gpus:
            compute = row["compute_s"][g]
            cells.append(f"{compute:.2f} | {(compute + row['transfer_s'][links[g]]) / compute:.2f}x")
        lines.append(f"| {row['bucket']} | {row['storage']} | {row['streamed_gb_per_step']:.1f} | "
                     f"{row['transfer_s'][fast]:.2f} | {row['transfer_s'][slow]:.2f} | " + " | ".join(cells) + " |")
    worst = max(r["rows"], key=lambda row: row["min_vram_gib"])
    lines += ["", f"Slow-down pairs the desktop GPU with {fast} GB/s and the laptop GPU with {slow} GB/s.", "",
              f"**The {vram:g} GB claim:** the largest minimum is {worst['min_vram_gib']:.2f} GiB ({worst['bucket']}, "
              f"{worst['storage']}), so every 640-class bucket " + ("fits" if worst["fits"] else "does NOT fit")
              + f" in {vram:g} GiB with all weights streamed.", "",
              "Activation terms at the largest bucket (bf16):", "", "| term | MiB |", "|---|---|"]
    for name, value in r["largest_terms"].items():
        lines.append(f"| {name} | {value / 2**20:.0f} |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for storage, colour in (("bf16", "tab:blue"), ("fp8", "tab:orange")):
        rows = [row for row in r["rows"] if row["storage"] == storage]
        names = [row["bucket"] for row in rows]
        ax.plot(names, [row["min_vram_gib"] for row in rows], "o-", color=colour, label=f"{storage}: all streamed")
        ax.plot(names, [row["activations_gib"] + r["assumptions"]["cuda_context_gib"] for row in rows], ":",
                color=colour, label=f"{storage}: activations + CUDA context")
    ax.axhline(r["vram_gib"], color="red", lw=1, label=f"{r['vram_gib']:g} GiB")
    ax.set(ylabel="GiB", xlabel="640-class bucket (h x w)", ylim=(0, r["vram_gib"] * 1.2),
           title="13B FramePack transformer: minimum GPU memory per sampling step (weights streamed per block)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(vram_gib: float) -> dict:
    config = FramePackConfig.from_dict({k: v for k, v in json.loads(CONFIG_13B.read_text()).items()
                                        if not k.startswith("_")})
    model = model_on_meta(config)
    units = unit_params(model)
    blocks = [p for k, p in units.items() if k.startswith(("transformer_blocks.", "single_transformer_blocks."))]
    others = [p for k, p in units.items() if not k.startswith(("transformer_blocks.", "single_transformer_blocks."))]
    largest = max(BASE_640, key=lambda hw: bucket_tokens(*hw)["image_tokens"])
    tok = bucket_tokens(*largest)
    return {
        "assumptions": ASSUMPTIONS, "vram_gib": vram_gib, "params": sum(p.numel() for p in model.parameters()),
        "weights_bf16_gib": sum(2 * p["total"] for p in blocks + others) / GiB,
        "weights_fp8_gib": (sum(unit_bytes(p, "fp8", True) for p in blocks)
                            + sum(unit_bytes(p, "fp8", False) for p in others)) / GiB,
        "dual_block_params": units["transformer_blocks.0"]["total"],
        "single_block_params": units["single_transformer_blocks.0"]["total"],
        "refiner_params": units["context_embedder"]["total"],
        "check": check_activation_formula(), "rows": predict(config, units, vram_gib),
        "largest_terms": activation_bytes(config, tok["image_tokens"],
                                          ASSUMPTIONS["siglip_tokens"] + ASSUMPTIONS["text_tokens"])["terms"],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vram-gib", type=float, default=6.0, help="GPU memory budget (default 6)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = run(args.vram_gib)
    text = markdown(report)
    write_results("memory_model", args.out, report, text)
    plot(report, args.out / "memory_model.png")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
