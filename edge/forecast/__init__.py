"""PV and load forecasts for the planner, learned from the site's own history.

`Forecaster` is the callable the planner is given: `forecast(start, n, step_s) -> (load_kw,
pv_kw)`. It never falls back to invented data: with no history the load forecast is the
measured load carried forward, and `source` says so (and it is logged once); with nothing
measured yet it raises `NotMeasured`.
"""

from edge.forecast.error import ForecastErrors
from edge.forecast.forecaster import Forecaster
from edge.forecast.load import NotMeasured

__all__ = ["ForecastErrors", "Forecaster", "NotMeasured"]
