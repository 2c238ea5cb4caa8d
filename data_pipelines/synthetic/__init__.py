"""The synthetic physics world: the project's embedded default dataset and the ground truth for evaluation.

1 to 3 rigid balls and boxes under gravity (pymunk), rendered with analytic anti-aliasing, with impact
sounds synthesised from the contact events and captions written from the ground truth. Every clip
carries its full ground truth (tracks, contacts, relations, caption facts) in a JSON-serialisable dict.

    >>> from data_pipelines.synthetic import WorldConfig, generate_clip
    >>> clip = generate_clip(WorldConfig(), seed=0)
    >>> clip.video.shape, clip.audio.shape
    ((48, 64, 64, 3), (1, 32000))

CLI: ``python -m data_pipelines.synthetic out_dir=DIR num_clips=N seed=S`` (config ``conf/synthetic.yaml``).
"""

from .captions import describe
from .config import FAMILIES, WorldConfig
from .palette import BACKGROUNDS, PALETTE
from .render import render_frames
from .shards import Clip, clip_seed, generate_clip, generate_shards, write_shards
from .sound import synthesize_audio
from .world import world_to_image

__all__ = [
    "BACKGROUNDS",
    "FAMILIES",
    "PALETTE",
    "Clip",
    "WorldConfig",
    "clip_seed",
    "describe",
    "generate_clip",
    "generate_shards",
    "render_frames",
    "synthesize_audio",
    "world_to_image",
    "write_shards",
]
