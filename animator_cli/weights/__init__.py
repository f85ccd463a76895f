"""The weights home: where model files live, whether they are usable, and how to get them."""

from animator_cli.weights.home import Component, ComponentStatus, WeightsHome, default_home

__all__ = ["Component", "ComponentStatus", "WeightsHome", "default_home"]
