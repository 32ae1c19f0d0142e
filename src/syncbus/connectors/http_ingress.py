"""The HTTP ingress source: ``POST /ingress/{name}`` publishes to the source's topic.

The request handling lives in ``syncbus.ingress``; this module is the
connector's spec (its options) so that it is declared like any other source.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..units import parse_size
from .base import Source, SourceConfig


class IngressAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: list[str] = Field(
        default_factory=list,
        description="Accepted keys (from the environment: api_keys_env: VAR, comma-separated).",
    )


class HttpIngressConfig(SourceConfig):
    type: Literal["http_ingress"] = "http_ingress"
    auth: IngressAuth | None = Field(None, description="API keys; without it the source is open.")
    max_body: int = Field(1024 * 1024, description="Largest accepted body (413 above), e.g. 1MiB.")
    max_depth: int = Field(64, ge=1, le=1000, description="Deepest JSON/XML nesting accepted (422 above).")
    key: str | None = Field(None, description="Dotted path of the record key in the body (ordering).")

    @field_validator("max_body", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value  # type: ignore[arg-type]


class HttpIngressSource(Source):
    Config: ClassVar[type[SourceConfig]] = HttpIngressConfig
    push: ClassVar[bool] = True
