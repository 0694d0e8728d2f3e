"""The method table: the temporal blocks tdnzoo puts into a 2D backbone, and the methods made of them.

A *block* is one kind of temporal module: where it goes (a position kind), in which stages, and how
it is made. A *method* is a preset: the blocks it switches on. TSN, TSM and TDN are three entries of
:data:`METHOD_TABLE`; :func:`register_method` adds more. :func:`tdnzoo.temporalize` builds any method
by reading the table, and any composition of a preset with blocks switched on or off, by keyword
(``create_model("tsn_resnet50", short_term=True)``) or in the name (``"tsn+stdm_resnet50"``,
``"tdn-ltdm_resnet50"``: the spellings of :data:`COMPOSITION_KEYWORDS`).

Position kinds (how each is found in a backbone: :mod:`tdnzoo.models.placement`):

- ``block_input``: before the first op of a residual block's branch (TSM's shift; ResNet's ``conv1``);
- ``position_mixing``: before the block's first op that mixes positions (L-TDM and the temporal conv;
  ResNet's ``conv2``, a depthwise conv, attention), on the whole map it receives;
- ``after_stem``: after the stem and after the first stage (where S-TDM's maps are fused; a layer
  of this kind runs on the outputs of those two ops).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from ..layers import LongTermTDM, TemporalConv, TemporalShift

__all__ = [
    "AFTER_STEM",
    "BLOCK_INPUT",
    "BLOCK_TABLE",
    "COMPOSITION_KEYWORDS",
    "METHODS",
    "METHOD_TABLE",
    "POSITION_KINDS",
    "POSITION_MIXING",
    "BuildOptions",
    "MethodPreset",
    "TemporalBlock",
    "blocks_of",
    "composition_name",
    "insertion_units",
    "is_method",
    "parse_method",
    "recorded_options",
    "register_composition_keyword",
    "register_method",
    "resolve_blocks",
    "unregister_method",
]

BLOCK_INPUT = "block_input"
POSITION_MIXING = "position_mixing"
AFTER_STEM = "after_stem"
POSITION_KINDS = (BLOCK_INPUT, POSITION_MIXING, AFTER_STEM)


@dataclass(frozen=True)
class BuildOptions:
    """What a block factory is given besides the channels: the clip layout and the method options.

    Options for new block settings are added here, so that every factory receives them. ``causal``
    asks for the layer that reads past segments only (the streaming variant, :mod:`.causal`); a
    registered block that cannot honour it should raise.
    """

    num_segments: int
    frames_per_segment: int = 1
    shift_div: int = 8
    shift_stages: tuple[int, ...] = (2, 3, 4, 5)
    shift_every: int | None = None
    long_term_stages: tuple[int, ...] = (3, 4, 5)
    long_term_reduction: int = 16
    causal: bool = False


LayerFactory = Callable[[int, BuildOptions], nn.Module]
"""``make(channels, options)``: a temporal layer on per-frame maps ``[B*T, channels, H, W]``."""


@dataclass(frozen=True)
class TemporalBlock:
    """One kind of temporal module and where it goes.

    Attributes:
        keyword: its ``create_model`` / ``temporalize`` switch (``'shift'``, ``'long_term'``).
        position: a position kind (:data:`POSITION_KINDS`).
        make: the layer factory; ``None`` for S-TDM, a stream of its own built from the backbone's stem.
        label: how messages name it (``'L-TDM'``).
        stages: the paper stages it goes into (stage ``k`` outputs at reduction ``2**k``) ...
        stages_option: ... or the :class:`BuildOptions` field giving them (``'long_term_stages'``).
        every_option: a :class:`BuildOptions` field ``n``: only every n-th block of a stage (TSM's ``shift_every``).
        stack: blocks with a ``stack`` name that meet at one position share one
            :class:`~tdnzoo.layers.LongTermStack`, under that name (TDN's ``ltdm`` then ``tconv``);
            ``None``: a wrapper of its own.
        recorded: :class:`BuildOptions` fields (and ``temporalize`` keywords) it uses, kept in ``model_args``.
        frames_per_segment: frames per segment it needs (S-TDM: 5).
        min_segments: segments per clip it needs.
        min_map: the smallest map side it takes at its stages (L-TDM pools 2x2: 2).
    """

    keyword: str
    position: str
    make: LayerFactory | None = None
    label: str = ""
    stages: tuple[int, ...] = (2, 3, 4, 5)
    stages_option: str | None = None
    every_option: str | None = None
    stack: str | None = None
    recorded: tuple[str, ...] = ()
    frames_per_segment: int = 1
    min_segments: int = 1
    min_map: int = 1

    def __post_init__(self) -> None:
        if self.position not in POSITION_KINDS:
            raise ValueError(f"unknown position kind '{self.position}': expected one of {', '.join(POSITION_KINDS)}")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.keyword):
            raise ValueError(f"a block keyword is a lower-case identifier, got '{self.keyword}'")

    def stages_in(self, options: BuildOptions) -> tuple[int, ...]:
        return tuple(getattr(options, self.stages_option)) if self.stages_option else tuple(self.stages)

    def name(self) -> str:
        return self.label or self.keyword


@dataclass(frozen=True)
class MethodPreset:
    """A method: the blocks it switches on (keywords of :data:`BLOCK_TABLE`, or new blocks), and a line about it."""

    blocks: tuple[str | TemporalBlock, ...] = ()
    description: str = ""

    def keywords(self) -> tuple[str, ...]:
        return tuple(b.keyword if isinstance(b, TemporalBlock) else b for b in self.blocks)


def _shift(channels: int, options: BuildOptions) -> nn.Module:
    return TemporalShift(options.num_segments, options.shift_div, causal=options.causal)


def _long_term(channels: int, options: BuildOptions) -> nn.Module:
    return LongTermTDM(channels, options.num_segments, options.long_term_reduction, causal=options.causal)


def _temporal_conv(channels: int, options: BuildOptions) -> nn.Module:
    return TemporalConv(channels, options.num_segments, options.shift_div, causal=options.causal)


# The blocks, in the order they are inserted (at one op, the first inserted runs first).
BLOCK_TABLE: dict[str, TemporalBlock] = {
    b.keyword: b
    for b in (
        TemporalBlock("shift", BLOCK_INPUT, _shift, "a shift", stages_option="shift_stages",
                      every_option="shift_every", recorded=("shift_div", "shift_stages", "shift_every")),
        TemporalBlock("short_term", AFTER_STEM, None, "S-TDM", recorded=("frames_per_segment", "fusion_weights"),
                      frames_per_segment=5),
        TemporalBlock("long_term", POSITION_MIXING, _long_term, "L-TDM", stages_option="long_term_stages",
                      stack="ltdm", recorded=("long_term_stages", "long_term_reduction"), min_segments=2, min_map=2),
        TemporalBlock("temporal_conv", POSITION_MIXING, _temporal_conv, "the temporal conv",
                      stages_option="long_term_stages", stack="tconv", recorded=("shift_div", "long_term_stages")),
    )
}

METHOD_TABLE: dict[str, MethodPreset] = {
    "tsn": MethodPreset((), "TSN: the backbone on each segment, logits averaged"),
    "tsm": MethodPreset(("shift",), "TSM: a temporal shift before each residual block"),
    "tdn": MethodPreset(("short_term", "long_term", "temporal_conv"),
                        "TDN: S-TDM after the stem and first stage; L-TDM and a temporal conv in stages 3-5"),
}

# Spellings of a composition in a method name: ``PRESET+SPELLING`` switches the keyword on, ``-SPELLING`` off.
# ``+causal`` is not a block but a build option of every block (:attr:`BuildOptions.causal`).
COMPOSITION_KEYWORDS: dict[str, str] = {"shift": "shift", "stdm": "short_term", "ltdm": "long_term",
                                        "tconv": "temporal_conv", "causal": "causal"}

_NAME = re.compile(r"[a-z][a-z0-9]*")


class _MethodNames(Sequence):
    """The registered method names, read live from :data:`METHOD_TABLE` (``tsn``, ``tsm``, ``tdn``, then registered ones)."""

    def __getitem__(self, index):  # type: ignore[override]
        return tuple(METHOD_TABLE)[index]

    def __len__(self) -> int:
        return len(METHOD_TABLE)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(METHOD_TABLE))

    def __contains__(self, name: object) -> bool:
        return name in METHOD_TABLE

    def __repr__(self) -> str:
        return repr(tuple(METHOD_TABLE))


METHODS: Sequence[str] = _MethodNames()


def register_composition_keyword(spelling: str, keyword: str) -> None:
    """Let ``PRESET+spelling`` / ``PRESET-spelling`` in a method name set ``keyword=True`` / ``False``."""
    if not _NAME.fullmatch(spelling):
        raise ValueError(f"a composition spelling is lower-case letters and digits, got '{spelling}'")
    COMPOSITION_KEYWORDS[spelling] = keyword


def register_method(name: str, preset: MethodPreset) -> MethodPreset:
    """Add a method: ``create_model("<name>_<backbone>")`` then builds it, ``list_models`` lists it.

    The preset's blocks are keywords of :data:`BLOCK_TABLE` or new :class:`TemporalBlock` s, which are
    added to the table (their keyword then switches them on any method, as ``blocks={keyword: True}``).

    Example:
        >>> register_method("tme", MethodPreset((TemporalBlock("tme", POSITION_MIXING, lambda c, o: MyLayer(c, o.num_segments)),)))
        >>> create_model("tme_resnet50", num_segments=8)

    Raises:
        ValueError: a name that is taken or not a lower-case word, a block keyword that is taken, an
            unknown block keyword, a new block without a layer factory.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"a method name is lower-case letters and digits (it prefixes '_<backbone>'), got '{name}'")
    if name in METHOD_TABLE:
        raise ValueError(f"method '{name}' is already registered")
    new = [b for b in preset.blocks if isinstance(b, TemporalBlock)]
    for block in new:
        if block.keyword in BLOCK_TABLE and BLOCK_TABLE[block.keyword] is not block:
            raise ValueError(f"block keyword '{block.keyword}' is taken by {BLOCK_TABLE[block.keyword].name()}")
        if block.make is None:
            raise ValueError(f"block '{block.keyword}' needs a layer factory make(channels, options)")
        if block.position == AFTER_STEM:
            raise ValueError(f"block '{block.keyword}': a layer goes at '{BLOCK_INPUT}' or '{POSITION_MIXING}' "
                             f"('{AFTER_STEM}' is where S-TDM's stream is fused)")
    unknown = [k for k in preset.blocks if isinstance(k, str) and k not in BLOCK_TABLE]
    if unknown:
        raise ValueError(f"unknown blocks {unknown}: expected keywords of {', '.join(BLOCK_TABLE)} or TemporalBlock s")
    for block in new:
        BLOCK_TABLE[block.keyword] = block
    METHOD_TABLE[name] = preset
    return preset


def unregister_method(name: str) -> None:
    """Remove a registered method (and the blocks only it brought); the three presets stay."""
    if name in ("tsn", "tsm", "tdn"):
        raise ValueError(f"'{name}' is a built-in preset")
    preset = METHOD_TABLE.pop(name)
    used = {k for p in METHOD_TABLE.values() for k in p.keywords()}
    for block in preset.blocks:
        if isinstance(block, TemporalBlock) and block.keyword not in used:
            BLOCK_TABLE.pop(block.keyword, None)


def parse_method(method: str) -> tuple[str, dict[str, bool]]:
    """``'tsn+stdm-shift'`` -> ``('tsn', {'short_term': True, 'shift': False})``.

    Raises:
        ValueError: an unknown preset or spelling, naming the known ones.
    """
    parts = re.split(r"([+-])", method.lower())
    preset = parts[0]
    if preset not in METHOD_TABLE:
        raise ValueError(f"unknown method '{method}': expected one of {', '.join(METHOD_TABLE)}, optionally with "
                         f"+BLOCK or -BLOCK ({', '.join(COMPOSITION_KEYWORDS)})")
    switches: dict[str, bool] = {}
    for sign, spelling in zip(parts[1::2], parts[2::2]):
        if spelling not in COMPOSITION_KEYWORDS:
            raise ValueError(f"unknown block '{spelling}' in method '{method}': expected one of "
                             f"{', '.join(COMPOSITION_KEYWORDS)}")
        switches[COMPOSITION_KEYWORDS[spelling]] = sign == "+"
    return preset, switches


def is_method(method: str) -> bool:
    """Whether ``method`` is a preset or a composition of one (:func:`parse_method` accepts it)."""
    try:
        parse_method(method)
    except ValueError:
        return False
    return True


def resolve_blocks(preset: str, switches: Mapping[str, bool | None]) -> dict[str, bool]:
    """Every block of the table on or off: the preset's default, then ``switches`` (``None`` keeps the default).

    Raises:
        ValueError: a switch naming no block.
    """
    unknown = [k for k in switches if k not in BLOCK_TABLE]
    if unknown:
        raise ValueError(f"unknown temporal blocks {unknown}: expected {', '.join(BLOCK_TABLE)}")
    default = set(METHOD_TABLE[preset].keywords())
    return {k: (k in default) if switches.get(k) is None else bool(switches[k]) for k in BLOCK_TABLE}


def composition_name(preset: str, blocks: Mapping[str, bool]) -> str:
    """The name of a composition: the preset, then ``+spelling`` for each block added and ``-spelling`` for each removed.

    A block without a spelling (a registered one switched by keyword) is written with its keyword.
    """
    default = set(METHOD_TABLE[preset].keywords())
    spelling = {k: s for s, k in COMPOSITION_KEYWORDS.items()}
    name = preset
    for keyword, on in blocks.items():
        if on != (keyword in default):
            name += ("+" if on else "-") + spelling.get(keyword, keyword.replace("_", ""))
    return name


def blocks_of(blocks: Mapping[str, bool]) -> list[TemporalBlock]:
    """The table's blocks switched on, in table order."""
    return [BLOCK_TABLE[k] for k, on in blocks.items() if on]


def recorded_options(blocks: Sequence[TemporalBlock]) -> list[str]:
    """The options the blocks on use, in table order, each once (what ``model_args`` keeps)."""
    return list(dict.fromkeys(o for b in blocks for o in b.recorded))


def insertion_units(blocks: Sequence[TemporalBlock], position: str) -> list[list[TemporalBlock]]:
    """The blocks at ``position`` grouped into what one wrapper holds: stacked blocks together, the others alone."""
    here = [b for b in blocks if b.position == position]
    stacked = [b for b in here if b.stack is not None]
    units: list[list[TemporalBlock]] = []
    for b in here:
        if b.stack is None:
            units.append([b])
        elif b is stacked[0]:
            units.append(stacked)
    return units
