"""TorchScript and ONNX export of the registered networks: logits within 1e-4 of eager (random input,
batch 2 so the dynamic batch is exercised), the scan in standard operators only, the graph-friendly scan
equal to the reference scan, and the `medmamba export` command with its real-case check and refusal."""
from __future__ import annotations

import os

import pytest
import torch

from medmamba.cli.main import main
from medmamba.export.network_export import PARITY_TOLERANCE, export_network, onnxruntime_available
from medmamba.networks.registry import build_network, list_networks

from test_networks_capabilities import ALL, NARROW, _smallest_planned

# Networks whose smallest planned patch exports in seconds; the others (patch divisor 32 or 16x32, many
# routes per layer) take minutes on a 2-core CPU and run with MEDMAMBA_TEST_EXPORT_ALL=1.
FAST = ("plain_unet", "umamba_bot", "umamba_enc")
EVERY = os.environ.get("MEDMAMBA_TEST_EXPORT_ALL") == "1"
FORMATS = ["torchscript", "onnx"]


def _route_distinct(net: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """MHS-VM with each route's skip weight and projections drawn apart, as training leaves them.

    At initialisation every route has D = 1 and the D·u skip dominates, so the four route outputs a
    head fuses differ only by 1e-8..1e-6 relative, near fp32 round-off; the route attention divides
    their spread by their mean deviation, which turns round-off of any summation order into
    differences of ~0.1 in the logits (eager vs exported: 9.6e-2 in 2D, 1.7e-1 in 3D), or into exactly
    0 when the spread rounds to 0 and the gate closes (then the scan does not reach the output and a
    parity check passes without testing it). Drawn apart, the spread is of the order of the outputs."""
    from medmamba.networks.mhsvm import MultiHeadScanMixer

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, MultiHeadScanMixer):
                m.Ds.copy_(torch.randn(m.Ds.shape, generator=g))
                m.x_proj_weight.copy_(0.5 * torch.randn(m.x_proj_weight.shape, generator=g))
    return net


def test_every_registered_network_is_listed():
    assert set(list_networks()) == set(ALL)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", ALL)
def test_export_parity(name, dims, fmt, tmp_path):
    if fmt == "onnx" and not onnxruntime_available():
        pytest.skip("onnx/onnxruntime not installed (pip install 'medmamba[onnx]')")
    if name not in FAST and not EVERY:
        pytest.skip(f"{name}: export takes minutes on CPU; set MEDMAMBA_TEST_EXPORT_ALL=1")
    topo, kwargs = _smallest_planned(name, [1.0] * dims)
    torch.manual_seed(0)
    net = build_network(name, **{**kwargs, **NARROW.get(name, {})}).eval()
    if name == "mhsvm":
        net = _route_distinct(net)
    path = tmp_path / ("net.onnx" if fmt == "onnx" else "net.pt")
    checks = export_network(net, list(topo.patch_size), 1, path, fmt)
    print(f"{name} {dims}D {fmt}: " + "; ".join(c.line() for c in checks))  # the parity numbers, with -s
    assert path.is_file() and checks[0].shape[0] == 2
    assert all(c.max_abs_diff <= PARITY_TOLERANCE for c in checks)
    if fmt == "onnx" and name != "plain_unet":
        import onnx

        graph = onnx.load(str(path)).graph
        assert {n.domain for n in graph.node} <= {"", "ai.onnx"}  # standard operators only
        assert "Pad" in {n.op_type for n in graph.node}  # the scan's doubling steps are in the graph


def test_onnx_opset_is_20_only_for_volumetric_grid_sample():
    from medmamba.export.network_export import ONNX_OPSET, onnx_opset

    hrv = {d: build_network("hrvmamba", spatial_dims=d, in_channels=1, num_classes=2, **NARROW["hrvmamba"])
           for d in (2, 3)}
    plain = build_network("plain_unet", spatial_dims=3, in_channels=1, num_classes=2, n_stages=2,
                          features_per_stage=[4, 8])
    assert (onnx_opset(hrv[3]), onnx_opset(hrv[2]), onnx_opset(plain)) == (20, ONNX_OPSET, ONNX_OPSET)


def test_mhsvm_export_scan_parity_tests_the_scan():
    """The graph-friendly scan inside MHS-VM (2D, eager in export mode: what tracing records) matches the
    eager network within the parity limit, and the scan's inputs move the logits far more than that
    limit, so the comparison is not vacuous."""
    from medmamba.export.network_export import LogitsOnly
    from medmamba.kernels.export_scan import export_mode
    from medmamba.networks.mhsvm import MultiHeadScanMixer

    topo, kwargs = _smallest_planned("mhsvm", [1.0, 1.0])
    torch.manual_seed(0)
    # eager on the pure-torch chunked scan (another summation order than the export scan; the cpp scan's
    # first use self-tests for seconds, and the slow parity tests above compare against it)
    built = build_network("mhsvm", **{**kwargs, **NARROW["mhsvm"], "backend": "torch"}).eval()
    net = LogitsOnly(_route_distinct(built))
    x = torch.randn(2, 1, *topo.patch_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        eager = net(x)
        with export_mode():
            exported = net(x)
        for m in net.modules():
            if isinstance(m, MultiHeadScanMixer):
                m.x_proj_weight.zero_()  # delta = softplus(bias), B = C = 0: the scan adds nothing
        without_scan = net(x)
    diff, scan_effect = float((eager - exported).abs().max()), float((eager - without_scan).abs().max())
    assert diff <= PARITY_TOLERANCE and scan_effect > 10 * PARITY_TOLERANCE, (diff, scan_effect)


def test_traced_scan_has_log_depth_not_one_step_per_token():
    from medmamba.kernels.export_scan import linear_scan

    a, x = torch.rand(1, 2000, 3, 2), torch.randn(1, 2000, 3, 2)
    traced = torch.jit.trace(linear_scan, (a, x))
    nodes = len(list(traced.graph.nodes()))
    assert nodes < 1000  # ceil(log2 2000) = 11 doubling steps (~50 nodes each), not 2000 steps
    h, expected = torch.zeros(1, 3, 2), []
    for t in range(2000):
        h = a[:, t] * h + x[:, t]
        expected.append(h)
    assert torch.allclose(traced(a, x), torch.stack(expected, 1), atol=1e-5)


def test_export_scan_matches_the_reference_in_fp64():
    from medmamba.kernels.export_scan import export_multi_route_scan
    from medmamba.kernels.reference import reference_multi_route_scan
    from medmamba.kernels.routes import build_routes
    from medmamba.kernels.selfcheck import make_inputs

    routes = build_routes(["hilbert", "snake_wh_rev"], (5, 9))
    for full in (True, False):
        xs = make_inputs(2, 2, 45, 6, 3, dtype=torch.float64, full=full)
        ref = reference_multi_route_scan(*xs, routes, True)
        got = export_multi_route_scan(*xs, routes, True)
        assert got.dtype == torch.float64 and torch.allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_export_command_checks_a_real_case_and_refuses_a_mismatch(trained_tiny_model, tmp_path, capsys, monkeypatch):
    _, model, images = trained_tiny_model
    case = sorted(images.iterdir())[0]
    out = tmp_path / "net.pt"
    assert main(["export", "-m", str(model), "-o", str(out), "--case", str(case)]) == 0
    err = capsys.readouterr().err
    assert "random input (2, 1, 16, 16)" in err and "real case input (1, 1, 16, 16)" in err and out.is_file()
    import medmamba.export.network_export as ne

    monkeypatch.setattr(ne, "PARITY_TOLERANCE", -1.0)  # nothing can pass: the file must not be written
    monkeypatch.setattr(ne.export_network, "__defaults__", (None, None, -1.0, 0))
    refused = tmp_path / "refused.pt"
    assert main(["export", "-m", str(model), "-o", str(refused)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "differs from the eager one" in err and "nothing written" in err
    assert not refused.exists() and list(tmp_path.glob("refused*")) == []
