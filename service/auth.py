"""Who is calling: bearer tokens mapped to owner names, so each client sees only its own jobs.

Tokens come from API_TOKEN (owner "default"), API_TOKENS ("alice:tok1,bob:tok2") and
API_TOKENS_FILE ("alice tok1" per line, '#' comments). With none set, auth is off and every
caller is the same anonymous owner "" (one user on one machine).
"""

from __future__ import annotations

import hmac
from pathlib import Path

from worker.runtime.settings import Settings

DEFAULT_OWNER = "default"


def load_tokens(settings: Settings) -> dict[str, str]:
    """token -> owner; raises ValueError naming a malformed entry (the API then refuses to start)."""
    pairs: list[tuple[str, str]] = []
    if settings.api_token:
        pairs.append((DEFAULT_OWNER, settings.api_token))
    for entry in (settings.api_tokens or "").split(","):
        if entry.strip():
            name, sep, token = entry.strip().partition(":")
            if not sep or not name or not token:
                raise ValueError(f"API_TOKENS entry {entry.strip()[:20]!r}... is not name:token")
            pairs.append((name, token))
    if settings.api_tokens_file:
        for number, line in enumerate(Path(settings.api_tokens_file).read_text().splitlines(), start=1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) != 2:
                raise ValueError(f"{settings.api_tokens_file}:{number}: expected 'name token'")
            pairs.append((words[0], words[1]))
    tokens: dict[str, str] = {}
    for name, token in pairs:
        if tokens.get(token, name) != name:
            raise ValueError(f"one token is given to two owners ({tokens[token]!r} and {name!r})")
        tokens[token] = name
    return tokens


def owner_of(tokens: dict[str, str], authorization: str) -> str | None:
    """The owner whose token the Authorization header carries, else None (compared in constant time)."""
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    found = None
    for token, name in tokens.items():
        if hmac.compare_digest(presented.strip().encode(), token.encode()):
            found = name
    return found
