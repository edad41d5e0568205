"""Block strings, architectures and search spaces: grammar, round trips, validation, presets."""

import json
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from conftest import record_reliability
from mnas.search.registry import ARCHITECTURES, SPACES, load_architecture, load_space
from mnas.search.arch import Architecture, Block, decode_block, encode_block, parse_arch_text, round_filters
from mnas.search.space import SearchSpace

OFFICIAL = [s for name in ("mnasnet-a1", "mnasnet-b1", "mnasnet-small", "mnasnet-d1", "mnasnet-d1-320")
            for s in ARCHITECTURES[name].block_strings]


def test_official_grammar_decodes_to_the_documented_fields():
    block = decode_block("r3_k5_s22_e3_i24_o40_se0.25")
    assert block == Block(repeats=3, kernel=5, strides=(2, 2), expand_ratio=3, input_filters=24,
                          output_filters=40, se_ratio=0.25, skip="identity", conv="mbconv")
    assert block.op == "mbconv3"
    assert decode_block("r1_k3_s11_e1_i32_o16_noskip").skip == "none"
    assert decode_block("r1_k3_s11_e1_i32_o16_noskip").op == "dsconv"


@pytest.mark.parametrize("text", OFFICIAL)
def test_every_released_string_encodes_back_to_itself(text):
    assert encode_block(decode_block(text)) == text


def test_extensions_round_trip_and_token_order_is_free():
    for text in ("r2_k5_s22_e1_i16_o24_conv", "r2_k3_s11_e6_i24_o24_se0.25_poolskip",
                 "r1_k3_s22_e1_i16_o24_se0.25_poolskip_conv"):
        assert encode_block(decode_block(text)) == text
    assert decode_block("o40_i24_se0.25_e3_s22_k5_r3") == decode_block("r3_k5_s22_e3_i24_o40_se0.25")


@pytest.mark.parametrize("text, token", [
    ("r3_k5_s22_e3_i24_o40_x7", "x7"),
    ("r3_k5_s2_e3_i24_o40", "s2"),
    ("r3_k5_s20_e3_i24_o40", "s20"),
    ("r3_k5_s22_e3_i24", "o"),
    ("r0_k5_s22_e3_i24_o40", "r0"),
    ("r3_k5_s22_e3_i24_o40_se1.5", "se1.5"),
    ("r3_k5_s22_e3_i24_o40_se0.25_se0.5", "se"),
    ("r3_k5_s22_e6_i24_o40_conv", "e6"),
    ("r3_k5_s22_e3_i24_o40_noskip_poolskip", "noskip"),
    ("r3_kfive_s22_e3_i24_o40", "kfive"),
    ("r3_k4_s22_e3_i24_o40", "k4"),        # even kernels: spaces refuse them too (one grammar)
    ("r101_k3_s22_e3_i24_o40", "r101"),    # at most MAX_REPEATS layers: counting walks every one
    ("r3_k5_s22_e3_i24_o4²", "o4²"),      # ASCII digits only, though '²'.isdigit()
    ("r3_k5_s22_e3_i24_o" + "9" * 13, "o999"),
])
def test_malformed_strings_name_the_bad_token(text, token):
    with pytest.raises(ValueError) as err:
        decode_block(text)
    assert repr(token) in str(err.value) or token in str(err.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="rkseiocnpl0123456789._", max_size=40))
def test_parser_never_crashes_on_garbage(text):
    record_reliability("fuzz", target="block-string parser", examples=1)
    try:
        block = decode_block(text)
    except ValueError:
        return
    assert decode_block(encode_block(block)) == block


def test_block_strings_and_spaces_share_one_grammar():
    """What a space may hold, a block string may say, and back: odd kernels, one-digit strides, <= 100 layers."""
    def space(**block):
        return SearchSpace({"blocks": [{"filters": 16, "layers": 1, "stride": 1, **block}]})

    for kernel in (1, 3, 7, 9, 11):
        assert decode_block(f"r1_k{kernel}_s11_e1_i8_o8").kernel == kernel
        assert space(kernel=[kernel]).sample(0).blocks[0].kernel == kernel
    for bad in (2, 4):
        with pytest.raises(ValueError, match=f"'k{bad}'"):
            decode_block(f"r1_k{bad}_s11_e1_i8_o8")
        with pytest.raises(ValueError, match=f"bad option {bad}"):
            space(kernel=[bad])
        with pytest.raises(ValueError, match="kernel' must be odd"):
            Block(1, bad, (1, 1), 1, 8, 8)
    for stride in (1, 2, 9):
        arch = space(stride=stride).sample(0)
        assert decode_block(arch.block_strings[0]) == arch.blocks[0]
    for bad in (0, 10, 11, 99):  # s1010 would be read back as strides (1, 0) and a stray '10'
        with pytest.raises(ValueError, match="stride must be an integer from 1 to 9"):
            space(stride=bad)
        with pytest.raises(ValueError, match="strides must be two integers from 1 to 9"):
            Block(1, 3, (bad, bad), 1, 8, 8)
    assert decode_block("r100_k3_s11_e1_i8_o8").repeats == 100
    with pytest.raises(ValueError, match="layers must be an integer from 1 to 100"):
        space(layers=101)
    with pytest.raises(ValueError, match=r"layer_offset: option 1 makes a block that cannot be.*at most 100"):
        space(layers=100, layer_offset=[0, 1])
    with pytest.raises(ValueError, match=r"filter_multiplier: option 1e\+300 makes a block that cannot be"):
        space(filter_multiplier=[1.0, 1e300])
    for bad in (float("inf"), float("nan"), 0, -1, True):
        with pytest.raises(ValueError, match="filter_multiplier: bad option"):
            space(filter_multiplier=[bad])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "filters": st.integers(1, 2000), "layers": st.integers(1, 100), "stride": st.integers(1, 12),
    "kernel": st.lists(st.integers(0, 20).map(lambda k: 2 * k + 1), min_size=1, max_size=3, unique=True),
    "filter_multiplier": st.lists(st.floats(0.01, 50), min_size=1, max_size=3, unique=True),
    "layer_offset": st.lists(st.integers(-100, 100), min_size=1, max_size=3, unique=True),
}), min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_every_space_that_loads_writes_block_strings_that_parse_back(blocks, rng):
    try:
        space = SearchSpace({"stem": 8, "blocks": blocks})
    except ValueError:  # strides over 9, an option that makes no valid block (over 100 layers, ...)
        record_reliability("fuzz", target="search-space loader", examples=1)
        return
    record_reliability("fuzz", target="search-space loader", examples=1)
    for _ in range(5):
        arch = space.sample(rng)
        assert Architecture.from_strings(arch.block_strings, stem_filters=8, dropout=arch.dropout) == arch
        assert space.decode(space.encode(arch)) == arch


def test_errors_echo_a_short_piece_of_a_huge_token():
    token = "x" * 10_000_000
    with pytest.raises(ValueError) as err:
        decode_block("r1_k3_s11_e1_i32_o16_" + token)
    assert len(str(err.value)) < 400 and "(10,000,000 characters)" in str(err.value)
    with pytest.raises(ValueError) as err:
        parse_arch_text("r1_k3_s11_e1_i32_o" + "9" * 10_000_000)
    assert len(str(err.value)) < 400
    with pytest.raises(ValueError) as err:
        SearchSpace({"blocks": [{"filters": 16, "layers": 1, "stride": 1, "op": ["mbconv" + "6" * 10**6]}]})
    assert len(str(err.value)) < 400


@pytest.mark.parametrize("multiplier", [float("inf"), float("nan"), 1e300, 0.0, -1.0, "2", True])
def test_depth_multiplier_must_be_finite_and_sane(multiplier):
    with pytest.raises(ValueError, match="depth multiplier|'depth_multiplier' must be a number"):
        ARCHITECTURES["mnasnet-a1"].replace(depth_multiplier=multiplier)
    if isinstance(multiplier, float):  # the text form of the same number (an ARCH file)
        with pytest.raises(ValueError, match="<text>: depth multiplier must be positive and at most 10"):
            parse_arch_text(f"depth_multiplier: {multiplier}\nr1_k3_s11_e1_i32_o16\n")


def test_round_filters_follows_the_official_rule():
    assert round_filters(32, 1.0) == 32
    assert round_filters(32, 0.35) == 16       # 11.2 rounds to 8, < 90% of 11.2 -> 16
    assert round_filters(112, 0.75) == 88      # 84 -> 88
    assert round_filters(40, 1.4) == 56
    assert round_filters(16, 0.5) == 8
    assert round_filters(320, 1.4) == 448


def test_architecture_text_file_form(tmp_path):
    a1 = ARCHITECTURES["mnasnet-a1"]
    path = tmp_path / "a1.txt"
    path.write_text("# MnasNet-A1\nstem: 32\nhead: 1280\n" + "\n".join(a1.block_strings) + "\n")
    assert load_architecture(str(path)) == a1
    assert parse_arch_text(ARCHITECTURES["mnasnet-small"].to_text()) == ARCHITECTURES["mnasnet-small"]
    with pytest.raises(ValueError, match=r"bad\.txt:3: .*'zz9'"):
        bad = tmp_path / "bad.txt"
        bad.write_text("stem: 32\nr1_k3_s11_e1_i32_o16\nr2_k3_s22_e6_i16_o24_zz9\n")
        load_architecture(str(bad))
    with pytest.raises(ValueError, match="unknown setting 'colour'"):
        parse_arch_text("colour: 3\nr1_k3_s11_e1_i32_o16\n")


def test_architecture_dict_round_trip_and_scaling():
    a1 = ARCHITECTURES["mnasnet-a1"]
    assert Architecture.from_dict(json.loads(json.dumps(a1.to_dict()))) == a1
    half = a1.replace(depth_multiplier=0.5)
    assert [b.output_filters for b in half.scaled_blocks()] == [8, 16, 24, 40, 56, 80, 160]
    assert half.scaled_stem() == 16
    assert half.blocks == a1.blocks  # scaling never rewrites the block strings
    with pytest.raises(ValueError, match="unknown architecture field"):
        Architecture.from_dict({"blocks": list(a1.block_strings), "depth": 3})


def test_registry_has_the_named_architectures():
    assert {"mnasnet-a1", "mnasnet-b1", "mnasnet-small", "mnasnet-d1", "mnasnet-d1-320",
            "mobilenetv2"} <= set(ARCHITECTURES)
    assert ARCHITECTURES["mnasnet-small"].stem_filters == 8
    assert ARCHITECTURES["mnasnet-small"].dropout == 0.0
    with pytest.raises(ValueError, match="unknown architecture 'mnasnet-z'"):
        load_architecture("mnasnet-z")


# ---------------------------------------------------------------------------------------------- search spaces

def test_paper_space_shape():
    space = load_space("mnasnet")
    assert len(space.blocks) == 7
    assert space.choice_counts == [4, 2, 2, 3, 3, 3] * 7
    assert space.size == 432 ** 7
    assert 0 < space.distinct_size() < space.size  # rounding and the one-layer floor merge some genotypes


@pytest.mark.parametrize("space_name, arch_name", [
    ("mnasnet-a1", "mnasnet-a1"), ("mnasnet-small", "mnasnet-small"), ("mnasnet", "mobilenetv2")])
def test_presets_contain_their_reference_model(space_name, arch_name):
    space = load_space(space_name)
    arch = ARCHITECTURES[arch_name]
    genotype = space.encode(arch)
    assert space.decode(genotype) == arch


def test_paper_space_lacks_a1_and_says_why():
    with pytest.raises(ValueError, match=r"block 5 .* filters 112 is not among the options \[72, 96, 120\]"):
        load_space("mnasnet").encode(ARCHITECTURES["mnasnet-a1"])


@pytest.mark.parametrize("name", sorted(SPACES))
def test_decode_encode_round_trip_on_thousands_of_samples(name):
    space = load_space(name)
    rng = random.Random(7)
    for _ in range(1500):
        arch = space.sample(rng)
        assert space.decode(space.encode(arch)) == arch
        assert Architecture.from_strings(arch.block_strings, stem_filters=arch.stem_filters,
                                         dropout=arch.dropout) == arch


def test_sampling_is_seeded_and_covers_every_option():
    space = load_space("mnasnet")
    assert space.sample(3) == space.sample(3)
    assert space.sample(3) != space.sample(4)
    rng = random.Random(0)
    seen = [set() for _ in space.choice_counts]
    for _ in range(300):
        for position, index in enumerate(space.sample_indices(rng)):
            seen[position].add(index)
    assert [len(s) for s in seen] == space.choice_counts


def test_decode_rejects_wrong_genotypes():
    space = load_space("mnasnet")
    with pytest.raises(ValueError, match="genotype contains 3 choices but the space 'mnasnet' has 42"):
        space.decode([0, 1, 2])
    genotype = [0] * 42
    genotype[7] = 2
    with pytest.raises(ValueError, match=r"choice 7 \(block 2 kernel\) is 2 but has only 2 options"):
        space.decode(genotype)
    genotype[7] = -1
    with pytest.raises(ValueError, match="choice 7"):
        space.decode(genotype)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-2, max_value=5), min_size=40, max_size=44))
def test_decode_either_builds_a_member_or_raises(genotype):
    record_reliability("fuzz", target="space decoder", examples=1)
    space = load_space("mnasnet")
    try:
        arch = space.decode(genotype)
    except ValueError:
        assert len(genotype) != 42 or any(not 0 <= g < n for g, n in zip(genotype, space.choice_counts))
        return
    assert space.contains(arch)


def test_user_defined_space_from_a_dict_with_fixed_choices():
    space = SearchSpace({
        "name": "tiny", "stem": 16, "resolution": 96,
        "choices": {"op": ["dsconv", "mbconv6"], "kernel": [3], "se": [0.0], "skip": ["identity"],
                    "filter_multiplier": [1.0], "layer_offset": [0, 1]},
        "blocks": [{"filters": 16, "layers": 1, "stride": 1, "op": ["dsconv"]},
                   {"filters": 24, "layers": 2, "stride": 2, "kernel": [3, 5, 7]}],
    })
    # fixed choices are not decisions: block 1 chooses its layers; block 2 op, kernel and layers
    assert space.choice_counts == [2, 2, 3, 2]
    arch = space.decode([1, 1, 2, 0])
    assert arch.block_strings == ("r2_k3_s11_e1_i16_o16", "r2_k7_s22_e6_i16_o24")
    assert arch.resolution == 96


@pytest.mark.parametrize("spec, message", [
    ({"blocks": []}, "'blocks' must be a non-empty list"),
    ({"blocks": [{"filters": 16, "layers": 1}]}, "needs 'stride'"),
    ({"blocks": [{"filters": 16, "layers": 1, "stride": 1, "kernel": [4]}]}, "bad option 4"),
    ({"blocks": [{"filters": 16, "layers": 1, "stride": 1, "op": ["mbconv3", "sepconv"]}]}, "bad option 'sepconv'"),
    ({"blocks": [{"filters": 16, "layers": 1, "stride": 1, "skip": []}]}, "non-empty list"),
    ({"blocks": [{"filters": 16, "layers": 1, "stride": 1, "width": [1]}]}, "unknown key"),
    ({"colour": 1, "blocks": [{"filters": 16, "layers": 1, "stride": 1}]}, "unknown key"),
    ({"choices": {"depth": [1]}, "blocks": [{"filters": 16, "layers": 1, "stride": 1}]}, "unknown decision"),
])
def test_bad_space_definitions_fail_when_loaded(spec, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace(spec)


def test_space_yaml_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("name: mine\nblocks:\n  - {filters: 16, layers: 1, stride: 1}\n"
                    "  - {filters: 32, layers: 2, stride: 2, op: [mbconv6]}\n")
    space = load_space(str(path))
    assert space.name == "mine" and len(space.decisions) == 6 + 5
    (tmp_path / "broken.yaml").write_text("blocks: [\n")
    with pytest.raises(ValueError, match="broken.yaml.*not valid YAML"):
        load_space(str(tmp_path / "broken.yaml"))
    with pytest.raises(ValueError, match="unknown search space 'nope'"):
        load_space("nope")


def test_pure_modules_import_without_tensorflow_or_ray():
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['ray'] = None; sys.modules['keras'] = None\n"
            "import mnas.search.arch, mnas.search.space, mnas.search.counts, mnas.search.registry\n"
            "from mnas.search.registry import load_space, ARCHITECTURES\n"
            "from mnas.search.counts import count\n"
            "print(count(ARCHITECTURES['mnasnet-a1']).params, len(load_space('mnasnet').choice_counts))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3887038", "42"]
