"""Site configuration: pydantic models at the YAML boundary (sections here, device models
with their roles in edge/roles/), and a loader whose errors name the field and the fix.

Sign conventions (everywhere): grid +import/-export, battery +discharge/-charge, PV >= 0.
"""

from edge.config.base import (
    DeviceBase,
    SerialParams,
    SiteConfig,
    default_timeout_s,
    poll_deadline_s,
)
from edge.config.buses import bus_problems
from edge.config.errors import ConfigError, error_message, error_path, load, parse, read_yaml
from edge.config.sections import (
    ControlConfig,
    ForecastConfig,
    MqttConfig,
    PlannerConfig,
    StorageConfig,
    TariffConfig,
    TariffPeriod,
)
from edge.config.sim import SIM_SUNSPEC_MODELS, HilConfig, SimParams
from edge.config.site import Config
from edge.config.vpp import CarbonConfig, DrConfig, OpenAdrConfig, VppConfig
from edge.roles import (
    BatteryDevice,
    BmsParams,
    DcConverterDevice,
    DeviceConfig,
    FlexLoadDevice,
    MeterDevice,
    PvDevice,
)

__all__ = [
    "SIM_SUNSPEC_MODELS", "BatteryDevice", "BmsParams", "CarbonConfig", "Config", "ConfigError",
    "ControlConfig", "DcConverterDevice", "DeviceBase", "DeviceConfig", "DrConfig",
    "FlexLoadDevice", "ForecastConfig", "HilConfig", "MeterDevice", "MqttConfig",
    "OpenAdrConfig", "PlannerConfig", "PvDevice", "SerialParams", "SimParams", "SiteConfig",
    "StorageConfig", "TariffConfig", "TariffPeriod", "VppConfig", "bus_problems",
    "default_timeout_s", "error_message", "error_path", "load", "parse", "poll_deadline_s", "read_yaml",
]
