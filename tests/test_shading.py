"""Spherical-Gaussian lighting: closed form against quadrature, normalisation, colour transfer."""

from __future__ import annotations

import math

import pytest
import torch

from recon.shading.albedo import AlbedoField
from recon.shading.sg import SGLight, fibonacci_sphere, linear_to_srgb, sg_irradiance_basis, srgb_to_linear


@pytest.mark.parametrize("sharpness", [2.0, 4.0, 10.0, 40.0])
def test_irradiance_matches_numerical_quadrature(sharpness):
    axes = torch.nn.functional.normalize(torch.tensor([[0.3, 0.8, -0.2]]), dim=-1).double()
    w = fibonacci_sphere(200_000).double()
    normals = fibonacci_sphere(60).double()
    lobe = torch.exp(sharpness * (w @ axes.t() - 1))[:, 0]
    exact = torch.stack([(lobe * (w @ n).clamp(min=0)).mean() * 4 * math.pi for n in normals])
    approx = sg_irradiance_basis(normals, axes, torch.tensor([sharpness], dtype=torch.float64))[:, 0]
    assert float((approx - exact).abs().max() / exact.max()) < 0.02


def test_uniform_light_is_nearly_constant_and_normalised():
    light = SGLight(24, 4.0)
    with torch.no_grad():
        e = light.irradiance(fibonacci_sphere(1000))
    assert float(e.max()) <= 1.0 + 1e-5
    assert float(e.min()) > 0.9  # 24 equal lobes: within 10% of uniform
    albedo = torch.rand(1000, 3)
    with torch.no_grad():
        shaded = light.shade(albedo, fibonacci_sphere(1000))
    assert float((shaded - albedo).abs().max()) < 0.06


def test_light_follows_its_amplitudes():
    light = SGLight(24, 4.0)
    top = int(torch.argmax(light.axes[:, 1]))
    with torch.no_grad():
        light.amplitude_logits.fill_(-8.0)
        light.amplitude_logits[top] = 4.0  # one lobe from above
        facing, away = light.irradiance(torch.stack([light.axes[top], -light.axes[top]]))
    assert float(facing) == pytest.approx(1.0, abs=0.02) and float(away) < 0.05


def _fit_light(light: SGLight, normals: torch.Tensor, target: torch.Tensor, steps: int = 400) -> float:
    """Fit ``light``'s log-irradiance to ``target``'s (scale-free, as the refinement's normalised light);
    returns the rms log error."""
    opt = torch.optim.Adam([{"params": [light.amplitude_logits], "lr": 0.1}]
                           + ([{"params": [light.axis_offsets, light.log_sharpness_offsets], "lr": 0.05}]
                              if light.learn_lobes else []))
    for _ in range(steps):
        err = light.irradiance(normals).log() - target.log()
        loss = ((err - err.mean()) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach().sqrt())


def test_fitted_lobes_represent_a_directional_light_better_than_fixed_ones():
    from recon.shading.soft_light import SoftLight

    torch.manual_seed(0)
    normals = fibonacci_sphere(3000)
    target = SoftLight().factor(normals)  # white directional + ambient, the lighting test's light
    fixed = _fit_light(SGLight(24, 12.0), normals, target)
    learnt = SGLight(24, 12.0, learn_lobes=True, max_sharpness=64.0)
    fitted = _fit_light(learnt, normals, target)
    assert fitted < 0.6 * fixed, (fitted, fixed)
    axes, sharpness = learnt.lobes()
    assert torch.allclose(axes.norm(dim=-1), torch.ones(24)) and float(sharpness.detach().min()) >= 2.0
    assert float(sharpness.detach().max()) <= 64.0 + 1e-4
    # Zero offsets are the fixed light: a fresh learnable light shades exactly as a fixed one.
    torch.testing.assert_close(SGLight(24, 12.0, learn_lobes=True).irradiance(normals),
                               SGLight(24, 12.0).irradiance(normals))


def test_mean_reference_is_not_dimmed_by_light_from_unseen_directions():
    """The orbit sees no normal facing down; a lobe growing there (nothing constrains it) must not change
    the irradiance, hence the albedo, of the normals it does see (relative to the peak, it does: by 40%)."""
    seen = fibonacci_sphere(2000)
    seen = seen[seen[:, 1] > 0.5]
    changes = {}
    for reference in ("peak", "mean"):
        light = SGLight(24, 12.0, reference=reference)
        light.set_reference_normals(seen)
        with torch.no_grad():
            before = light.irradiance(seen)
            down = int(torch.argmin(light.axes[:, 1]))
            light.amplitude_logits[down] = 4.0  # softplus: ~6x the other lobes
            after = light.irradiance(seen)
        changes[reference] = float((after / before - 1).abs().max())
    assert changes["mean"] < 0.05 and changes["peak"] > 0.3, changes  # measured: 0.03 and 0.41


def test_mean_reference_is_the_mean_over_the_reference_normals_and_round_trips():
    torch.manual_seed(0)
    light = SGLight(24, 12.0, reference="mean")
    with torch.no_grad():
        light.amplitude_logits.copy_(torch.randn(24))
    with pytest.raises(ValueError, match="at least one"):
        light.set_reference_normals(torch.zeros(0, 3))
    # Normals on the probes themselves: the reference is exactly their (weighted) mean irradiance.
    chosen = light.probes[torch.tensor([3, 3, 70, 200])]
    light.set_reference_normals(chosen, torch.tensor([1.0, 1.0, 2.0, 4.0]))
    with torch.no_grad():
        e = light.irradiance(chosen)
    assert float((e * torch.tensor([1.0, 1.0, 2.0, 4.0])).sum() / 8) == pytest.approx(1.0, abs=1e-5)
    again = SGLight(24, 12.0, reference="mean")
    again.load_state_dict(light.state_dict())
    torch.testing.assert_close(again.irradiance(chosen), light.irradiance(chosen))
    # A light saved before the reference existed ('peak', no weights in its state) still loads.
    old = SGLight(24, 12.0)
    assert "probe_weights" not in old.state_dict()
    SGLight(24, 12.0).load_state_dict(old.state_dict())
    with pytest.raises(ValueError, match="reference"):
        SGLight(24, 12.0, reference="median")  # type: ignore[arg-type]


def test_srgb_round_trip():
    x = torch.linspace(0, 1, 101)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)
    assert float(srgb_to_linear(torch.tensor(0.5))) == pytest.approx(0.2140, abs=1e-4)


def test_sharpness_below_the_fit_range_is_refused():
    with pytest.raises(ValueError, match="sharpness"):
        SGLight(24, 1.0)


def test_albedo_field_is_bounded_and_differentiable():
    field = AlbedoField(levels=4, log2_size=10, max_res=64)
    x = (torch.rand(100, 3) - 0.5).requires_grad_()
    a = field(x)
    assert a.shape == (100, 3) and float(a.detach().min()) >= 0 and float(a.detach().max()) <= 1
    a.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.allclose(field.query(x.detach(), chunk=7), a.detach(), atol=1e-6)


@pytest.mark.parametrize("space", ["linear", "srgb"])
def test_the_soft_light_multiplies_radiance_in_its_space(space):
    from recon.shading.soft_light import SoftLight

    light = SoftLight(direction=(0.0, 1.0, 0.0), ambient=0.25, space=space)
    albedo = torch.tensor([[0.8, 0.5, 0.2]]).expand(3, 3)
    normals = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    s = torch.tensor([1.0, 0.25, 0.25 + 0.75 * 0.6])[:, None]
    lit = light.shade(albedo, normals)
    if space == "linear":
        torch.testing.assert_close(srgb_to_linear(lit), srgb_to_linear(albedo) * s, atol=1e-5, rtol=1e-4)
    else:
        torch.testing.assert_close(lit, albedo * s)
    with pytest.raises(ValueError, match="space"):
        SoftLight(space="gamma")


def test_both_renderers_shade_a_face_with_the_same_light():
    """The ray-cast synthetic scenes and the mesh rasteriser light a surface identically."""
    from recon.data.cameras import orbit_cameras
    from recon.data.synthetic import make_scene, render_view
    from recon.render.mesh import from_trimesh
    from recon.render.views import render_views
    from recon.shading.soft_light import SoftLight

    scene = make_scene("sphere")
    cams = orbit_cameras(torch.tensor([20.0]), torch.tensor([30.0]), 2.0, 33.8, 64)
    light = SoftLight()
    ray_rgb, ray_alpha = render_view(scene, cams, 0, supersample=1, light=light)
    mesh_rgb, mesh_alpha = render_views(from_trimesh(scene.mesh()), cams, supersample=1, light=light)
    inner = (ray_alpha > 0.99) & (mesh_alpha[0] > 0.99)
    assert inner.sum() > 500
    diff = (ray_rgb - mesh_rgb[0]).abs()[inner].mean()
    assert diff < 0.03, diff
