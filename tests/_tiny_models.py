"""Tiny random CLIP models, built from configs and saved the way users' checkpoints are.

The open_clip model and the transformers model can be given *the same weights*
(``openclip_to_hf_state_dict``), so the two backends can be checked against each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

TINY_OPENCLIP: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": 32,
        "patch_size": 8,
        "width": 64,
        "layers": 2,
        "head_width": 32,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def build_openclip_dir(path: Path, *, seed: int = 0, cfg: dict[str, Any] | None = None) -> Path:
    """A random open_clip CLIP saved as a ``local-dir:`` folder."""
    import open_clip
    from safetensors.torch import save_file

    cfg = cfg or TINY_OPENCLIP
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg).eval()
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": cfg,
        "preprocess_cfg": {
            "mean": OPENAI_MEAN,
            "std": OPENAI_STD,
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (path / "open_clip_config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "open_clip_model.safetensors"))
    return path


def _hf_tokenizer(path: Path) -> Any:
    """A transformers CLIPTokenizer with open_clip's bundled BPE (identical token ids)."""
    from synthguard._testing import clip_tokenizer

    return clip_tokenizer(path)


def build_hf_clip_dir(path: Path, *, openclip_dir: Path | None = None, seed: int = 0) -> Path:
    """A tiny transformers CLIPModel saved with ``save_pretrained``.

    With ``openclip_dir`` the model gets exactly that open_clip model's weights.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    vision = TINY_OPENCLIP["vision_cfg"]
    text = TINY_OPENCLIP["text_cfg"]
    config = CLIPConfig(
        text_config={
            "vocab_size": text["vocab_size"],
            "hidden_size": text["width"],
            "intermediate_size": text["width"] * 4,
            "num_attention_heads": text["heads"],
            "num_hidden_layers": text["layers"],
            "max_position_embeddings": text["context_length"],
            "hidden_act": "gelu",
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={
            "hidden_size": vision["width"],
            "intermediate_size": int(vision["width"] * vision["mlp_ratio"]),
            "num_attention_heads": vision["width"] // vision["head_width"],
            "num_hidden_layers": vision["layers"],
            "image_size": vision["image_size"],
            "patch_size": vision["patch_size"],
            "hidden_act": "gelu",
        },
        projection_dim=TINY_OPENCLIP["embed_dim"],
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    if openclip_dir is not None:
        from safetensors.torch import load_file

        source = load_file(str(openclip_dir / "open_clip_model.safetensors"))
        model.load_state_dict(openclip_to_hf_state_dict(source), strict=True)
    model.save_pretrained(str(path))
    _hf_tokenizer(path).save_pretrained(str(path))
    size = vision["image_size"]
    CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
    ).save_pretrained(str(path))
    return path


def openclip_to_hf_state_dict(source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and split/transpose) open_clip CLIP weights into transformers CLIPModel's."""
    out: dict[str, torch.Tensor] = {
        "logit_scale": source["logit_scale"],
        "visual_projection.weight": source["visual.proj"].t().contiguous(),
        "text_projection.weight": source["text_projection"].t().contiguous(),
        "text_model.embeddings.token_embedding.weight": source["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": source["positional_embedding"],
        "vision_model.embeddings.class_embedding": source["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": source["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": source["visual.positional_embedding"],
    }
    for src, dst in [
        ("visual.ln_pre", "vision_model.pre_layrnorm"),
        ("visual.ln_post", "vision_model.post_layernorm"),
        ("ln_final", "text_model.final_layer_norm"),
    ]:
        for kind in ("weight", "bias"):
            out[f"{dst}.{kind}"] = source[f"{src}.{kind}"]
    for src_prefix, dst_prefix in [
        ("visual.transformer.resblocks", "vision_model.encoder.layers"),
        ("transformer.resblocks", "text_model.encoder.layers"),
    ]:
        layer = 0
        while f"{src_prefix}.{layer}.ln_1.weight" in source:
            s, d = f"{src_prefix}.{layer}", f"{dst_prefix}.{layer}"
            q, k, v = source[f"{s}.attn.in_proj_weight"].chunk(3)
            qb, kb, vb = source[f"{s}.attn.in_proj_bias"].chunk(3)
            for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
                out[f"{d}.self_attn.{name}.weight"] = w.contiguous()
                out[f"{d}.self_attn.{name}.bias"] = b.contiguous()
            for src_name, dst_name in [
                ("attn.out_proj", "self_attn.out_proj"),
                ("ln_1", "layer_norm1"),
                ("ln_2", "layer_norm2"),
                ("mlp.c_fc", "mlp.fc1"),
                ("mlp.c_proj", "mlp.fc2"),
            ]:
                for kind in ("weight", "bias"):
                    out[f"{d}.{dst_name}.{kind}"] = source[f"{s}.{src_name}.{kind}"]
            layer += 1
    return out
