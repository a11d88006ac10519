"""The paper's multimodal loop at real scale, with synthguard gating every generation.

A BLIP captioner and a Stable Diffusion model are fine-tuned on each other's outputs for N
generations (Hu, Rostami & Thomason, ICMI 2025): each generation the text-to-image model draws
the previous generation's captions, the captioner describes the new images, and the new pairs
replace the old ones. synthguard checks each generation against a reference built from the real
pairs; a rejected generation is not trained on, and a ``CollapseMonitor`` logs every one.

Run on a GPU with your real pairs (any layout ``synthguard.sources`` reads); the models are
downloaded through their libraries' hub caches:

    python examples/paper_loop.py --data real_pairs/ --generations 5 --out paper-loop/

``--smoke`` runs the same code end to end offline in seconds, with tiny random models built from
configs and a few public-domain photos (CI runs it; it measures nothing):

    python examples/paper_loop.py --smoke --out /tmp/paper-loop
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import synthguard as sg
from synthguard.monitor import generation_metrics
from synthguard.sources import read_pairs

CAPTIONER = "Salesforce/blip-image-captioning-base"
TEXT_TO_IMAGE = "stabilityai/stable-diffusion-2-1-base"
ENCODER = "openclip:ViT-B-32/laion2b_s34b_b79k"


@dataclass
class Models:
    captioner: Any
    processor: Any
    pipe: Any  # diffusers StableDiffusionPipeline
    encoder: Any
    image_size: int
    steps: int  # denoising steps per image


def pretrained_models(device: str) -> Models:
    from diffusers import StableDiffusionPipeline
    from transformers import BlipForConditionalGeneration, BlipProcessor

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(TEXT_TO_IMAGE, torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    return Models(
        captioner=BlipForConditionalGeneration.from_pretrained(CAPTIONER).to(device),
        processor=BlipProcessor.from_pretrained(CAPTIONER),
        pipe=pipe,
        encoder=sg.load_encoder(ENCODER, device=device),
        image_size=512,
        steps=30,
    )


def tiny_models(workdir: Path) -> Models:
    """Random models of the real architectures, small enough for CI."""
    import open_clip
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from safetensors.torch import save_file
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
    )

    from synthguard._testing import clip_tokenizer, tiny_blip

    words = ["a", "photo", "of", "cat", "coffee", "rocket", "red", "cup", "sky", "the", "on"]
    captioner, processor = tiny_blip(words)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=2,
        num_hidden_layers=2, max_position_embeddings=77,
    ))  # fmt: skip
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=32,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32, sample_size=32,
    )  # fmt: skip
    tokenizer = clip_tokenizer(workdir / "tokenizer")
    tokenizer.model_max_length = 77  # a saved vocabulary carries no length; SD's is 77
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    tiny_clip = {"embed_dim": 32,
                 "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
                                "head_width": 32, "mlp_ratio": 2.0},
                 "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32,
                              "heads": 2, "layers": 2}}  # fmt: skip
    clip_dir = workdir / "clip"
    clip_dir.mkdir(parents=True, exist_ok=True)
    (clip_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": tiny_clip}))
    weights = open_clip.CLIP(**tiny_clip).state_dict()  # type: ignore[arg-type]
    save_file({k: v.contiguous() for k, v in weights.items()},
              str(clip_dir / "open_clip_model.safetensors"))  # fmt: skip
    return Models(
        captioner=captioner,
        processor=processor,
        pipe=pipe,
        encoder=sg.load_encoder(f"openclip:local-dir:{clip_dir}"),
        image_size=32,
        steps=2,
    )


def smoke_pairs() -> sg.PairBatch:
    """Eight crops of scikit-image's public-domain photos with hand-written captions."""
    from skimage import data

    photos = {"a photo of a cat": data.chelsea(), "a red coffee cup": data.coffee(),
              "a rocket on the pad": data.rocket(), "an astronaut": data.astronaut()}  # fmt: skip
    images, captions = [], []
    for caption, photo in photos.items():
        h, w = photo.shape[:2]
        for crop in (photo[: h // 2, : w // 2], photo[h // 4 :, w // 4 :]):
            images.append(Image.fromarray(crop).convert("RGB").resize((64, 64)))
            captions.append(caption)
    return sg.PairBatch(images, captions)


def finetune_captioner(m: Models, images: list[Any], captions: list[str], steps: int) -> None:
    """Supervised fine-tuning of the captioner on (image, caption) pairs."""
    model, device = m.captioner, m.captioner.device
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    for step in range(steps):
        rows = [i % len(images) for i in range(step * 4, step * 4 + 4)]
        inputs = m.processor(images=[images[i] for i in rows], text=[captions[i] for i in rows],
                             return_tensors="pt", padding=True).to(device)  # fmt: skip
        loss = model(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.eval()


def finetune_text_to_image(m: Models, images: list[Any], captions: list[str], steps: int) -> None:
    """The standard latent-diffusion training step (noise prediction, MSE) on the UNet."""
    pipe = m.pipe
    device, dtype = pipe.unet.device, pipe.unet.dtype
    optimiser = torch.optim.AdamW(pipe.unet.parameters(), lr=1e-5)
    pipe.unet.train()
    for step in range(steps):
        rows = [i % len(images) for i in range(step * 4, step * 4 + 4)]
        pixels = torch.stack([
            torch.from_numpy(np.array(images[i].convert("RGB").resize((m.image_size,) * 2)))
            for i in rows
        ]).permute(0, 3, 1, 2).to(device, dtype) / 127.5 - 1.0  # fmt: skip
        with torch.no_grad():
            latents = pipe.vae.encode(pixels).latent_dist.sample()
            latents = latents * pipe.vae.config.scaling_factor
            tokens = pipe.tokenizer([captions[i] for i in rows], padding="max_length",
                                    max_length=pipe.tokenizer.model_max_length, truncation=True,
                                    return_tensors="pt").input_ids.to(device)  # fmt: skip
            context = pipe.text_encoder(tokens)[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (len(rows),), device=device)
        noisy = pipe.scheduler.add_noise(latents, noise, t)
        loss = torch.nn.functional.mse_loss(pipe.unet(noisy, t, context).sample, noise)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    pipe.unet.eval()


def draw(m: Models, captions: list[str], seed: int) -> list[Image.Image]:
    generator = torch.Generator(m.pipe.device).manual_seed(seed)
    return list(m.pipe(captions, num_inference_steps=m.steps, height=m.image_size,
                       width=m.image_size, generator=generator).images)  # fmt: skip


def describe(m: Models, images: list[Image.Image], beams: int) -> list[str]:
    inputs = m.processor(images=images, return_tensors="pt").to(m.captioner.device)
    with torch.no_grad():
        ids = m.captioner.generate(**inputs, num_beams=beams, max_new_tokens=20)
    return [
        c.strip() or "an image" for c in m.processor.batch_decode(ids, skip_special_tokens=True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="real pairs (folder, .tar or .parquet)")
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--beams", type=int, default=3, help="captioner decoding budget")
    parser.add_argument("--out", default="paper-loop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny random models, offline")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        models = tiny_models(Path(tempfile.mkdtemp(prefix="paper-loop-")))
        real, steps, generations = smoke_pairs(), 1, min(args.generations, 2)
    else:
        if not args.data:
            parser.error("--data is required without --smoke")
        models, real = pretrained_models(args.device), read_pairs(args.data)
        steps, generations = args.finetune_steps, args.generations
    images = [img if isinstance(img, Image.Image) else Image.open(img).convert("RGB")
              for img in real.images]  # fmt: skip
    reference = sg.Reference.build(images, real.captions, encoder=models.encoder)
    guard = sg.Guard(reference)
    log = out / "paper_loop.jsonl"
    log.unlink(missing_ok=True)
    monitor = sg.CollapseMonitor(log)
    captions = list(real.captions)
    embed = models.encoder
    monitor.log(0, generation_metrics(reference, embed.encode_images(images),
                                      embed.encode_texts(captions)))  # fmt: skip
    for generation in range(1, generations + 1):
        finetune_text_to_image(models, images, captions, steps)
        finetune_captioner(models, images, captions, steps)
        new_images = draw(models, captions, seed=generation)
        new_captions = describe(models, new_images, args.beams)
        batch = sg.PairBatch(new_images, new_captions)
        report = guard.check(batch)
        report.to_json(out / f"generation_{generation}.json")
        metrics = generation_metrics(reference, embed.encode_images(new_images),
                                     embed.encode_texts(new_captions))  # fmt: skip
        monitor.log(generation, metrics, reports=[report])
        print(f"generation {generation}: {report.summary().splitlines()[0]}")
        clean = report.apply(batch)
        if clean is not None:  # a rejected generation is not trained on
            images, captions = list(clean.images), list(clean.captions)
    for alert in monitor.warnings:
        print(f"warning: generation {alert.generation}: {alert.message}")
    print(f"log: {log}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
