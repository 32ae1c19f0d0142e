"""The HTTP ingress source: `POST /ingress/{name}` publishes the body to the source's topic.

The request handling lives in ``syncbus.ingress`` (the HTTP app drives push
sources); this module is the type's spec, so that it is declared, validated
and documented like every other source.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..ingress.security.ipfilter import check_network  # issue 12
from ..ingress.security.ratelimit import check_rate  # issue 12
from ..units import Size
from .base import PushSource, SourceConfig


class IngressAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: list[str] = Field(
        default_factory=list, json_schema_extra={"secret": True},
        description="Accepted keys, from the environment only: `api_keys_env: VAR` (comma-separated).",
    )
    mtls: bool = Field(False, description="Only connections with a verified TLS client certificate "
                                          "(`syncbus run --tls-client-ca`); with api_keys, both are needed.")


class HttpIngressConfig(SourceConfig):
    type: Literal["http_ingress"] = "http_ingress"
    auth: IngressAuth | None = Field(None, description="API keys; without it the source is open.")
    max_body: Size = Field(1024 * 1024, description="Largest accepted body (413 above), e.g. 1MiB.")
    max_depth: int = Field(64, ge=1, le=1000, description="Deepest JSON/XML nesting accepted (422 above).")
    key: str | None = Field(None, description="Dotted path of the record key in the body (ordering).")
    allow_ips: list[Annotated[str, AfterValidator(check_network)]] | None = Field(
        None, min_length=1, description="Client addresses or CIDR networks allowed, e.g. [10.0.0.0/8, 127.0.0.1]; "
                                        "others get 403 (behind a proxy: SYNCBUS_TRUSTED_PROXIES).")
    rate_limit: Annotated[str, AfterValidator(check_rate)] | None = Field(
        None, description="At most this many requests for the source, e.g. 100/s or 600/m (429 with Retry-After).")


class HttpIngressSource(PushSource):
    """Accept records pushed by the source system: `POST /ingress/{name}`, JSON or XML.

    Each accepted request is one record on `topic`, answered with 202 and the
    record id once it is durably on the bus. Clients authenticate with
    `X-API-Key: KEY` or `Authorization: Bearer KEY`; a repeated
    `Idempotency-Key` gets the first answer and is not published again.
    Bodies over `max_body` get 413, nesting deeper than `max_depth` 422.
    """

    Config: ClassVar[type[SourceConfig]] = HttpIngressConfig
    examples: ClassVar[list[dict[str, Any]]] = [
        {"name": "crm-orders", "type": "http_ingress", "topic": "crm.orders", "key": "order_id",
         "auth": {"api_keys_env": "SYNCBUS_CRM_KEYS"}},
        {"name": "shop-orders", "type": "http_ingress", "topic": "shop.orders", "max_body": "4MiB"},
    ]
