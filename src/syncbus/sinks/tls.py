"""TLS of syncbus's own HTTP clients (the http sink, the http_poll source): one set of options, one context.

A private CA (``ca_file``) and mutual TLS (``client_cert``/``client_key``)
are what ERP and HR systems on a company network ask for; both client kinds
take them the same way.
"""

from __future__ import annotations

import ssl

import httpx
from pydantic import BaseModel, ConfigDict, Field


class ClientTls(BaseModel):
    """Options mixed into a client's config model."""

    model_config = ConfigDict(extra="forbid")

    verify_tls: bool = Field(True, description="Verify the server's TLS certificate.")
    ca_file: str | None = Field(None, description="CA bundle (PEM file) to verify the server with, instead of the "
                                                  "system's CAs: for servers with a certificate from a private CA.")
    client_cert: str | None = Field(None, description="Client certificate (PEM file) for servers that require "
                                                      "mutual TLS; the chain may follow it in the file.")
    client_key: str | None = Field(None, description="The client certificate's private key (PEM file); "
                                                     "default: inside client_cert.")


def tls_context(cfg: ClientTls) -> ssl.SSLContext | bool:
    """How the client verifies the server (``ca_file``) and proves itself (``client_cert``); False: no checks."""
    if not cfg.verify_tls and not cfg.client_cert:
        return False
    ctx = ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else httpx.create_ssl_context()
    if not cfg.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.client_cert:
        ctx.load_cert_chain(cfg.client_cert, cfg.client_key)
    return ctx
