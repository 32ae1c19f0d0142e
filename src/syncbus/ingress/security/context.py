"""The security settings of one running node, read once from the environment and kept on the runtime.

Every setting is checked when ``syncbus run`` starts (``server.serve`` builds the context
before it listens), so a typo in an address list, a scope or a JWKS path is one line and
exit 1 -- never a node that silently lets everyone in or no one.

Per-source settings (``allow_ips``, ``auth.mtls``, ``rate_limit``) come from the source's
config and are prepared once per ``IngressSource`` object, so a reload that changes them
takes effect with the new sources.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .ipfilter import AddressList
from .jwt import JwtVerifier
from .masking import Masker
from .ratelimit import KeyedLimiter, RateBucket, parse_rate
from .scopes import parse_key_scopes
from .shared_buckets import SharedBuckets, node_buckets

ADMIN_METRIC_SOURCE = "@admin"   # the `source` label of refused admin requests (no source can be named so)


@dataclass(frozen=True)
class SourcePolicy:
    """What one http_ingress source demands beyond its API keys."""

    name: str
    allow: AddressList | None
    mtls: bool
    api_keys: tuple[str, ...] | None    # None: no auth block (an open source); () with mtls: the cert is enough
    rate: RateBucket | None


class SecurityContext:
    """Admin keys with scopes, JWT, address lists, masking and rate limits of one node."""

    def __init__(self, admin_keys: Mapping[str, str], env: Mapping[str, str]) -> None:
        self.admin_keys = dict(admin_keys)
        self.key_scopes = parse_key_scopes(env.get("SYNCBUS_KEY_SCOPES", ""), self.admin_keys)
        self.jwt = JwtVerifier.from_env(env)
        self.admin_allow = AddressList.from_text(env.get("SYNCBUS_ADMIN_ALLOW_IPS", ""), "SYNCBUS_ADMIN_ALLOW_IPS")
        self.trusted_proxies = AddressList.from_text(env.get("SYNCBUS_TRUSTED_PROXIES", ""),
                                                     "SYNCBUS_TRUSTED_PROXIES")
        self.masker = Masker.from_text(env.get("SYNCBUS_MASK_FIELDS", ""))
        admin_rate = (env.get("SYNCBUS_ADMIN_RATE_LIMIT") or "").strip()
        self.shared_buckets: SharedBuckets | None = node_buckets(env)  # with workers: the node's buckets
        self.admin_rate = (KeyedLimiter(parse_rate(admin_rate), shared=self.shared_buckets, prefix="admin:")
                           if admin_rate else None)
        self._sources: weakref.WeakKeyDictionary[Any, SourcePolicy] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @property
    def admin_enabled(self) -> bool:
        return bool(self.admin_keys) or self.jwt is not None

    def source_policy(self, src: Any, config: Any) -> SourcePolicy:
        """The policy of an ``IngressSource`` (prepared once per object: its config never changes)."""
        with self._lock:
            policy = self._sources.get(src)
            if policy is None:
                policy = self._sources[src] = _policy(src, config, self.shared_buckets)
            return policy


def _policy(src: Any, cfg: Any, shared: SharedBuckets | None) -> SourcePolicy:
    allow_ips = getattr(cfg, "allow_ips", None)
    auth = getattr(cfg, "auth", None)
    rate = getattr(cfg, "rate_limit", None)
    return SourcePolicy(
        name=src.name,
        allow=AddressList.parse(allow_ips, f"source {src.name}: allow_ips") if allow_ips is not None else None,
        mtls=bool(getattr(auth, "mtls", False)),
        api_keys=tuple(src.api_keys) if src.api_keys is not None else None,
        rate=RateBucket(parse_rate(rate), shared=shared, key=f"source:{src.name}") if rate else None,
    )


def build_context(runtime: Any, env: Mapping[str, str] | None = None) -> SecurityContext:
    """A fresh context for ``runtime`` from ``env`` (default: the process environment), installed on it."""
    ctx = SecurityContext(getattr(runtime, "admin_keys", {}) or {}, os.environ if env is None else env)
    runtime.security = ctx
    return ctx


def security_for(runtime: Any) -> SecurityContext:
    """The runtime's context, built from the environment on first use (tests may install their own)."""
    ctx = getattr(runtime, "security", None)
    if not isinstance(ctx, SecurityContext):
        ctx = build_context(runtime)
    return ctx
