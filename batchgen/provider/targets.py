"""Which API batchgen talks to, and the key it uses there.

A leaf module (it depends only on ``errors``), so the manifest can name providers too.

The key is read from the environment and kept inside an ``ApiKey`` whose str/repr never show
it; only the client's Authorization header to the API host ever sees the raw value.

Which host that is, is bound here (docs/security.md): a manifest may be someone else's, so a
``base_url`` from a manifest alone may name only a provider's own host or one the user listed
in ``BATCHGEN_TRUSTED_HOSTS``; any other host must come from the command line (``--base-url``).
Plain http goes only to loopback, and a URL with a user name or password in it is refused
before it can be stored or printed.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from batchgen.errors import UsageError
from batchgen.job import IDENTIFIER
from batchgen.safetext import clean_text, redact_url

__all__ = ["PROVIDERS", "TRUSTED_HOSTS_ENV", "ApiKey", "ApiTarget", "ProviderSpec", "is_loopback",
           "resolve_target"]

#: hosts (``host`` or ``host:port``, comma-separated) a manifest's ``base_url`` may name
TRUSTED_HOSTS_ENV = "BATCHGEN_TRUSTED_HOSTS"


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
        """Return ``text`` with every occurrence of the key masked and control characters
        (terminal escapes) removed: what a provider says is stored and printed only so."""
        return clean_text(text.replace(self._value, "***") if self._value else text)

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


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _provider_hosts() -> set[str]:
    return {urlsplit(p.base_url).hostname or "" for p in PROVIDERS.values()}


def _trusted(parts, environ) -> bool:
    """A host the user listed in BATCHGEN_TRUSTED_HOSTS (``host`` any port, ``host:port``)."""
    env = os.environ if environ is None else environ
    listed = {h.strip().lower() for h in (env.get(TRUSTED_HOSTS_ENV) or "").split(",") if h.strip()}
    host = (parts.hostname or "").lower()
    netloc = parts.netloc.lower()
    return host in listed or netloc in listed


def resolve_target(provider: str = "jiekou", base_url: str | None = None,
                   key_env: str | None = None, origin: str | None = None, *,
                   manifest_url: str | None = None, manifest_origin: str | None = None,
                   environ: Mapping[str, str] | None = None, network: bool = True) -> ApiTarget:
    """Combine the provider's defaults with the command line's or the manifest's overrides.

    ``base_url`` is one the user gave (the command line, a Python caller); ``origin`` says where
    (default "base_url"). ``manifest_url`` is a manifest's, used when ``base_url`` is None: the
    key may go there only when it is a provider's own host or listed in BATCHGEN_TRUSTED_HOSTS
    (of ``environ``, default os.environ). Plain http is refused but to loopback, unless
    ``network`` is False (an in-process transport: nothing goes on the wire).
    """
    try:
        known = PROVIDERS[provider]
    except KeyError:
        names = ", ".join(sorted(PROVIDERS))
        raise UsageError(f"unknown provider {provider!r}; known providers: {names}") from None
    from_manifest = not base_url and bool(manifest_url)
    given = base_url or manifest_url
    url = (given or known.base_url).rstrip("/")
    parts = urlsplit(url)
    shown = redact_url(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"base URL {shown!r} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"base URL {shown!r} carries a user name or password: batchgen would "
                         f"store and print it. Give the host alone; the key goes in the "
                         f"environment variable {key_env or known.key_env}")
    if from_manifest and (parts.hostname or "").lower() not in _provider_hosts() \
            and not _trusted(parts, environ):
        raise UsageError(
            f"{manifest_origin or 'the manifest'} sends the API key to {parts.netloc}, which is "
            f"not a provider's own host. A manifest alone cannot choose where the key goes: if "
            f"you trust that host, give it on the command line (--base-url {shown}) or list it "
            f"in {TRUSTED_HOSTS_ENV}")
    if parts.scheme == "http" and network and not is_loopback(parts.hostname or ""):
        raise UsageError(f"base URL {shown!r} is plain http to another machine: the API key would "
                         f"cross the network unencrypted. Use https:// (plain http is for "
                         f"loopback only: 127.0.0.1, localhost)")
    env_name = key_env or known.key_env
    if not IDENTIFIER.fullmatch(env_name):
        raise UsageError("api_key_env must name an environment variable, not hold the key")
    if base_url:
        where = origin or "base_url"
    elif from_manifest:
        where = manifest_origin or "base_url"
    else:
        where = f"the {provider} default"
    return ApiTarget(provider=provider, base_url=url, key_env=env_name, origin=where)
