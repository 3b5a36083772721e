"""recon.render against brute-force references, analytic coverage and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from recon.data.cameras import orbit_cameras
from recon.render import antialias, available_backends, edge_topology, interpolate, rasterize, texture
from recon.render.reference import interpolate_reference, rasterize_reference


def _clip(verts: torch.Tensor, mvp: torch.Tensor) -> torch.Tensor:
    homo = torch.cat([verts, torch.ones(verts.shape[0], 1, dtype=verts.dtype)], dim=1)
    return torch.einsum("bij,vj->bvi", mvp.to(verts.dtype), homo)


def _sphere(sub: int, radius: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    m = trimesh.creation.icosphere(sub, radius=radius)
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int32)


def _cams(n: int, res: int):
    elev = torch.linspace(-20, 40, n)
    azim = torch.linspace(0, 300, n)
    return orbit_cameras(elev, azim, 2.0, 33.8, res)


def _random_soup(seed: int, n_tri: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    verts = (torch.rand(n_tri * 3, 3, generator=g) - 0.5) * 0.9
    return verts, torch.arange(n_tri * 3, dtype=torch.int32).reshape(-1, 3)


# ---------------------------------------------------------------- rasterize: coverage and depth


@pytest.mark.parametrize("seed", range(4))
def test_rasterize_matches_brute_force_reference(seed):
    verts, tri = _random_soup(seed)
    pos = _clip(verts, _cams(3, 24).mvp())
    ours = rasterize(pos, tri, (24, 24))
    ref = rasterize_reference(pos.double(), tri, (24, 24))
    assert (ours[..., 3] == ref[..., 3].float()).float().mean() > 0.995  # exact ties may differ
    same = ours[..., 3] == ref[..., 3].float()
    torch.testing.assert_close(ours[..., :3][same], ref[..., :3][same].float(), atol=2e-5, rtol=0)


def test_single_triangle_covers_exactly_the_pixels_whose_centres_lie_inside():
    # Clip coordinates with w = 1 are NDC; pixel (i, j) centre is at ((i + 0.5) / 8 * 2 - 1, 1 - ...).
    pos = torch.tensor([[[-1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0], [-1.0, -1.0, 0.0, 1.0]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast = rasterize(pos, tri, (8, 8))
    covered = rast[0, ..., 3] > 0
    ii, jj = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    expect = (jj + ii) < 7  # strictly above the anti-diagonal; centres exactly on it go to one side
    on_edge = (jj + ii) == 7
    assert (covered[~on_edge] == expect[~on_edge]).all()
    assert covered.sum() >= expect.sum()
    # Barycentrics at pixel (0, 0): centre NDC (-0.875, 0.875).
    u, v = rast[0, 0, 0, 0].item(), rast[0, 0, 0, 1].item()
    assert u == pytest.approx(1 - 0.0625 - 0.0625, abs=1e-6) and v == pytest.approx(0.0625, abs=1e-6)


def test_shared_edges_are_covered_exactly_once():
    # A jittered triangulated grid: every pixel inside is covered by exactly one triangle.
    n = 7
    g = torch.Generator().manual_seed(1)
    xs = torch.linspace(-0.8, 0.8, n)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    jitter = (torch.rand(n, n, 2, generator=g) - 0.5) * 0.1
    jitter[0], jitter[-1], jitter[:, 0], jitter[:, -1] = 0, 0, 0, 0
    xy = torch.stack([gx, gy], -1) + jitter
    pos = torch.cat([xy.reshape(-1, 2), torch.zeros(n * n, 1), torch.ones(n * n, 1)], 1)[None]
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, cc, d = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            faces += [[a, b, d], [a, d, cc]] if (r + c) % 2 else [[a, b, cc], [b, d, cc]]
    tri = torch.tensor(faces, dtype=torch.int32)
    res = 64
    count = torch.zeros(res, res)
    for f in range(tri.shape[0]):  # each triangle alone
        count += (rasterize(pos, tri[f : f + 1], (res, res))[0, ..., 3] > 0).float()
    inside = (rasterize(pos, tri, (res, res))[0, ..., 3] > 0)
    assert count.max() == 1, "a pixel was covered twice"
    X = (torch.arange(res) + 0.5) / res * 2 - 1
    in_square = (X.abs() < 0.8)[:, None] & (X.abs() < 0.8)[None, :]
    assert (count[in_square] == 1).all(), "a pixel inside the mesh was left uncovered"
    assert (inside == (count == 1)).all()


def test_nearest_triangle_wins_whatever_the_draw_order():
    near = [[-0.5, -0.5, -0.5, 1.0], [0.5, -0.5, -0.5, 1.0], [0.0, 0.5, -0.5, 1.0]]
    far = [[-0.6, -0.6, 0.5, 1.0], [0.6, -0.6, 0.5, 1.0], [0.0, 0.6, 0.5, 1.0]]
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    for order in ([near, far], [far, near]):
        pos = torch.tensor([order[0] + order[1]])
        rast = rasterize(pos, tri, (16, 16))
        centre_id = int(rast[0, 8, 8, 3])
        assert (centre_id == 1) == (order[0] is near)
        assert rast[0, 8, 8, 2] == pytest.approx(-0.5)


def test_closed_meshes_rasterize_the_same_without_their_back_faces():
    torus = trimesh.creation.torus(0.3, 0.1, major_sections=48, minor_sections=24)
    bumpy = trimesh.creation.icosphere(4, radius=0.4)
    bumpy.vertices *= 1 + 0.05 * np.sin(9 * bumpy.vertices[:, :1])
    cams = _cams(6, 96)
    for mesh in (torus, bumpy):
        verts = torch.tensor(mesh.vertices, dtype=torch.float32)
        tri = torch.tensor(mesh.faces, dtype=torch.int32)
        assert (edge_topology(tri).edge_faces >= 0).all()  # closed
        pos = _clip(verts, cams.mvp())
        full = rasterize(pos, tri, (96, 96))
        culled = rasterize(pos, tri, (96, 96), closed=True)
        covered = full[..., 3] > 0
        assert int(covered.sum()) > 5000
        # Only a pixel centre exactly on a silhouette edge may differ; none does here.
        assert torch.equal(culled, full)
    # An open mesh is not closed: seen from inside through its opening, the far half would be lost.
    half = bumpy.faces[bumpy.triangles_center[:, 0] < 0]
    pos = _clip(torch.tensor(bumpy.vertices, dtype=torch.float32), cams.mvp())
    tri = torch.tensor(half, dtype=torch.int32)
    open_full, open_culled = rasterize(pos, tri, (96, 96)), rasterize(pos, tri, (96, 96), closed=True)
    assert int((open_culled[..., 3] > 0).sum()) < int((open_full[..., 3] > 0).sum())


def test_triangle_crossing_the_near_plane_matches_reference():
    cams = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 2.0, 60.0, 24)
    verts = torch.tensor([[-0.6, -0.5, 0.0], [0.6, -0.5, 0.0], [0.0, 2.0, 3.0]])  # last vertex behind the camera
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    pos = _clip(verts, cams.mvp(near=0.5, far=10.0))
    ours = rasterize(pos, tri, (24, 24))
    ref = rasterize_reference(pos.double(), tri, (24, 24))
    assert (ours[..., 3] > 0).sum() > 60
    assert ((ours[..., 3] > 0) == (ref[..., 3] > 0)).float().mean() > 0.99


def test_sphere_coverage_matches_analytic_disc():
    verts, tri = _sphere(5, radius=0.5)
    cams = orbit_cameras(torch.tensor([10.0]), torch.tensor([30.0]), 2.0, 33.8, 128)
    rast = rasterize(_clip(verts, cams.mvp()), tri, (128, 128))
    f = float(cams.K[0, 0, 0])
    area = math.pi * (f * math.tan(math.asin(0.5 / 2.0))) ** 2
    assert (rast[..., 3] > 0).sum().item() == pytest.approx(area, rel=0.01)


# ---------------------------------------------------------------- gradients


def test_rasterize_backward_matches_autograd_of_reference():
    verts, tri = _random_soup(7, 6)
    pos = _clip(verts, _cams(2, 16).mvp())
    pos_ours = pos.clone().requires_grad_(True)
    pos_ref = pos.double().clone().requires_grad_(True)
    ours = rasterize(pos_ours, tri, (16, 16))
    ref = rasterize_reference(pos_ref, tri, (16, 16))
    same = ours[..., 3].detach() == ref[..., 3].detach().float()
    w = torch.randn(*ours.shape[:3], 3, generator=torch.Generator().manual_seed(0))
    w = w * same[..., None]
    (ours[..., :3] * w).sum().backward()
    (ref[..., :3] * w.double()).sum().backward()
    torch.testing.assert_close(pos_ours.grad, pos_ref.grad.float(), atol=1e-3, rtol=1e-3)


def test_reference_barycentrics_pass_gradcheck():
    from recon.render.reference import homogeneous_barycentrics

    verts, tri = _random_soup(3, 2)
    pos = _clip(verts, _cams(1, 4).mvp()).double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: homogeneous_barycentrics(p, tri, 4, 4)[0], (pos,))


def test_interpolate_matches_reference_values_and_gradients():
    verts, tri = _sphere(2)
    pos = _clip(verts, _cams(3, 20).mvp())
    rast = rasterize(pos, tri, (20, 20))
    attr = torch.randn(verts.shape[0], 3, generator=torch.Generator().manual_seed(1))
    for batched in (False, True):
        a = attr[None].repeat(3, 1, 1) if batched else attr
        a1, a2 = a.clone().requires_grad_(True), a.double().clone().requires_grad_(True)
        r1, r2 = rast.clone().requires_grad_(True), rast.double().clone().requires_grad_(True)
        out1, out2 = interpolate(a1, r1, tri), interpolate_reference(a2, r2, tri)
        torch.testing.assert_close(out1, out2.float(), atol=1e-5, rtol=0)
        w = torch.randn_like(out1)
        (out1 * w).sum().backward()
        (out2 * w.double()).sum().backward()
        torch.testing.assert_close(a1.grad, a2.grad.float(), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(r1.grad[..., :2], r2.grad[..., :2].float(), atol=1e-4, rtol=1e-4)


def _fixed_id_interpolation(
    pos: torch.Tensor, tri: torch.Tensor, ids: torch.Tensor, attr: torch.Tensor
) -> torch.Tensor:
    """Interpolate ``attr`` with each pixel's triangle held at ``ids`` (rast[..., 3]); float64."""
    from recon.render.reference import pixel_ndc

    B, H, W = ids.shape
    X, Y = pixel_ndc(H, W, pos.dtype, pos.device)
    f = (ids.long() - 1).clamp(min=0)
    v = pos[torch.arange(B)[:, None, None, None], tri.long()[f]]  # [B, H, W, 3, 4]
    a = v[..., 0] - X[None, None, :, None] * v[..., 3]
    c = v[..., 1] - Y[None, :, None, None] * v[..., 3]
    lam = torch.linalg.cross(a, c, dim=-1)
    lam = lam / lam.sum(-1, keepdim=True)
    out = (lam[..., None] * attr[tri.long()[f]]).sum(-2)
    return out * (ids > 0)[..., None]


def test_interpolate_gradient_wrt_positions_by_finite_differences():
    verts, tri = _sphere(1)
    cams = _cams(2, 24)
    attr = torch.randn(verts.shape[0], 2, generator=torch.Generator().manual_seed(2))
    wts = torch.randn(2, 24, 24, 2, generator=torch.Generator().manual_seed(3))
    v = verts.clone().requires_grad_(True)
    pos = _clip(v, cams.mvp())
    rast = rasterize(pos, tri, (24, 24))
    (interpolate(attr, rast, tri) * wts).sum().backward()
    ids = rast[..., 3].detach()
    mvp = cams.mvp().double()
    eps = 1e-5
    for k in range(0, verts.shape[0], 3):
        for c in range(3):
            vals = []
            for sign in (1, -1):
                vv = verts.double().clone()
                vv[k, c] += sign * eps
                out = _fixed_id_interpolation(_clip(vv, mvp), tri, ids, attr.double())
                vals.append((out * wts.double()).sum())
            fd = ((vals[0] - vals[1]) / (2 * eps)).item()
            assert v.grad[k, c].item() == pytest.approx(fd, rel=1e-3, abs=1e-3), (k, c)


def _mask_loss(verts, tri, mvp, res, target, shift):
    pos = _clip(verts + shift, mvp)
    rast = rasterize(pos, tri, (res, res))
    mask = interpolate(torch.ones(verts.shape[0], 1), rast, tri)
    return (antialias(mask, rast, pos, tri) * target).sum()


@pytest.mark.parametrize("sub", [1, 6])  # 80 and 81,920 faces
def test_antialias_translation_gradient_matches_secant(sub):
    """The issue's check: at 256², moving a sphere sideways, d(loss)/d(translation) is within 10% of a
    finite-difference secant over ±0.5 px, on a coarse and on a dense (80k-face) mesh."""
    verts, tri = _sphere(sub)
    res = 256
    cams = orbit_cameras(torch.tensor([10.0]), torch.tensor([0.0]), 2.0, 33.8, res)
    right = cams.c2w[0, :3, 0]
    px = 2 * 2 * math.tan(math.radians(16.9)) / res  # world units per pixel at the centre's depth
    target = torch.zeros(1, res, res, 1)
    target[:, :, : res // 2 + 5] = 1.0
    t = torch.zeros(1, requires_grad=True)
    _mask_loss(verts, tri, cams.mvp(), res, target, t * right).backward()
    h = 0.5 * px
    with torch.no_grad():
        fd = (_mask_loss(verts, tri, cams.mvp(), res, target, h * right)
              - _mask_loss(verts, tri, cams.mvp(), res, target, -h * right)) / (2 * h)
    assert t.grad.item() == pytest.approx(fd.item(), rel=0.10)


def test_antialias_vertex_gradients_by_finite_differences():
    # A single quad (boundary edges are silhouettes) over a gray background; move each corner.
    verts = torch.tensor([[-0.3, -0.25, 0.0], [0.35, -0.3, 0.0], [0.3, 0.3, 0.0], [-0.32, 0.28, 0.0]])
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    cams = orbit_cameras(torch.tensor([5.0]), torch.tensor([10.0]), 2.0, 33.8, 48)
    target = torch.rand(1, 48, 48, 1, generator=torch.Generator().manual_seed(5))
    v = verts.clone().requires_grad_(True)
    _mask_loss(v, tri, cams.mvp(), 48, target, torch.zeros(3)).backward()
    px = 2 * 2 * math.tan(math.radians(16.9)) / 48
    for k in range(4):
        for c in range(2):
            d = torch.zeros(4, 3)
            d[k, c] = 0.5 * px
            with torch.no_grad():
                fd = (_mask_loss(verts + d, tri, cams.mvp(), 48, target, torch.zeros(3))
                      - _mask_loss(verts - d, tri, cams.mvp(), 48, target, torch.zeros(3))) / px
            assert v.grad[k, c].item() == pytest.approx(fd.item(), rel=0.25, abs=0.1 * fd.abs().item() + 0.5)


def test_antialias_ignores_interior_edges_and_hidden_silhouettes():
    verts, tri = _sphere(3)
    # A big quad in front of the sphere hides it completely: no sphere silhouette may blend.
    quad = torch.tensor([[-0.9, -0.9, 0.8], [0.9, -0.9, 0.8], [0.9, 0.9, 0.8], [-0.9, 0.9, 0.8]])
    all_v = torch.cat([verts, quad])
    n = verts.shape[0]
    all_t = torch.cat([tri, torch.tensor([[n, n + 1, n + 2], [n, n + 2, n + 3]], dtype=torch.int32)])
    cams = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 2.0, 33.8, 64)
    pos = _clip(all_v, cams.mvp())
    rast = rasterize(pos, all_t, (64, 64))
    color = interpolate(torch.rand(all_v.shape[0], 3), rast, all_t)
    out = antialias(color, rast, pos, all_t)
    changed = (out - color).abs().sum(-1) > 0
    quad_ids = rast[..., 3] > tri.shape[0]
    # Only pixels next to the quad's own outline may change.
    from scipy import ndimage

    q = quad_ids[0].numpy()
    border = torch.from_numpy(ndimage.binary_dilation(q) & ~ndimage.binary_erosion(q))
    assert not (changed[0] & ~border).any()


def test_clip_positions_kernels_match_the_torch_reference():
    """The numba forward and backward of ``clip_positions`` equal the torch code (values and gradients), with
    and without autograd, and the gradient does not depend on how the vertices are split into work items."""
    from recon.render._kernels import clip_backward_kernel
    from recon.render.views import clip_positions, clip_positions_reference

    cams = orbit_cameras(torch.tensor([10.0, -20.0, 35.0]), torch.tensor([0.0, 100.0, 250.0]), 2.0, 33.8, 32)
    gen = torch.Generator().manual_seed(5)
    verts = (torch.rand(1001, 3, generator=gen) - 0.5).requires_grad_()
    grad = torch.randn(3, 1001, 4, generator=gen)
    fast = clip_positions(verts, cams)
    (fast * grad).sum().backward()
    fast_grad, verts.grad = verts.grad, None
    ref = clip_positions_reference(verts, cams.mvp(0.1, 10.0))
    (ref * grad).sum().backward()
    torch.testing.assert_close(fast, ref.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(fast_grad, verts.grad, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(clip_positions(verts, cams), fast.detach())
    mvp = cams.mvp(0.1, 10.0).numpy()
    parts = [clip_backward_kernel(grad.numpy(), mvp, items) for items in (1, 3, 8)]
    assert all(np.array_equal(parts[0], p) for p in parts[1:])
    double = verts.detach().double().requires_grad_()
    assert clip_positions(double, cams).dtype == torch.float64  # other dtypes take the torch code


def test_edge_topology_of_closed_mesh():
    _, tri = _sphere(2)
    topo = edge_topology(tri)
    assert topo.edges.shape[0] == tri.shape[0] * 3 // 2
    assert (topo.edge_faces >= 0).all()
    assert (topo.edges[:, 0] < topo.edges[:, 1]).all()


def test_edge_topology_kernel_matches_the_reference():
    """The linear-time kernel gives the sorting reference's edges and faces exactly: shuffled faces, a
    boundary, and a non-manifold edge (three faces; slots keep the first two, in face order)."""
    from recon.render.topology import _edge_topology_kernel, compute_edge_topology, compute_edge_topology_reference

    _, tri = _sphere(3)
    gen = torch.Generator().manual_seed(3)
    tri = tri[torch.randperm(tri.shape[0], generator=gen)][:-7].numpy()  # shuffled, with a hole
    extra = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4], [2, 1, 5]]) + tri.max() + 1
    for case in (tri, extra, np.concatenate([tri, extra])):
        ref, fast = compute_edge_topology_reference(case), compute_edge_topology(case)
        assert np.array_equal(fast.edges, ref.edges) and fast.edges.dtype == ref.edges.dtype
        assert np.array_equal(fast.edge_faces, ref.edge_faces)
        # Split by owner over any number of work items, the output stays the same.
        n_vert = int(case.max()) + 1
        for items in (1, 3, 7):
            edges, edge_faces = _edge_topology_kernel(np.ascontiguousarray(case, dtype=np.int32), n_vert, items)
            assert np.array_equal(edges, ref.edges) and np.array_equal(edge_faces, ref.edge_faces)
    assert (compute_edge_topology(tri).edge_faces == -1).any()
    assert compute_edge_topology(np.zeros((0, 3), np.int64)).edges.shape == (0, 2)


# ---------------------------------------------------------------- texture


def test_texture_bilinear_values_and_gradients():
    tex = torch.rand(1, 4, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    # Texel centres return the texel exactly (v down: row 0 at v = 0.5 / H).
    uv = torch.tensor([[[[0.5 / 5, 0.5 / 4], [2.5 / 5, 3.5 / 4]]]], dtype=torch.float64)
    out = texture(tex, uv)
    torch.testing.assert_close(out[0, 0, 0], tex[0, 0, 0])
    torch.testing.assert_close(out[0, 0, 1], tex[0, 3, 2])
    uv = torch.rand(1, 3, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    for mode in ("wrap", "clamp"):
        def lookup(t: torch.Tensor, u: torch.Tensor, mode: str = mode) -> torch.Tensor:
            return texture(t, u, mode)

        assert torch.autograd.gradcheck(lookup, (tex.requires_grad_(True), uv.requires_grad_(True)))


@pytest.mark.cuda
@pytest.mark.skipif("nvdiffrast" not in available_backends(), reason="needs CUDA and nvdiffrast")
def test_nvdiffrast_backend_matches_cpu():
    verts, tri = _sphere(3)
    pos = _clip(verts, _cams(3, 64).mvp())
    cpu = rasterize(pos, tri, (64, 64), backend="cpu")
    gpu = rasterize(pos.cuda(), tri.cuda(), (64, 64), backend="nvdiffrast").cpu()
    assert (cpu[..., 3] == gpu[..., 3]).float().mean() > 0.999
    attr = torch.rand(verts.shape[0], 3)
    torch.testing.assert_close(interpolate(attr, cpu, tri),
                               interpolate(attr.cuda(), gpu.cuda(), tri.cuda(), backend="nvdiffrast").cpu(),
                               atol=1e-4, rtol=0)


def test_cuda_without_nvdiffrast_is_an_error_when_forced():
    if "nvdiffrast" in available_backends():
        pytest.skip("nvdiffrast is available here")
    with pytest.raises(RuntimeError, match="nvdiffrast"):
        rasterize(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.int32), (4, 4), backend="nvdiffrast")


def test_crease_normals_keep_a_box_flat_a_sphere_smooth_and_seams_invisible():
    from recon.render.views import crease_normals, vertex_normals

    box = trimesh.creation.box()  # 8 shared corners: smooth vertex normals would bend every face
    v, f = torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces)
    face_normals = torch.tensor(box.face_normals, dtype=torch.float32)
    torch.testing.assert_close(crease_normals(v, f), face_normals[:, None].expand(-1, 3, -1))
    assert float((vertex_normals(v, f)[f] - face_normals[:, None]).norm(dim=-1).min()) > 0.5
    ball = trimesh.creation.icosphere(3)  # neighbouring faces ~ 9 degrees apart: below the crease angle
    v, f = torch.tensor(ball.vertices, dtype=torch.float32), torch.tensor(ball.faces)
    creased = crease_normals(v, f, 30.0)
    torch.testing.assert_close(creased, vertex_normals(v, f)[f], atol=1e-6, rtol=0)
    # Every corner its own vertex (a mesh cut at texture seams everywhere): the same normals.
    split_v, split_f = v[f.reshape(-1)], torch.arange(3 * f.shape[0]).reshape(-1, 3)
    torch.testing.assert_close(crease_normals(split_v, split_f, 30.0), creased)
    # Below the faces' dihedral angle every face is flat.
    fv = v[f]
    flat = torch.nn.functional.normalize(torch.linalg.cross(fv[:, 1] - fv[:, 0], fv[:, 2] - fv[:, 0], dim=-1), dim=-1)
    torch.testing.assert_close(crease_normals(v, f, 1.0), flat[:, None].expand(-1, 3, -1), atol=1e-6, rtol=0)
