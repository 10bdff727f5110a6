"""Site configuration: pydantic models at the YAML boundary (sections here, device models
with their roles in edge/roles/), and a loader whose errors name the field and the fix.

Sign conventions (everywhere): grid +import/-export, battery +discharge/-charge, PV >= 0.
"""

import importlib

from edge.config.base import (
    DeviceBase,
    SerialParams,
    SiteConfig,
    default_timeout_s,
    poll_deadline_s,
)
from edge.config.buses import bus_problems
from edge.config.sections import (
    ApiConfig,
    ControlConfig,
    ForecastConfig,
    MqttConfig,
    PlannerConfig,
    StorageConfig,
    TariffConfig,
    TariffPeriod,
)
from edge.config.vpp import CarbonConfig, DrConfig, OpenAdrConfig, VppConfig

# The root model and the device models come from the role registry, and the roles build on
# the base models here: they are loaded on first use so that either side may be imported first.
_LAZY = {
    "Config": "edge.config.site", "ConfigError": "edge.config.errors",
    "HINTS": "edge.config.errors", "config_problems": "edge.config.errors",
    "load": "edge.config.errors", "parse": "edge.config.errors", "BatteryDevice": "edge.roles",
    "BmsParams": "edge.roles", "DcConverterDevice": "edge.roles", "DeviceConfig": "edge.roles",
    "FlexLoadDevice": "edge.roles", "MeterDevice": "edge.roles", "PvDevice": "edge.roles",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge.config' has no attribute {name!r}")


__all__ = [
    "HINTS", "ApiConfig", "BatteryDevice", "BmsParams", "CarbonConfig", "Config", "ConfigError",
    "ControlConfig", "DcConverterDevice", "DeviceBase", "DeviceConfig", "DrConfig",
    "FlexLoadDevice", "ForecastConfig", "MeterDevice", "MqttConfig", "OpenAdrConfig",
    "PlannerConfig", "PvDevice", "SerialParams", "SiteConfig", "StorageConfig", "TariffConfig",
    "TariffPeriod", "VppConfig", "bus_problems", "config_problems", "default_timeout_s", "load",
    "parse", "poll_deadline_s",
]
