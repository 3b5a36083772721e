"""Guidance with tiny random SV3D models built from config, saved with save_pretrained and loaded through
the loader users call: the conditioning is wired, SDS behaves, generation writes a usable orbit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from guidance.models import GuidanceConfig, ModelNotFoundError, SV3DModels, camera_ids, load_sv3d
from guidance.sds import MaskedSDS, denoise, sds_loss, visibility_weight

FRAMES = 21


def build_tiny_sv3d(folder: Path, temporal_vae: bool = True) -> Path:
    """A random SV3D_p-shaped model (same classes and layout as the real one, tiny sizes), saved. The VAE is
    SVD's temporal-decoder one, or the image ``AutoencoderKL`` the published SV3D_p conversion uses."""
    from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from guidance.unet import SV3DUNet

    torch.manual_seed(0)
    SV3DUNet(sample_size=8, in_channels=8, out_channels=4,
             down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
             up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
             block_out_channels=(32, 64), addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 + 2 * 16,
             layers_per_block=1, cross_attention_dim=32, transformer_layers_per_block=1, num_attention_heads=(2, 4),
             num_frames=FRAMES).save_pretrained(folder / "unet")
    if temporal_vae:
        vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                                           latent_channels=4, layers_per_block=1)
    else:
        vae = AutoencoderKL(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1)
    vae.save_pretrained(folder / "vae")
    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                                   num_attention_heads=2, image_size=32, patch_size=16,
                                                   projection_dim=32)).save_pretrained(folder / "image_encoder")
    CLIPImageProcessor(crop_size={"height": 32, "width": 32}, size={"shortest_edge": 32}).save_pretrained(
        folder / "feature_extractor")
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           prediction_type="v_prediction", interpolation_type="linear", use_karras_sigmas=True,
                           sigma_min=0.002, sigma_max=700.0, timestep_spacing="leading", steps_offset=1,
                           timestep_type="continuous").save_pretrained(folder / "scheduler")
    return folder


@pytest.fixture(scope="module")
def tiny_sv3d(tmp_path_factory) -> Path:
    return build_tiny_sv3d(tmp_path_factory.mktemp("sv3d"))


@pytest.fixture(scope="module")
def models(tiny_sv3d: Path) -> SV3DModels:
    return load_sv3d(GuidanceConfig(model=str(tiny_sv3d)))


def test_loader_explains_missing_weights(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match=r"huggingface\.co/stabilityai/sv3d.*Non-Commercial"):
        load_sv3d(GuidanceConfig(model=""))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not an SV3D folder"):
        load_sv3d(GuidanceConfig(model=str(tmp_path / "empty")))


def test_the_image_vae_of_the_published_conversion_loads_too(tmp_path: Path):
    from diffusers import AutoencoderKL

    from guidance.generate import SamplingConfig, SV3DGenerator

    models = load_sv3d(GuidanceConfig(model=str(build_tiny_sv3d(tmp_path / "m", temporal_vae=False))))
    assert type(models.vae) is AutoencoderKL
    views = SV3DGenerator(models, SamplingConfig(steps=2, size=32)).generate(
        torch.ones(32, 32, 3), torch.full((FRAMES,), 10.0), torch.arange(FRAMES) * 360.0 / FRAMES, progress=False)
    assert views.shape == (FRAMES, 32, 32, 3) and torch.isfinite(views).all()


def test_camera_conditioning_changes_the_unet_output(models: SV3DModels):
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(1, FRAMES, 8, 8, 8, generator=gen)
    enc = torch.randn(1, 1, 32, generator=gen)
    elev = torch.full((FRAMES,), 10.0)
    azim = torch.arange(FRAMES) * 360.0 / FRAMES
    with torch.no_grad():
        base = models.unet(sample, torch.tensor([0.5]), enc, camera_ids(elev, azim, 1e-5)[None]).sample
        turned = models.unet(sample, torch.tensor([0.5]), enc, camera_ids(elev, azim + 40, 1e-5)[None]).sample
        raised = models.unet(sample, torch.tensor([0.5]), enc, camera_ids(elev + 20, azim, 1e-5)[None]).sample
        again = models.unet(sample, torch.tensor([0.5]), enc, camera_ids(elev, azim, 1e-5)[None]).sample
    assert torch.equal(base, again)
    for other in (turned, raised):
        per_frame = (other - base).flatten(2).abs().amax(dim=2)[0]
        assert (per_frame > 1e-6).all()  # every frame sees its own camera
    # Per-frame: changing one frame's azimuth changes that frame's embedding only.
    ids = camera_ids(elev, azim, 1e-5)
    moved = ids.clone()
    moved[5, 2] += 0.5
    e0 = models.unet.camera_embedding(ids[None], torch.float32)
    e1 = models.unet.camera_embedding(moved[None], torch.float32)
    changed = (e0 - e1).abs().amax(dim=1) > 0
    assert changed.tolist() == [i == 5 for i in range(FRAMES)]


def test_sds_gradient_is_finite_masked_and_scales_with_the_weight(models: SV3DModels):
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(FRAMES, 4, 8, 8, generator=gen)
    cond = torch.randn(4, 8, 8, generator=gen)
    emb = torch.randn(1, 1, 32, generator=gen)
    ids = camera_ids(torch.full((FRAMES,), 10.0), torch.arange(FRAMES) * 360.0 / FRAMES, 1e-5)
    noisy = latents + 2.0 * torch.randn(latents.shape, generator=gen)
    den = denoise(models, noisy, 2.0, cond, emb, ids, 3.0)
    mask = torch.ones(FRAMES, 1, 8, 8)
    mask[:, :, :4] = 0  # the top half of every frame is fully visible in the inputs: no SDS there
    grads = []
    for weight in (0.1, 0.3):
        x = latents.clone().requires_grad_(True)
        sds_loss(x, den, mask, weight).backward()
        grads.append(x.grad)
    g1, g3 = grads
    assert torch.isfinite(g1).all() and g1.abs().sum() > 0
    assert (g1[:, :, :4] == 0).all() and (g1[:, :, 4:] != 0).any()
    torch.testing.assert_close(g3, 3 * g1)
    torch.testing.assert_close(g1, 0.1 * mask * (latents - den) / FRAMES)


def test_visibility_weight_follows_the_recipe():
    points = torch.zeros(3, 3)
    normals = torch.tensor([[0.0, 0, 1], [0.0, 0, -1], [1.0, 0, 0]])
    ref = torch.tensor([[0.0, 0.0, 2.0]])  # one input camera on +Z
    w = visibility_weight(points, normals, ref)
    torch.testing.assert_close(w, torch.tensor([0.2, 1.0, 1.0]))  # seen head-on: floor 0.2; unseen: 1
    tilt = torch.tensor([[0.0, np.sin(np.arccos(0.3)), 0.3]], dtype=torch.float32)  # n.v = 0.3: halfway
    assert float(visibility_weight(torch.zeros(1, 3), tilt, ref)) == pytest.approx(0.5, abs=1e-5)


def test_masked_sds_hook_drives_the_refinement(models: SV3DModels, sphere_orbit):
    import trimesh

    from recon.refine.train import HookContext
    from recon.shading.albedo import AlbedoField
    from recon.shading.sg import SGLight

    cfg = GuidanceConfig(model="tiny", sds_resolution=64, sds_ramp_steps=10, sds_views=FRAMES)
    hook = MaskedSDS(cfg, models, sphere_orbit)
    m = trimesh.creation.icosphere(3, radius=0.45)
    verts = torch.tensor(m.vertices, dtype=torch.float32, requires_grad=True)
    ctx = HookContext(step=95, steps=100, verts=verts, faces=torch.tensor(m.faces), albedo=AlbedoField(levels=4),
                      light=SGLight(8, 12.0), orbit=sphere_orbit, generator=torch.Generator().manual_seed(0))
    loss = hook(ctx)
    assert loss is not None and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0
    early = HookContext(**{**ctx.__dict__, "step": 50})
    assert hook(early) is None  # before the ramp: off
    assert hook.weight(99, 100) == pytest.approx(0.1) and hook.weight(90, 100) == pytest.approx(0.01)


def test_generate_writes_an_orbit_and_is_seeded(models: SV3DModels, tmp_path: Path):
    from guidance.generate import SamplingConfig, SV3DGenerator, generate_orbit, preprocess_image
    img = np.full((80, 120, 4), 0, np.uint8)
    img[20:60, 70:110] = (200, 40, 40, 255)  # an object off-centre, transparent background
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "in.png")
    image = preprocess_image(tmp_path / "in.png", size=64)
    assert image.shape == (64, 64, 3) and image[0, 0].tolist() == [1.0, 1.0, 1.0]
    assert image[32, 32, 0] > 0.7 and image[32, 32, 1] < 0.3  # centred
    gen = SV3DGenerator(models, SamplingConfig(steps=3, size=64))
    out = generate_orbit(gen, image, tmp_path / "orbit", elevation_deg=15.0, seed=7)
    frames = sorted(out.glob("*.png"))
    assert len(frames) == FRAMES
    assert all(Image.open(f).size == (64, 64) for f in frames)
    import json

    meta = json.loads((out / "orbit.json").read_text())
    assert meta["fov_deg"] == 33.8 and meta["radius"] == 2.0 and len(meta["azimuths_deg"]) == FRAMES
    again = generate_orbit(gen, image, tmp_path / "orbit2", elevation_deg=15.0, seed=7)
    other = generate_orbit(gen, image, tmp_path / "orbit3", elevation_deg=15.0, seed=8)
    a = np.asarray(Image.open(again / frames[3].name))
    assert (a == np.asarray(Image.open(frames[3]))).all()
    assert (a != np.asarray(Image.open(other / frames[3].name))).any()


def _object_png(path: Path) -> Path:
    from PIL import Image

    img = np.full((96, 96, 3), 255, np.uint8)
    yy, xx = np.mgrid[:96, :96]
    img[(yy - 48) ** 2 + (xx - 48) ** 2 < 30**2] = (180, 60, 40)
    Image.fromarray(img).save(path)
    return path


def test_generate_command_and_its_errors(tiny_sv3d: Path, tmp_path: Path, capsys):
    from recon.cli import main

    image = _object_png(tmp_path / "ball.png")
    assert main(["generate", str(image), "-o", str(tmp_path / "orbit"), "--model", str(tiny_sv3d), "--steps", "2",
                 "--size", "64", "--device", "cpu"]) == 0
    assert len(list((tmp_path / "orbit").glob("*.png"))) == FRAMES and (tmp_path / "orbit" / "orbit.json").is_file()
    assert main(["generate", str(image), "-o", str(tmp_path / "o2")]) == 2
    assert "Non-Commercial" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(blank)
    assert main(["generate", str(blank), "-o", str(tmp_path / "o3"), "--model", str(tiny_sv3d)]) == 2
    assert "no object found" in capsys.readouterr().err


class SphereGenerator:
    """A ViewGenerator that renders the analytic sphere: the protocol is all the pipeline needs."""

    def generate(self, image, elevations_deg, azimuths_deg, seed=0):
        from recon.data.synthetic import make_scene, render_orbit

        return render_orbit(make_scene("sphere"), elevations_deg, azimuths_deg, size=image.shape[0],
                            supersample=2).images


def test_image_to_glb_with_a_plugged_in_generator_and_tiny_sds(tiny_sv3d: Path, tmp_path: Path, monkeypatch):
    from guidance.sds import MaskedSDS
    from recon.config import load_config
    from recon.pipeline import image_to_glb

    calls = []
    real_call = MaskedSDS.__call__

    def counting(self, ctx):
        out = real_call(self, ctx)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(MaskedSDS, "__call__", counting)
    cfg = load_config("tiny", [f"guidance.model={tiny_sv3d}", "guidance.sds_resolution=64", "guidance.sds_ramp_steps=5",
                               "export.faces=1000", "export.texture_size=128", "export.turntable_frames=0"])
    result = image_to_glb(cfg, _object_png(tmp_path / "ball.png"), tmp_path / "out", size=48,
                          generator=SphereGenerator())
    assert (tmp_path / "out" / "asset.glb").is_file() and (tmp_path / "out" / "orbit" / "orbit.json").is_file()
    assert calls.count(True) == 5 and len(calls) == cfg.refine.steps  # ramped in over the last 5 steps
    assert result.metrics["export"]["faces"] <= 1000
