"""The strict base of every configuration model: unknown keys are errors (a misspelt
setting must not be silently ignored) and a loaded configuration never changes."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveKw = Annotated[float, Field(gt=0)]
Pct = Annotated[float, Field(ge=0, le=100)]
