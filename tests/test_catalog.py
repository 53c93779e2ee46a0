"""The catalog: curated data, schema validation, queries, registry cross-reference and the CLI."""
import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from medmamba import catalog
from medmamba.catalog import render, vocab
from medmamba.catalog.schema import CatalogRecord
from medmamba.cli import catalog as cli_catalog
from medmamba.cli.main import COMMAND_MODULES, OneLineArgumentParser
from medmamba.errors import CatalogError, MedmambaError

CURATION = Path(__file__).resolve().parent.parent / "tools" / "catalog_curation"
IMPLEMENTED = {"U-Mamba": "umamba_bot", "SegMamba": "segmamba", "VM-UNet": "vmunet",
               "MHS-VM": "mhsvm", "HRVMamba": "hrvmamba"}
SEEDS_GENERAL = {"Vim", "MambaOut", "Motion Mamba", "LinGen", "LaMamba-Diff", "KMM", "HRVMamba", "MHS-VM"}
# tools/catalog_curation/sources/survey_lists_notes.md §6: the records found only in the lower-reliability Chelsea-19 list.
WEAK = {"MambaMDN", "MambaVesselNet", "RegMamba", "VMANet", "LangMamba", "MambaNetLK", "CMI-MTL",
        "UltrasODM", "TIFCMamba", "LMO", "DermoMamba", "BSDA-Mamba", "MS-VMANet", "DMCR", "UltrasOM",
        "SEMambaSR"}


def _curation_tool():
    spec = importlib.util.spec_from_file_location("catalog_curate", CURATION / "curate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _raw_lines():
    return [json.loads(line) for line in catalog.CATALOG_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


def _cli(capsys, *args):
    """Run `medmamba catalog ARGS` the way medmamba.cli.main does (one-line errors, exit 1), building
    only this subcommand so the test does not depend on other subcommands' modules."""
    parser = OneLineArgumentParser(prog="medmamba")
    sub = parser.add_subparsers(dest="command", parser_class=OneLineArgumentParser)
    cli_catalog.add_arguments(sub.add_parser(cli_catalog.NAME))
    args = parser.parse_args(["catalog", *args])
    try:
        code = cli_catalog.run(args)
    except MedmambaError as err:
        print(f"medmamba catalog: error: {err}", file=sys.stderr)
        code = 1
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_record_validates_and_at_least_250():
    raw = _raw_lines()
    records = catalog.load()
    assert len(records) == len(raw) >= 250
    for i, obj in enumerate(raw):
        assert CatalogRecord.from_dict(obj, where=f"line {i + 1}") == records[i]
        assert records[i].to_dict() == obj  # round trip: nothing lost on load


def test_names_and_arxiv_ids_unique_after_merging():
    keys = [vocab.normalise_key(n) for r in catalog.load() for n in dict.fromkeys(r.names())]
    assert len(keys) == len(set(keys))
    ids = [a for r in catalog.load() for a in ((r.arxiv,) if r.arxiv else ()) + r.related_arxiv]
    assert len(ids) == len(set(ids))
    assert catalog.get("MC-ArbMamba").name == "MambaMIR"
    assert "2405.17659" in catalog.get("MambaMIR").related_arxiv
    assert "2409.14305" in catalog.get("UU-Mamba").related_arxiv
    assert catalog.get("lma unet").name == "LKM-UNet"


def test_curation_script_reproduces_the_packaged_file():
    curate = _curation_tool()
    assert curate.DEFAULT_OUT == catalog.CATALOG_PATH and curate.DEFAULT_SOURCE.is_file()
    records = curate.curate(curate.read_source(curate.DEFAULT_SOURCE))
    assert [r.to_dict() for r in records] == _raw_lines()


def test_curation_tooling_is_not_in_the_installed_package():
    # the runtime package ships the curated catalog only; its inputs and tool live in tools/
    package = Path(catalog.__file__).parent
    assert not (package / "curate.py").exists() and not (package / "sources").exists()
    assert (package / "catalog.jsonl").is_file()


def test_curation_script_runs_from_the_command_line(tmp_path):
    out = tmp_path / "catalog.jsonl"
    proc = subprocess.run([sys.executable, str(CURATION / "curate.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_text(encoding="utf-8") == catalog.CATALOG_PATH.read_text(encoding="utf-8")


def test_weak_and_general_records_marked():
    assert {r.name for r in catalog.load() if r.weak_source} == WEAK
    general = {r.name for r in catalog.find(domain="general")}
    assert SEEDS_GENERAL <= general
    assert all(r.source for r in catalog.load())
    assert catalog.get("MambaOut").ssm == "none" and catalog.get("MambaOut").block == "gated_cnn"
    assert catalog.get("Vim").block == "vim_bidirectional" and catalog.get("Vim").routes == "bidirectional"


def test_network_links_resolve_in_the_registry():
    from medmamba.networks import registry

    linked = {n for r in catalog.load() for n in r.networks}
    assert {r.name: r.network for r in catalog.find(implemented=True)} == IMPLEMENTED
    # the catalog's fixed vocabulary of registry names is exactly the registry's
    assert set(vocab.NETWORK_NAMES) == set(registry.list_networks()) and linked <= set(vocab.NETWORK_NAMES)
    assert {r.routes for r in catalog.load()} - {None} <= set(vocab.ROUTE_SETS)
    from medmamba.kernels.routes import ROUTE_SETS  # every linked route set exists in the kernels

    assert set(vocab.ROUTE_SETS) == set(ROUTE_SETS[2]) | set(ROUTE_SETS[3])
    # every catalog name of an implemented method builds its network: the networks declare these
    # aliases themselves, the registry never reads the catalog
    for record in catalog.find(implemented=True):
        for name, network in [(record.name, record.network), *record.network_variants.items()]:
            assert registry.get_network_entry(name).name == network
    assert catalog.catalog_name_for_network("vmunet") == "VM-UNet"
    assert catalog.catalog_name_for_network("umamba_enc") == "U-Mamba"
    assert catalog.catalog_name_for_network("plain_unet") is None
    # ... and the catalog finds a record by any name the registry knows
    assert catalog.get("umamba_enc").name == catalog.get("U-Mamba_Enc").name == "U-Mamba"
    assert catalog.registry_name("U-Mamba_Enc") == "umamba_enc" and catalog.registry_name("Vim") is None


def test_registry_does_not_import_the_catalog():
    code = ("import sys; from medmamba.networks import list_networks, build_network; list_networks(); "
            "build_network('VM-UNet', spatial_dims=2, in_channels=1, num_classes=2, embed_dim=8, depths=[1], "
            "depths_decoder=[1]); print(any(m.startswith('medmamba.catalog') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_filters_on_known_examples():
    hybrids_3d = {r.name for r in catalog.find(task="segmentation", dims="3D", category="hybrid")}
    assert {"SegMamba", "U-Mamba", "nnMamba"} <= hybrids_3d
    assert "VM-UNet" not in hybrids_3d
    two_d = {r.name for r in catalog.find(dims="2d")}
    assert {"VM-UNet", "U-Mamba"} <= two_d and "SegMamba" not in two_d
    assert all("X-ray" in r.modality for r in catalog.find(modality="xray"))
    assert all(r.category == "pure Mamba" for r in catalog.find(category="pure"))
    assert {r.name for r in catalog.find(category="U-Net variant", year=2024)} >= {"VM-UNet", "Mamba-UNet"}
    with pytest.raises(CatalogError, match="unknown task 'segmentaton'; choose from: segmentation"):
        catalog.find(task="segmentaton")
    assert len(catalog.find(year=2026)) == sum(1 for o in _raw_lines() if o["year"] == 2026)


def test_search_is_ranked_and_case_insensitive():
    assert catalog.search("segmamba")[0][1].name == "SegMamba"
    assert {r.name for _, r in catalog.search("hilbert")} >= {"LGRNet", "Hilbert-Mamba"}
    assert [r.name for _, r in catalog.search("ISIC")] == [r.name for _, r in catalog.search("isic")]
    assert "VM-UNet" in [r.name for _, r in catalog.search("isic")]
    scores = [s for s, _ in catalog.search("brats")]
    assert scores == sorted(scores, reverse=True) and "SegMamba" in [r.name for _, r in catalog.search("brats")]
    with pytest.raises(CatalogError):
        catalog.search("  ")


def test_stats_equal_a_direct_count_of_the_file():
    raw = _raw_lines()
    counts = catalog.stats()
    assert counts["total"]["records"] == len(raw) >= 250
    for key in ("category", "task", "year", "scan", "ssm", "domain"):
        assert counts[key] == Counter(str(o[key]) for o in raw), key
    assert counts["dims"] == Counter(o["dims"] or "not stated" for o in raw)
    assert counts["modality"] == Counter(m for o in raw for m in (o["modality"] or ["not stated"]))
    assert counts["category"]["hybrid CNN"] == 31  # notes §3: 31 hybrid CNN-Mamba records
    # The survey's own 62 records reproduce its taxonomy counts (notes §3 "Within the survey's 62").
    survey = catalog.stats(catalog.find(survey=True))
    assert survey["total"]["records"] == 62
    assert survey["category"] == Counter({"pure Mamba": 10, "U-Net variant": 10, "hybrid CNN": 10, "hybrid other": 5,
                                          "hybrid Transformer": 3, "hybrid GNN": 1, "hybrid RNN": 1, "unspecified": 22})


def test_schema_rejects_bad_records(tmp_path):
    good = _raw_lines()[0]
    for change, expected in [({"task": "segmentaton"}, "unknown task"), ({"network": "vmunet3"}, "unknown network"),
                             ({"routes": "diagonal"}, "unknown routes"), ({"dims": "4D"}, "unknown dims"),
                             ({"year": "2024"}, "year"), ({"arxiv": "abs/2401"}, "arXiv id"),
                             ({"colour": "red"}, "unknown field")]:
        with pytest.raises(CatalogError, match=expected) as info:
            CatalogRecord.from_dict({**good, **change}, where="line 1")
        assert "U-Mamba" in str(info.value) and "\n" not in str(info.value)
    bad = tmp_path / "bad.jsonl"
    text = json.dumps(good) + "\n" + json.dumps({**good, "name": "X", "category": "hybrid CNN-Mamba"}) + "\n"
    bad.write_text(text)
    with pytest.raises(CatalogError, match=r"bad\.jsonl: line 2 \('X'\): unknown category"):
        catalog.read_catalog(bad)
    assert bad.read_text() == text  # input never modified
    dup = tmp_path / "dup.jsonl"
    dup.write_text(json.dumps(good) + "\n" + json.dumps({**good, "name": "u mamba", "aliases": []}) + "\n")
    with pytest.raises(CatalogError, match="already used"):
        catalog.read_catalog(dup)
    with pytest.raises(CatalogError, match="did you mean"):
        catalog.get("SegMamb")


def test_vocabulary_parsers():
    assert vocab.parse_modalities("multi (CT-MRI, PET-MRI; also infrared-visible)") == ["CT", "MRI", "PET"]
    assert vocab.parse_modalities("retina (OCTA)") == ["retina"]  # OCTA is not CT
    assert vocab.parse_modalities("") == []
    assert [vocab.parse_dims(d) for d in ("2D & 3D", "ND (2D/3D/video)", "2D+time", "", "3D (point cloud)")] == \
        ["2D+3D", "2D+3D", "video", None, "3D"]
    assert vocab.parse_task("detection (cell)") == ("other", "detection: cell")
    assert vocab.parse_task("multimodal (image fusion)")[0] == "restoration"
    assert vocab.parse_scan("Bidirectional Slice Scan (BSS)") == "slice"
    assert vocab.parse_scan("SS2D (per survey)") == "cross-scan 2D"


def test_cli_list_fits_100_columns(capsys):
    code, out, _ = _cli(capsys, "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == len(catalog.load()) + 3
    assert max(len(line) for line in lines) <= 100
    code, out, _ = _cli(capsys, "list", "--dims", "3D", "--task", "segmentation", "--category", "hybrid CNN")
    assert "SegMamba" in out and "U-Mamba" in out and "VM-UNet" not in out
    code, out, _ = _cli(capsys, "list", "--implemented", "--json")
    assert {r["name"] for r in json.loads(out)} == set(IMPLEMENTED)


def test_cli_show_every_implemented_network_and_width(capsys):
    for name, network in IMPLEMENTED.items():
        code, out, _ = _cli(capsys, "show", name)
        assert code == 0
        assert f"medmamba plan_and_preprocess -d ID --network {network}" in out
        assert f"-f 0 --network {network}" in out
        config = "3d_fullres" if catalog.get(name).dims in ("3D", "2D+3D") else "2d"
        assert f"medmamba train -d ID -c {config} -f 0 --network {network}" in out
    for record in catalog.load():
        lines = render.format_record(record).splitlines()
        assert max(len(line) for line in lines) <= 100 and lines[0].endswith(record.name)
    code, out, _ = _cli(capsys, "show", "vm unet", "--json")
    assert json.loads(out)["network"] == "vmunet"
    code, _, err = _cli(capsys, "show", "NoSuchMamba")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "NoSuchMamba" in err


def _registry_names():
    from medmamba.networks.registry import list_networks

    return list_networks()


@pytest.mark.parametrize("network", _registry_names())
def test_cli_show_every_registry_name(capsys, network):
    """The README tells users to run `medmamba catalog show NAME` for every --network name."""
    code, out, err = _cli(capsys, "show", network)
    assert code == 0 and err == ""
    assert f"medmamba plan_and_preprocess -d ID --network {network}" in out
    assert max(len(line) for line in out.splitlines()) <= 100
    linked = catalog.catalog_name_for_network(network)
    if linked is not None:  # the method's record, which lists this network's commands
        assert out.splitlines()[0].endswith(linked)
    else:  # no record (the CNN baseline): the registry's entry, paper and capabilities
        assert out.splitlines()[0].endswith(network) and "topology:" in out and "no record" in out
    code, out, _ = _cli(capsys, "show", network, "--json")
    data = json.loads(out)
    assert code == 0 and network in ([data["network"]] + list(data.get("network_variants", {}).values()))


def test_cli_show_plain_unet_json_has_capabilities(capsys):
    code, out, _ = _cli(capsys, "show", "plain_unet", "--json")
    caps = json.loads(out)["capabilities"]
    assert code == 0 and caps["topology"] == "adaptive" and caps["ssm"] is None and caps["norm"] == "instance"


def test_cli_search_and_stats(capsys, tmp_path):
    code, out, _ = _cli(capsys, "search", "tri-orientated")
    assert code == 0 and out.splitlines()[2].startswith("SegMamba")
    code, out, _ = _cli(capsys, "stats", "--plot", str(tmp_path / "stats.png"))
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 100
    total = len(catalog.load())
    assert out.startswith(f"{total} records")
    for category, n in Counter(r.category for r in catalog.load()).items():
        assert any(line.split()[:-1] == category.split() + [str(n)] for line in out.splitlines()), category
    assert (tmp_path / "stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = _cli(capsys, "stats", "--survey")
    assert code == 0 and out.startswith("62 records")
    code, _, err = _cli(capsys)
    assert code == 1 and "choose an action" in err


def test_registered_as_a_subcommand():
    assert "catalog" in COMMAND_MODULES


def test_import_is_torch_free():
    code = "import sys, medmamba.catalog as c; c.load(); c.find(task='segmentation'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
