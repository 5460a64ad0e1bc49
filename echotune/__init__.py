"""EchoTune: hyperparameter search for multi-task echocardiography models (jet detection + view classification).

The notebook API (echotune/api.py):

    import echotune
    result = echotune.run_search(name="nb", num_samples=4, max_epochs=3)   # -> SearchResult
    echotune.leaderboard(result.experiment)                                # -> pandas.DataFrame
    run = echotune.train(epochs=3, out="results/nb-train")                 # -> TrainResult
    echotune.predict(run.best_checkpoint, "frames/")                       # -> [Prediction, ...]

Every name is loaded on first use: the core modules import this package too (`echotune.data`, ...), and they must
not pull in the API's Ray machinery, pandas or torch with it.
"""

_API_NAMES = (
    "run_search",
    "train",
    "leaderboard",
    "predict",
    "SearchResult",
    "TrainResult",
    "Prediction",
    "SearchConfig",
    "TrainConfig",
)
__all__ = [*_API_NAMES, "__version__"]


def __getattr__(name: str):
    if name in _API_NAMES:
        from echotune import api

        value = getattr(api, name)
    elif name == "__version__":
        value = _installed_version()
    else:
        raise AttributeError(f"module 'echotune' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("echotune")
    except PackageNotFoundError:  # a source tree on sys.path, never installed
        return "0+unknown"
