"""The Ray Tune adapter: a trial's config dict -> echotune engine `fit` -> `tune.report(metrics, checkpoint)`."""

from echotune.trainables.trial import train_trial

__all__ = ["train_trial"]
