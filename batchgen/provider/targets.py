"""Which API batchgen talks to, and the key it uses there.

A leaf module (it depends only on ``errors``), so the manifest can name providers too.

The key is read from the environment and kept inside an ``ApiKey`` whose str/repr never show
it; only the client's Authorization header to the API host ever sees the raw value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from batchgen.errors import UsageError
from batchgen.job import IDENTIFIER

__all__ = ["PROVIDERS", "ApiKey", "ApiTarget", "ProviderSpec", "resolve_target"]


@dataclass(frozen=True)
class ProviderSpec:
    """A known provider: its host serving the async image API, and the variable its key usually
    lives in."""

    name: str
    base_url: str
    key_env: str


PROVIDERS: dict[str, ProviderSpec] = {
    "jiekou": ProviderSpec("jiekou", "https://api.jiekou.ai", "JIEKOU_API_KEY"),
    "novita": ProviderSpec("novita", "https://api.novita.ai", "NOVITA_API_KEY"),
}


class ApiKey:
    """A secret that refuses to be printed; ``reveal()`` is for the Authorization header only."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """Return ``text`` with every occurrence of the key masked (for provider messages)."""
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple:  # pickling would write the key somewhere
        raise TypeError("ApiKey cannot be pickled")


@dataclass(frozen=True)
class ApiTarget:
    """Where to send requests, which environment variable holds the key, and where the base
    URL came from (``origin``: said when the host cannot be reached)."""

    provider: str
    base_url: str
    key_env: str
    origin: str = ""

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def read_key(self, environ: dict[str, str] | None = None) -> ApiKey:
        """The key from the environment, or a UsageError that says how to set it."""
        env = os.environ if environ is None else environ
        raw = env.get(self.key_env)
        value = (raw or "").strip()
        if not value:
            state = "is not set" if raw is None else "is set but empty"
            raise UsageError(
                f"no API key: the environment variable {self.key_env} {state}. "
                f"Export it first (export {self.key_env}=...), name another variable with "
                f"api_key_env in the manifest, or try the simulator with --simulate."
            )
        return ApiKey(value)


def resolve_target(provider: str = "jiekou", base_url: str | None = None,
                   key_env: str | None = None, origin: str | None = None) -> ApiTarget:
    """Combine the provider's defaults with the manifest's or the command line's overrides;
    ``origin`` says where ``base_url`` was given (default: "base_url", or the provider's
    default when none was given)."""
    try:
        known = PROVIDERS[provider]
    except KeyError:
        names = ", ".join(sorted(PROVIDERS))
        raise UsageError(f"unknown provider {provider!r}; known providers: {names}") from None
    url = (base_url or known.base_url).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"base URL {url!r} is not an http(s) URL")
    env_name = key_env or known.key_env
    if not IDENTIFIER.fullmatch(env_name):
        raise UsageError("api_key_env must name an environment variable, not hold the key")
    if base_url:
        where = origin or "base_url"
    else:
        where = f"the {provider} default"
    return ApiTarget(provider=provider, base_url=url, key_env=env_name, origin=where)
