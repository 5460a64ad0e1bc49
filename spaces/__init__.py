"""EchoTune search spaces: define-by-run functions for Ray Tune's OptunaSearch, per profile.

    python -c "import spaces; print(spaces.list_spaces())"
    python -c "import spaces; print(spaces.describe_space('gradnorm', 'quick'))"

    space = spaces.get_space("gradnorm")
    OptunaSearch(space=functools.partial(space.define, profile="quick"),   # or a module-level wrapper
                 points_to_evaluate=[space.baseline("quick")], metric="val/score", mode="max")
    # trainable: TrainConfig.from_dict(spaces.to_train_config(config))

Spaces: gradnorm (shared + GradNorm), dual_backbone (detector + timm classifier), all (arch is a parameter),
baseline (nothing searched). Profiles: quick (laptop CPU), full (GPU).
"""

from __future__ import annotations

from echotune.spaces import all as _all  # noqa: F401  (registers the spaces)
from echotune.spaces import baseline as _baseline  # noqa: F401
from echotune.spaces import dual_backbone as _dual_backbone  # noqa: F401
from echotune.spaces import gradnorm as _gradnorm  # noqa: F401
from echotune.spaces.common import SEARCH_ONLY_PARAMS, to_train_config
from echotune.spaces.original import original_config
from echotune.spaces.profiles import PROFILES, Profile, get_profile
from echotune.spaces.registry import (
    SearchSpace,
    describe_space,
    get_space,
    list_spaces,
    parameter_ranges,
    parameter_table,
    register_space,
)

__all__ = [
    "PROFILES",
    "SEARCH_ONLY_PARAMS",
    "Profile",
    "SearchSpace",
    "describe_space",
    "get_profile",
    "get_space",
    "list_spaces",
    "original_config",
    "parameter_ranges",
    "parameter_table",
    "register_space",
    "to_train_config",
]
